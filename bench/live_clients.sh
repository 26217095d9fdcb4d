#!/usr/bin/env bash
# Many live clients: CLIENTS clients in a SQLite database, every key presented, drawn
# uniformly at random, at POST /v1/keys/verify, after a warm-up that presents each key once.
# Compared with the same test with BASELINE clients: throughput and p99 ratios, the server's
# RSS with every client cached (and the same with usage analytics off), its startup time with
# CLIENTS clients in the database, and the share of cache hits with the default cache
# (100 000 keys, 30 s); and how long an admin's write (one every 0.5 s) waits meanwhile.
#
#   bench/live_clients.sh       CLIENTS=1000000 BASELINE=1000 DURATION=10 CONNECTIONS=64
#
# Prints a Markdown table (bench/run.sh puts it in BENCHMARKS.md). Ports 9120-9122.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS="${CLIENTS:-1000000}"
BASELINE="${BASELINE:-1000}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-64}"
export RELAY_ADMIN_TOKEN="${RELAY_ADMIN_TOKEN:-bench-admin-token-0123456789abcdef0123456789}" RUST_LOG=warn

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin relay --example seed_clients
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

serve() {  # port database-url [VAR=value...]; sets startup: seconds until /healthz answered
  local port=$1 url=$2 started; shift 2
  started=$(date +%s.%N)
  env "$@" DATABASE_URL="$url" RELAY_LISTEN="127.0.0.1:$port" target/release/relay serve >"$work/relay-$port.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 3000); do
    if curl -sf "localhost:$port/healthz" >/dev/null; then
      startup=$(python3 -c "print(f'{$(date +%s.%N) - $started:.2f}')"); return
    fi
    sleep 0.02
  done
  echo "relay on $port did not start" >&2; cat "$work/relay-$port.log" >&2; exit 1
}
metric() { curl -sf "localhost:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
run() {  # port keys mode seconds -> "rps p50 p99 non2xx"
  local out
  out=$(wrk -t2 -c"$CONNECTIONS" -d"${4}s" --latency -s bench/live_clients.lua \
    "http://127.0.0.1:$1/v1/keys/verify" -- "$2" "$3" 2)
  awk '/^Requests\/sec/ {rps=$2} $1=="50%" {p50=$2} $1=="99%" {p99=$2} /Non-2xx/ {bad=$4}
       END {print rps, p50, p99, (bad == "" ? 0 : bad)}' <<<"$out"
}
# The server's own memory (RssAnon), and the database file's pages it maps (RssFile: the OS's
# page cache, shared, and given back under pressure).
rss() { awk '/RssAnon/ {a = $2} /RssFile/ {f = $2} END {printf "%.0f MB + %.0f MB", a / 1024, f / 1024}' "/proc/$1/status"; }

# Admin creates, one every 0.5 s until killed, each "status seconds" on a line of $work/admin:
# how long an operator's write waits behind the flushes of that many clients' uses.
admin_writes() {  # port
  for i in $(seq 1 100000); do
    curl -s -o /dev/null -w "%{http_code} %{time_total}\n" -X POST "localhost:$1/admin/clients" \
      -H "Authorization: Bearer $RELAY_ADMIN_TOKEN" -H 'content-type: application/json' \
      -d "{\"name\":\"probe$i\"}"
    sleep 0.5
  done
}
# "slowest" seconds, with the count of answers other than 201 if there were any.
admin_summary() {
  awk '{if ($2 > m) m = $2; if ($1 != 201) bad++} END {printf "%.0f ms%s", m * 1000, (bad ? " (" bad " not 201)" : "")}' "$work/admin"
}

# Every key cached: room for all, and entries that outlive the run (the change log still
# evicts a changed client within a second). Appends a row; `label` names the case.
all_cached() {  # clients label [VAR=value...]
  local n=$1 label=$2; shift 2
  serve 9120 "sqlite://$work/live-$n.db" RELAY_CACHE_CAPACITY=$((n + n / 10 + 1000)) RELAY_CACHE_TTL=3600 "$@"
  local pid=${pids[-1]} misses rps p50 p99 bad
  run 9120 "$work/keys-$n" walk $((n / 20000 + 5)) >/dev/null
  misses=$(metric 9120 relay_key_cache_misses_total)
  admin_writes 9120 >"$work/admin" & local admin=$!
  read -r rps p50 p99 bad <<<"$(run 9120 "$work/keys-$n" random "$DURATION")"
  kill "$admin"; wait "$admin" 2>/dev/null || true
  misses=$(python3 -c "print($(metric 9120 relay_key_cache_misses_total) - $misses)")
  # Uses the usage counters could not hold because flushes fell behind (0 when they keep up).
  dropped=$(metric 9120 relay_usage_counts_dropped_total)
  rows+=("$n|$label|$rps|$p50|$p99|$bad|$(rss "$pid")|$startup|$dropped|$(admin_summary)")
  echo "$n clients, $label: $rps req/s p99 $p99, memory $(rss "$pid"), startup $startup s, misses while measured $misses, uses not counted $dropped, slowest admin write $(admin_summary)" >&2
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

rows=()
for n in "$BASELINE" "$CLIENTS"; do
  KEYS_FILE="$work/keys-$n" target/release/examples/seed_clients "sqlite://$work/live-$n.db" "$n" >/dev/null
  all_cached "$n" "every key cached"
done
# What usage analytics costs here: a counter, and rows written, for nearly every request.
all_cached "$CLIENTS" "every key cached, usage analytics off" RELAY_USAGE_ANALYTICS=false
# The default cache (100 000 keys for 30 s) under the same traffic from CLIENTS clients.
serve 9121 "sqlite://$work/live-$CLIENTS.db"
pid=${pids[-1]}
run 9121 "$work/keys-$CLIENTS" random 5 >/dev/null
h0=$(metric 9121 relay_key_cache_hits_total); m0=$(metric 9121 relay_key_cache_misses_total)
read -r rps p50 p99 bad <<<"$(run 9121 "$work/keys-$CLIENTS" random "$DURATION")"
share=$(python3 -c "h=$(metric 9121 relay_key_cache_hits_total)-$h0; m=$(metric 9121 relay_key_cache_misses_total)-$m0; print(f'{h/(h+m):.0%}')")
rows+=("$CLIENTS|default cache, $share hits|$rps|$p50|$p99|$bad|$(rss "$pid")||$(metric 9121 relay_usage_counts_dropped_total)")

base_rps=$(cut -d'|' -f3 <<<"${rows[0]}"); base_p99=$(cut -d'|' -f5 <<<"${rows[0]}")
ms() { python3 -c "v='$1'; print(float(v[:-2]) if v.endswith('ms') else float(v[:-2]) / 1000 if v.endswith('us') else float(v[:-1]) * 1000)"; }
echo "| clients | cache | req/s | p50 | p99 | non-2xx | throughput of $BASELINE | p99 of $BASELINE | server memory + mapped file | startup | uses not counted | slowest admin write |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for r in "${rows[@]}"; do
  IFS='|' read -r n cache rps p50 p99 bad mb startup dropped admin <<<"$r"
  ratio=$(python3 -c "print(f'{$rps/$base_rps:.2f}')")
  p99_ratio=$(python3 -c "print(f'{$(ms "$p99")/$(ms "$base_p99"):.2f}')")
  echo "| $n | $cache | $rps | $p50 | $p99 | $bad | $ratio | $p99_ratio | $mb | ${startup:+$startup s} | $dropped | $admin |"
done
