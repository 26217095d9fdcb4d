#!/usr/bin/env bash
# The soak: legitimate and hostile traffic at once for MINUTES against `relay serve` on SQLite
# and on PostgreSQL + Redis (both at the same time, from one machine), sampling every SAMPLE
# seconds each server's RSS and open descriptors, the legitimate traffic's p50/p99 and every
# 5xx. Prints a Markdown table and writes a plot of memory and p99 over time to PLOT
# (target/soak/soak.svg; RELIABILITY.md's is made with PLOT=bench/soak.svg).
#
#   bench/soak.sh [MINUTES]         MINUTES=30, SAMPLE=30 (seconds), CONNECTIONS=8 (per server)
#
# The load is held at a steady rate inside what the machine serves (a pause of LEGIT_PAUSE_MS=2
# and HOSTILE_PAUSE_MS=1 before each request on each connection: about 3 000 legitimate and
# 3 000 hostile requests a second per server here); LEGIT_PAUSE_MS=0 HOSTILE_PAUSE_MS=0 turns
# it into a saturation run, where the database and Redis, starved of CPU by the load
# generators, answer late (503s for the database, per-node rate limits for Redis).
#
# Legitimate (bench/soak/legit.lua): verify, relayed GETs with a key and with a token, token
# exchanges, an admin list. Hostile (bench/soak/hostile.lua): random and malformed keys,
# forged tokens, a new X-Forwarded-For address from a trusted proxy on every request (the
# failed-authentication windows fill up to their bound), oversized and malformed bodies, dot
# segments; slow clients (bench/soak/slow_clients.py) dripping request heads. Exits 1 when a
# server dies, and (unless SOAK_STRICT=0) when it answers a 5xx or refuses a legitimate request;
# then it prints each failed answer with its count, and what the servers logged meanwhile.
# Each server's log and final /metrics are kept in target/soak/.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${1:-30}"
SAMPLE="${SAMPLE:-30}"
CONNECTIONS="${CONNECTIONS:-8}"
LEGIT_PAUSE_MS="${LEGIT_PAUSE_MS:-2}"
HOSTILE_PAUSE_MS="${HOSTILE_PAUSE_MS:-1}"
PG_SERVER="${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
REDIS="${BENCH_REDIS:-redis://127.0.0.1:6379}"
export RELAY_ADMIN_TOKEN="soak-admin-token-0123456789abcdef0123456789" RUST_LOG=warn

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin relay --example bare_server
for port in 9300 9310 9311; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use: stop what listens there first" >&2; exit 1
  fi
done
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${pg_db:-}" ] && psql "$PG_SERVER/postgres" -qc "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

target/release/examples/bare_server 127.0.0.1:9300 & pids+=($!)
serve() {  # port database-url [VAR=value...]
  local port=$1 url=$2; shift 2
  env "$@" DATABASE_URL="$url" RELAY_LISTEN="127.0.0.1:$port" RELAY_UPSTREAM=http://127.0.0.1:9300 \
    RELAY_TRUSTED_PROXIES=127.0.0.0/8 target/release/relay serve >"$work/relay-$port.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    curl -sf "localhost:$port/healthz" >/dev/null && return
    sleep 0.1
  done
  echo "relay on $port did not start" >&2; cat "$work/relay-$port.log" >&2; exit 1
}
declare -A pid_of key_of token_of
backends=(sqlite)
serve 9310 "sqlite://$work/soak.db"; pid_of[sqlite]=${pids[-1]}
if psql "$PG_SERVER/postgres" -qAtc 'SELECT 1' >/dev/null 2>&1 && redis-cli -u "$REDIS" ping >/dev/null 2>&1; then
  pg_db="relay_soak_$$"
  psql "$PG_SERVER/postgres" -qc "CREATE DATABASE $pg_db"
  serve 9311 "$PG_SERVER/$pg_db" REDIS_URL="$REDIS" RELAY_REDIS_PREFIX="soak-$$:"
  pid_of[postgres]=${pids[-1]}
  backends+=(postgres)
