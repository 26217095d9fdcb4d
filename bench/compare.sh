#!/usr/bin/env bash
# Two builds of the relay side by side, for a change's before and after: both serve at once
# (SQLite, in front of the bare hyper server), and wrk alternates between them, A B A B, so
# the machine's drift hits both alike. Prints every run and the median ratio new/old.
#
#   bench/compare.sh OLD_RELAY_BINARY NEW_RELAY_BINARY    ROUNDS=5 DURATION=6 WHAT="verify relay"
#
# Build the old one from a worktree, e.g.
#   git worktree add /tmp/old REV && CARGO_TARGET_DIR=/tmp/old-target cargo build --release \
#     --manifest-path /tmp/old/Cargo.toml --bin relay
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2
ROUNDS="${ROUNDS:-5}" DURATION="${DURATION:-6}" WHAT="${WHAT:-verify relay}"
export RELAY_ADMIN_TOKEN="bench-admin-token-0123456789abcdef0123456789" RUST_LOG=warn
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --example bare_server
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

target/release/examples/bare_server 127.0.0.1:9301 & pids+=($!)
start() {  # binary name port
  env DATABASE_URL="sqlite://$work/$2.db" RELAY_LISTEN="127.0.0.1:$3" \
    RELAY_UPSTREAM=http://127.0.0.1:9301 "$1" serve >"$work/$2.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do curl -sf "localhost:$3/healthz" >/dev/null && return; sleep 0.1; done
  cat "$work/$2.log" >&2; exit 1
}
new_key() {
  curl -sf "localhost:$1/admin/clients" -H "Authorization: Bearer $RELAY_ADMIN_TOKEN" \
    -H 'Content-Type: application/json' -d '{"name":"bench","rate_limit":1000000}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])'
}
start "$OLD" old 9302
start "$NEW" new 9303
for port in 9302 9303; do
  printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer %s"\n' \
    "'{\"key\":\"$(new_key $port)\"}'" "$RELAY_ADMIN_TOKEN" >"$work/verify-$port.lua"
  printf 'wrk.headers["X-API-Key"] = "%s"\n' "$(new_key $port)" >"$work/relay-$port.lua"
done
url() { [ "$1" = verify ] && echo "http://127.0.0.1:$2/v1/keys/verify" || echo "http://127.0.0.1:$2/v1/chat/x"; }
rps() { wrk -t2 -c64 -d"${DURATION}s" -s "$work/$1-$2.lua" "$(url "$1" "$2")" | awk '/^Requests\/sec/ {print $2}'; }
for what in $WHAT; do
  : >"$work/$what.old"; : >"$work/$what.new"
  for round in $(seq 1 "$ROUNDS"); do
    o=$(rps "$what" 9302); n=$(rps "$what" 9303)
    echo "$o" >>"$work/$what.old"; echo "$n" >>"$work/$what.new"
    echo "$what round $round: old $o req/s, new $n req/s"
  done
  python3 - "$work/$what.old" "$work/$what.new" "$what" <<'EOF'
import statistics, sys
old = [float(x) for x in open(sys.argv[1])]
new = [float(x) for x in open(sys.argv[2])]
mo, mn = statistics.median(old), statistics.median(new)
print(f"{sys.argv[3]}: median old {mo:.0f} req/s, new {mn:.0f} req/s, new/old {mn / mo:.2f}")
EOF
done
