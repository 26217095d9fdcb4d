#!/usr/bin/env bash
# Against the original: the original service's key lookup (`get_client_by_api_key` of
# LEGACY_DIR/api_keys.py, behind bench/legacy/app.py: FastAPI on uvicorn, one worker, as the
# original ran) and the relay's verify on the same data (the original's clients and keys,
# adopted, after each key's first use), with 1, 10 and 100 clients, each on a database of its
# own. Keys are drawn at random. Prints a Markdown table (bench/run.sh puts it in
# BENCHMARKS.md).
#
#   bench/legacy.sh    LEGACY_DIR=../shared/legacy COUNTS="1 10 100" DURATION=10 LEGACY_DURATION=60
#
# Needs PostgreSQL, and PyPI once (a virtualenv in target/legacy-venv: fastapi, uvicorn,
# asyncpg, bcrypt). Ports 9130-9131.
set -euo pipefail
cd "$(dirname "$0")/.."
LEGACY_DIR=$(realpath "${LEGACY_DIR:-../shared/legacy}")
COUNTS="${COUNTS:-1 10 100}"
DURATION="${DURATION:-10}"
LEGACY_DURATION="${LEGACY_DURATION:-60}"
PG_SERVER="${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
export RELAY_ADMIN_TOKEN="${RELAY_ADMIN_TOKEN:-bench-admin-token-0123456789abcdef0123456789}" RUST_LOG=warn
[ -f "$LEGACY_DIR/api_keys.py" ] || { echo "no $LEGACY_DIR/api_keys.py: set LEGACY_DIR" >&2; exit 1; }

venv=target/legacy-venv
if [ ! -x "$venv/bin/uvicorn" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q fastapi uvicorn asyncpg bcrypt
fi
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin relay
work=$(mktemp -d)
pids=() dbs=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for db in "${dbs[@]}"; do psql "$PG_SERVER/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
wait_for() {  # url
  for _ in $(seq 1 200); do curl -s -o /dev/null "$1" && return; sleep 0.1; done
  echo "$1 did not answer" >&2; exit 1
}
load() {  # wrk arguments... -> "requests rps p50 p99 non2xx"
  wrk --latency "$@" | awk '/requests in/ {n=$1} /^Requests\/sec/ {rps=$2} $1=="50%" {p50=$2}
    $1=="99%" {p99=$2} /Non-2xx/ {bad=$4} END {print n, rps, p50, p99, (bad == "" ? 0 : bad)}'
}

rows=()
for n in $COUNTS; do
  db="relay_legacy_${n}_$$"
  psql "$PG_SERVER/postgres" -qc "CREATE DATABASE $db"; dbs+=("$db")
  export DATABASE_URL="$PG_SERVER/$db" LEGACY_DIR
  "$venv/bin/python" bench/legacy/seed.py "$n" >"$work/keys-$n"

  # The original: its bcrypt scan runs on the event loop, so requests queue behind each other.
  "$venv/bin/uvicorn" --app-dir bench/legacy app:app --port 9130 --log-level warning & pids+=($!)
  wait_for http://127.0.0.1:9130/openapi.json
  read -r _ o_rps o_p50 o_p99 o_bad <<<"$(load -t1 -c4 --timeout 120s -d"${LEGACY_DURATION}s" \
    -s bench/legacy/header_keys.lua http://127.0.0.1:9130 -- "$work/keys-$n")"
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

  # The relay on the same database: it adopts the table; each key's first use finds it by
  # bcrypt and records its digest, every later one is a lookup (and then the cache).
  RELAY_LISTEN=127.0.0.1:9131 target/release/relay serve >"$work/relay-$n.log" 2>&1 & pids+=($!)
  wait_for http://127.0.0.1:9131/healthz
  while read -r key; do
    curl -sf localhost:9131/v1/keys/verify -H "Authorization: Bearer $RELAY_ADMIN_TOKEN" \
      -H 'Content-Type: application/json' -d "{\"key\":\"$key\"}" | grep -q '"valid":true'
  done <"$work/keys-$n"
  read -r _ r_rps r_p50 r_p99 r_bad <<<"$(load -t2 -c64 -d"${DURATION}s" -s bench/live_clients.lua \
    http://127.0.0.1:9131/v1/keys/verify -- "$work/keys-$n" random 2)"
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
  echo "$n clients: original $o_rps req/s (p99 $o_p99, non-2xx $o_bad), relay $r_rps req/s (p99 $r_p99, non-2xx $r_bad)" >&2
  rows+=("$n|$o_rps|$o_p50|$o_p99|$o_bad|$r_rps|$r_p50|$r_p99|$r_bad")
done

echo "| clients | original req/s | original p50 | original p99 | original non-2xx | relay req/s | relay p50 | relay p99 | relay non-2xx | relay / original |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for r in "${rows[@]}"; do
  IFS='|' read -r n o_rps o_p50 o_p99 o_bad r_rps r_p50 r_p99 r_bad <<<"$r"
  times=$(python3 -c "o = $o_rps; print(f'{$r_rps / o:,.0f} ×' if o > 0 else 'no original answer')")
  echo "| $n | $o_rps | $o_p50 | $o_p99 | $o_bad | $r_rps | $r_p50 | $r_p99 | $r_bad | $times |"
done