fi
port_of() { [ "$1" = sqlite ] && echo 9310 || echo 9311; }
for b in "${backends[@]}"; do
  port=$(port_of "$b")
  key_of[$b]=$(curl -sf "localhost:$port/admin/clients" -H "Authorization: Bearer $RELAY_ADMIN_TOKEN" \
    -H 'Content-Type: application/json' -d '{"name":"soak","rate_limit":1000000}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
  token_of[$b]=$(curl -sf "localhost:$port/v1/token" -H "X-API-Key: ${key_of[$b]}" -d grant_type=client_credentials \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
done

# Tokens live 15 minutes: each sample exchanges the key for a fresh one first.
samples="$work/samples"
touch "$work/failures"
started=$SECONDS
while [ $((SECONDS - started)) -lt $((MINUTES * 60)) ]; do
  load=()
  for b in "${backends[@]}"; do
    port=$(port_of "$b")
    token_of[$b]=$(curl -sf "localhost:$port/v1/token" -H "X-API-Key: ${key_of[$b]}" -d grant_type=client_credentials \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    wrk -t1 -c"$CONNECTIONS" -d"${SAMPLE}s" --latency -s bench/soak/legit.lua "http://127.0.0.1:$port" \
      -- "${key_of[$b]}" "${token_of[$b]}" "$RELAY_ADMIN_TOKEN" "$LEGIT_PAUSE_MS" >"$work/legit-$b" 2>&1 & load+=($!)
    wrk -t1 -c4 -d"${SAMPLE}s" -s bench/soak/hostile.lua "http://127.0.0.1:$port" \
      -- "$HOSTILE_PAUSE_MS" >"$work/hostile-$b" 2>&1 & load+=($!)
    python3 bench/soak/slow_clients.py 127.0.0.1 "$port" 20 "$SAMPLE" & load+=($!)
  done
  wait "${load[@]}"
  for b in "${backends[@]}"; do
    pid=${pid_of[$b]}
    kill -0 "$pid" || { echo "the $b server died" >&2; exit 1; }
    rss=$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status")
    fds=$(ls "/proc/$pid/fd" | wc -l)
    read -r _ legit legit_5xx legit_refused p50 p99 < <(grep '^SOAK ' "$work/legit-$b")
    read -r _ hostile hostile_5xx _ _ _ < <(grep '^SOAK ' "$work/hostile-$b")
    sed -n "s/^SOAK5XX /$b /p" "$work/legit-$b" "$work/hostile-$b" >>"$work/failures"
    echo "$b $((SECONDS - started)) $rss $fds $legit $p50 $p99 $legit_refused $hostile $((legit_5xx + hostile_5xx))" | tee -a "$samples" >&2
  done
done

# Each server's metrics and log, kept for a closer look (latency by route, what was logged).
mkdir -p target/soak
for b in "${backends[@]}"; do
  curl -sf "localhost:$(port_of "$b")/metrics" >"target/soak/metrics-$b.txt" || true
  cp "$work/relay-$(port_of "$b").log" "target/soak/relay-$b.log"
done
python3 bench/soak/plot.py "${PLOT:-target/soak/soak.svg}" < "$samples"
echo "| backend | minute | server RSS (MB) | open descriptors | legitimate requests | p50 (ms) | p99 (ms) | legitimate refused | hostile requests | 5xx |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
awk '{printf "| %s | %.1f | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2 / 60, $3, $4, $5, $6, $7, $8, $9, $10}' "$samples"
# A 5xx, or a legitimate request refused, is a failure of the run (the servers staying up was
# checked at every sample).
bad=$(awk '{n += $8 + $10} END {print n + 0}' "$samples")
if [ "$bad" != 0 ]; then
  echo "FAILED: $bad requests answered 5xx or refused wrongly; by answer (backend, count, status, body):" >&2
  awk '{k = $1; for (i = 3; i <= NF; i++) k = k " " $i; n[k] += $2} END {for (k in n) print n[k], k}' \
    "$work/failures" | sort -rn >&2
  for b in "${backends[@]}"; do  # what the server said meanwhile, most frequent first
    echo "-- $b server warnings and errors:" >&2
    sed -E 's/^[^ ]+ +//' "$work/relay-$(port_of "$b").log" | sort | uniq -c | sort -rn | head -20 >&2
  done
  [ "${SOAK_STRICT:-1}" = 0 ] || exit 1
fi
