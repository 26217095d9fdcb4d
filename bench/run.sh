#!/usr/bin/env bash
# Throughput and latency of the service against the machine's ceiling, measured side by side
# in one run, written to BENCHMARKS.md. Usage: bench/run.sh   (DURATION=10 CONNECTIONS=64)
#
# Starts, on this machine: a bare hyper server (5-byte body, the ceiling), a bare hyper reverse
# proxy in front of it (the yardstick for the relay), and `relay serve` (release build, SQLite)
# with the bare server as its upstream, plus a second relay process with the verification
# cache disabled for cold-key numbers. Load comes from wrk (installed from Debian if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-64}"
ADMIN="bench-admin-token-0123456789abcdef0123456789"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin relay --example bare_server --example bare_proxy

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

target/release/examples/bare_server 127.0.0.1:9101 & pids+=($!)
target/release/examples/bare_proxy 127.0.0.1:9102 http://127.0.0.1:9101 & pids+=($!)
export DATABASE_URL="sqlite://$work/relay.db" RELAY_ADMIN_TOKEN="$ADMIN" RUST_LOG=warn
RELAY_LISTEN=127.0.0.1:9100 RELAY_UPSTREAM=http://127.0.0.1:9101 target/release/relay serve & pids+=($!)
sleep 1
RELAY_LISTEN=127.0.0.1:9103 RELAY_CACHE_TTL=0 target/release/relay serve & pids+=($!)
sleep 1

new_key() {
  curl -sf localhost:9100/admin/clients -H "Authorization: Bearer $ADMIN" \
    -H 'Content-Type: application/json' -d "{\"name\":\"$1\",\"rate_limit\":1000000}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])'
}
script() {  # name method body [header...]
  local name=$1 method=$2 body=$3; shift 3
  {
    echo "wrk.method = \"$method\""
    [ -n "$body" ] && echo "wrk.body = '$body'"
    for h in "$@"; do echo "wrk.headers[\"${h%%:*}\"] = \"${h#*: }\""; done
  } > "$work/$name.lua"
}

warm=$(new_key warm); cold=$(new_key cold); tok=$(new_key token); relay_key=$(new_key relay)
bad="${warm:0:50}$([ "${warm:50:1}" = A ] && echo B || echo A)"
token=$(curl -sf localhost:9100/v1/token -H "X-API-Key: $(new_key relay-token)" -d grant_type=client_credentials \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
json='Content-Type: application/json'
script verify_warm POST "{\"key\":\"$warm\"}" "$json" "Authorization: Bearer $ADMIN"
script verify_cold POST "{\"key\":\"$cold\"}" "$json" "Authorization: Bearer $ADMIN"
script verify_bad POST "{\"key\":\"$bad\"}" "$json" "Authorization: Bearer $ADMIN"
script token POST "grant_type=client_credentials" "Content-Type: application/x-www-form-urlencoded" "X-API-Key: $tok"
script relay_key GET "" "X-API-Key: $relay_key"
script relay_token GET "" "Authorization: Bearer $token"
script plain GET ""

rows=()
measure() {  # label url script
  local out rps p50 p99
  out=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$work/$3.lua" "$2")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $4}' <<<"$out")
  rows+=("$1|$rps|$p50|$p99|${non2xx:-0}")
  echo "$1: $rps req/s, p50 $p50, p99 $p99, non-2xx ${non2xx:-0}" >&2
}
measure "bare hyper server (ceiling)" http://127.0.0.1:9101/ plain
measure "POST /v1/keys/verify, warm key" http://127.0.0.1:9100/v1/keys/verify verify_warm
measure "POST /v1/keys/verify, cold key (cache off)" http://127.0.0.1:9103/v1/keys/verify verify_cold
measure "POST /v1/keys/verify, bad checksum" http://127.0.0.1:9100/v1/keys/verify verify_bad
measure "POST /v1/token" http://127.0.0.1:9100/v1/token token
measure "upstream direct (GET)" http://127.0.0.1:9101/v1/chat/x plain
measure "bare hyper reverse proxy (GET)" http://127.0.0.1:9102/v1/chat/x plain
measure "relay GET, API key" http://127.0.0.1:9100/v1/chat/x relay_key
measure "relay GET, access token" http://127.0.0.1:9100/v1/chat/x relay_token

ceiling=$(cut -d'|' -f2 <<<"${rows[0]}")
proxy=$(cut -d'|' -f2 <<<"${rows[6]}")
{
  echo "# Benchmarks"
  echo
  echo "Measured $(date -u +%Y-%m-%d) with \`bench/run.sh\` (wrk -t2 -c$CONNECTIONS -d${DURATION}s, every row in"
  echo "one run, SQLite). Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)."
  echo "The load generator shares the machine and takes about one core."
  echo
  echo "| what | requests/s | p50 | p99 | non-2xx | of ceiling | of bare proxy |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for r in "${rows[@]}"; do
    IFS='|' read -r label rps p50 p99 non <<<"$r"
    of_ceiling=$(python3 -c "print(f'{$rps/$ceiling:.0%}')")
    of_proxy=$(case "$label" in relay*) python3 -c "print(f'{$rps/$proxy:.0%}')";; *) echo "";; esac)
    echo "| $label | $rps | $p50 | $p99 | $non | $of_ceiling | $of_proxy |"
  done
} > BENCHMARKS.md
cat BENCHMARKS.md
