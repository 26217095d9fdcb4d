#!/usr/bin/env bash
# The service's speed against the machine's ceiling, measured side by side in one run, written
# to BENCHMARKS.md with a plot (bench/verify-latency.svg).
#
#   bench/run.sh            DURATION=10 CONNECTIONS=64 SCALE="1000 100000 1000000" (defaults)
#
# 1. Throughput: a bare hyper server (5-byte body: the ceiling), a bare hyper reverse proxy in
#    front of it (the yardstick for the relay), and `relay serve` (release build; SQLite, and
#    PostgreSQL when reachable) with the bare server as upstream, plus relay processes with the
#    verification cache off for cold keys. Load: wrk (installed from Debian if missing).
# 2. Scaling: warm and cold verify latency and server memory with SCALE clients in the
#    database, seeded by bulk insert (examples/seed_clients.rs).
# 3. Micro-benchmarks: `cargo bench --bench hot_path` (criterion).
# Console: each page's server time with CONSOLE_CLIENTS clients (SQLite, and PostgreSQL).
# Usage analytics: warm verify and relayed GETs with counting on and off (same binary, same
# database, alternating ANALYTICS_PASSES times, median ratio), and on PostgreSQL a 30-day hourly
# usage query for one client among USAGE_CLIENTS active ones (seeded by examples/seed_usage.rs).
# Client policies: the same two with a client that has credits against one without.
# Live clients: bench/live_clients.sh, LIVE_CLIENTS (1000000) clients all calling, against 1000.
# Against the original: bench/legacy.sh (the original's lookup and the relay, same data).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-64}"
SCALE="${SCALE:-1000 100000 1000000}"
ANALYTICS_PASSES="${ANALYTICS_PASSES:-6}"
CONSOLE_CLIENTS="${CONSOLE_CLIENTS:-100000}"
USAGE_CLIENTS="${USAGE_CLIENTS:-100000}"
PG_SERVER="${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
export RELAY_ADMIN_TOKEN="bench-admin-token-0123456789abcdef0123456789" RUST_LOG=warn

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin relay --example bare_server --example bare_proxy --example seed_clients --example seed_usage

for port in 9100 9101 9102 9103 9104 9105 9106 9107 9108; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use: stop what listens there first" >&2; exit 1
  fi
done
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for db in ${pg_db:-} ${console_pg:-}; do
    psql "$PG_SERVER/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT

serve() {  # port database-url [VAR=value...]: starts relay serve, waits until it answers
  local port=$1 url=$2; shift 2
  env "$@" DATABASE_URL="$url" RELAY_LISTEN="127.0.0.1:$port" target/release/relay serve >"$work/relay-$port.log" 2>&1 &
  local pid=$!
  pids+=($pid)
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    curl -sf "localhost:$port/healthz" >/dev/null && return
    sleep 0.1
  done
  echo "relay on $port did not start" >&2; cat "$work/relay-$port.log" >&2; exit 1
}
new_key() {  # port name [more JSON members]
  curl -sf "localhost:$1/admin/clients" -H "Authorization: Bearer $RELAY_ADMIN_TOKEN" \
    -H 'Content-Type: application/json' -d "{\"name\":\"$2\",\"rate_limit\":1000000${3:+,$3}}" \
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
verify_script() { script "$1" POST "{\"key\":\"$2\"}" 'Content-Type: application/json' "Authorization: Bearer $RELAY_ADMIN_TOKEN"; }
wrk_run() {  # url script seconds -> "rps p50 p99 non2xx"
  local out
  out=$(wrk -t2 -c"$CONNECTIONS" -d"${3}s" --latency -s "$work/$2.lua" "$1")
  awk '/^Requests\/sec/ {rps=$2} $1=="50%" {p50=$2} $1=="99%" {p99=$2} /Non-2xx/ {bad=$4}
       END {print rps, p50, p99, (bad == "" ? 0 : bad)}' <<<"$out"
}

# 1. Throughput.
target/release/examples/bare_server 127.0.0.1:9101 & pids+=($!)
target/release/examples/bare_proxy 127.0.0.1:9102 http://127.0.0.1:9101 & pids+=($!)
sqlite="sqlite://$work/relay.db"
serve 9100 "$sqlite" RELAY_UPSTREAM=http://127.0.0.1:9101
counting_on_pid=${pids[-1]}
serve 9103 "$sqlite" RELAY_CACHE_TTL=0
serve 9106 "$sqlite" RELAY_UPSTREAM=http://127.0.0.1:9101 RELAY_USAGE_ANALYTICS=false
counting_off_pid=${pids[-1]}
warm=$(new_key 9100 warm); cold=$(new_key 9100 cold); tok=$(new_key 9100 token); relay_key=$(new_key 9100 relay)
# Clients with credits (a trillion, so they never run out): leases of 1000 at a time.
credits='"credits":{"remaining":1000000000000}'
warm_credits=$(new_key 9100 warm-credits "$credits"); relay_credits=$(new_key 9100 relay-credits "$credits")
bad="${warm:0:50}$([ "${warm:50:1}" = A ] && echo B || echo A)"
token=$(curl -sf localhost:9100/v1/token -H "X-API-Key: $(new_key 9100 relay-token)" -d grant_type=client_credentials \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
verify_script verify_warm "$warm"; verify_script verify_cold "$cold"; verify_script verify_bad "$bad"
script token POST "grant_type=client_credentials" "Content-Type: application/x-www-form-urlencoded" "X-API-Key: $tok"
script relay_key GET "" "X-API-Key: $relay_key"
verify_script verify_credits "$warm_credits"
script relay_credits GET "" "X-API-Key: $relay_credits"
script relay_token GET "" "Authorization: Bearer $token"
script plain GET ""

# Each row runs twice, the whole list in turn (so slow drift of the machine hits every row
# alike), and the better run counts: the machines here are shared and noisy.
cases=(
  "bare hyper server (ceiling)|http://127.0.0.1:9101/|plain"
  "POST /v1/keys/verify, warm key|http://127.0.0.1:9100/v1/keys/verify|verify_warm"
  "POST /v1/keys/verify, cold key (cache off)|http://127.0.0.1:9103/v1/keys/verify|verify_cold"
  "POST /v1/keys/verify, bad checksum|http://127.0.0.1:9100/v1/keys/verify|verify_bad"
  "POST /v1/token|http://127.0.0.1:9100/v1/token|token"
  "upstream direct (GET)|http://127.0.0.1:9101/v1/chat/x|plain"
  "bare hyper reverse proxy (GET)|http://127.0.0.1:9102/v1/chat/x|plain"
  "relay GET, API key|http://127.0.0.1:9100/v1/chat/x|relay_key"
  "relay GET, access token|http://127.0.0.1:9100/v1/chat/x|relay_token"
)
if psql "$PG_SERVER/postgres" -qAtc 'SELECT 1' >/dev/null 2>&1; then
  pg_db="relay_bench_$$"
  psql "$PG_SERVER/postgres" -qc "CREATE DATABASE $pg_db"
  serve 9104 "$PG_SERVER/$pg_db"
  serve 9105 "$PG_SERVER/$pg_db" RELAY_CACHE_TTL=0
  verify_script pg_warm "$(new_key 9104 pg-warm)"; verify_script pg_cold "$(new_key 9104 pg-cold)"
  cases+=("POST /v1/keys/verify, warm key, PostgreSQL|http://127.0.0.1:9104/v1/keys/verify|pg_warm")
  cases+=("POST /v1/keys/verify, cold key, PostgreSQL|http://127.0.0.1:9105/v1/keys/verify|pg_cold")
fi
declare -A best
for pass in 1 2; do
  for c in "${cases[@]}"; do
    IFS='|' read -r label url name <<<"$c"
    read -r rps p50 p99 bad <<<"$(wrk_run "$url" "$name" "$DURATION")"
    echo "pass $pass, $label: $rps req/s, p50 $p50, p99 $p99, non-2xx $bad" >&2
    previous=$(cut -d'|' -f1 <<<"${best[$label]:-0}")
    if python3 -c "import sys; sys.exit(0 if $rps > $previous else 1)"; then
      best[$label]="$rps|$p50|$p99|$bad"
    fi
  done
done
rows=()
for c in "${cases[@]}"; do
  label=${c%%|*}
  rows+=("$label|${best[$label]}")
done

# 1b. What counting costs: on (9100) and off (9106) in turn, the same keys and upstream. Two
# measures per pass: throughput, and the server's CPU time per request (utime + stime from
# /proc, which the other processes on the machine disturb far less than throughput).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
measure() {  # url script pid -> "rps cpu_us_per_request"
  local before after out
  before=$(cpu_ticks "$3")
  out=$(wrk -t2 -c"$CONNECTIONS" -d5s -s "$work/$2.lua" "$1")
  after=$(cpu_ticks "$3")
  awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" '
    /requests in/ {n=$1} /^Requests\/sec/ {rps=$2}
    END {printf "%s %.3f\n", rps, t / hz * 1e6 / n}' <<<"$out"
}
median() { sort -n | python3 -c 'import sys; v=[float(l) for l in sys.stdin]; n=len(v); print(f"{(v[n//2] if n % 2 else (v[n//2-1]+v[n//2])/2):.3f}")'; }
side_by_side() {  # label url-a script-a pid-a url-b script-b pid-b -> a row of medians, A over B
  local label=$1 ratios=() cpu_ratios=() cpu_a=() cpu_b=() a a_cpu b b_cpu
  for pass in $(seq 1 "$ANALYTICS_PASSES"); do
    read -r a a_cpu <<<"$(measure "$2" "$3" "$4")"
    read -r b b_cpu <<<"$(measure "$5" "$6" "$7")"
    ratios+=("$(python3 -c "print(f'{$a/$b:.4f}')")")
    cpu_ratios+=("$(python3 -c "print(f'{$a_cpu/$b_cpu:.4f}')")")
    cpu_a+=("$a_cpu"); cpu_b+=("$b_cpu")
    echo "$label, pass $pass: $a req/s $a_cpu us CPU against $b req/s $b_cpu us CPU" >&2
  done
  echo "$label|$(printf '%s\n' "${ratios[@]}" | median)|$(printf '%s\n' "${cpu_ratios[@]}" | median)|$(printf '%s\n' "${cpu_a[@]}" | median)|$(printf '%s\n' "${cpu_b[@]}" | median)|${ratios[*]}"
}
analytics_rows=()
for pair in "POST /v1/keys/verify, warm key|/v1/keys/verify|verify_warm" "relay GET, API key|/v1/chat/x|relay_key"; do
  IFS='|' read -r label path name <<<"$pair"
  analytics_rows+=("$(side_by_side "counting, $label" "http://127.0.0.1:9100$path" "$name" "$counting_on_pid" \
    "http://127.0.0.1:9106$path" "$name" "$counting_off_pid")")
done
# 1c. What credits cost: a client with credits against one without, on the same server.
credits_rows=()
for pair in "POST /v1/keys/verify, warm key|/v1/keys/verify|verify_credits|verify_warm" \
    "relay GET, API key|/v1/chat/x|relay_credits|relay_key"; do
  IFS='|' read -r label path with without <<<"$pair"
  credits_rows+=("$(side_by_side "credits, $label" "http://127.0.0.1:9100$path" "$with" "$counting_on_pid" \
    "http://127.0.0.1:9100$path" "$without" "$counting_on_pid")")
done
# 1d. Cache misses on PostgreSQL against the database's own ceiling: pgbench's select-only
# run (one prepared, indexed lookup per transaction) with as many connections as the relay's
# pool (RELAY_DB_MAX_CONNECTIONS, 10), on the same server, right after the cold rows.
pgbench_tps=""; pgbench_lookup_tps=""
if [ -n "${pg_db:-}" ] && command -v pgbench >/dev/null; then
  pgbench -i -q -s 10 "$PG_SERVER/$pg_db" >/dev/null 2>&1
  pgbench_tps=$(pgbench -S -M prepared -c 10 -j 2 -T "$DURATION" "$PG_SERVER/$pg_db" 2>/dev/null \
    | awk '/^tps/ {print $3}')
  echo "pgbench -S: $pgbench_tps tps" >&2
  # The relay's own lookup, run by pgbench: every column of one client by key id.
  cold_key_id=$(psql "$PG_SERVER/$pg_db" -qAtc "SELECT key_id FROM api_clients WHERE name = 'pg-cold'")
  echo "SELECT * FROM api_clients WHERE key_id = '$cold_key_id' OR prev_key_id = '$cold_key_id';" >"$work/lookup.sql"
  pgbench_lookup_tps=$(pgbench -n -f "$work/lookup.sql" -M prepared -c 10 -j 2 -T "$DURATION" "$PG_SERVER/$pg_db" 2>/dev/null \
    | awk '/^tps/ {print $3}')
  echo "pgbench, the relay's lookup: $pgbench_lookup_tps tps" >&2
fi
usage_query=""
if [ -n "${pg_db:-}" ]; then
  usage_client=$(curl -sf "localhost:9104/admin/clients" -H "Authorization: Bearer $RELAY_ADMIN_TOKEN" \
    -H 'Content-Type: application/json' -d '{"name":"usage-bench"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["client"]["client_id"])')
  target/release/examples/seed_usage "$PG_SERVER/$pg_db" "$usage_client" "$USAGE_CLIENTS" 30
  script usage_query GET "" "Authorization: Bearer $RELAY_ADMIN_TOKEN"
  from=$(date -u -d '30 days ago' +%Y-%m-%dT%H:%M:%SZ)
  url="http://127.0.0.1:9104/admin/usage?client_id=$usage_client&granularity=hour&from=$from"
  curl -sf "$url" -H "Authorization: Bearer $RELAY_ADMIN_TOKEN" | python3 -c '
import json, sys
body = json.load(sys.stdin)
assert len(body["buckets"]) >= 720 and body["totals"]["allowed"] > 0, body["totals"]' 
  out=$(wrk -t1 -c1 -d5s --latency -s "$work/usage_query.lua" "$url")
  usage_query=$(awk '/^Requests\/sec/ {rps=$2} $1=="50%" {p50=$2} $1=="99%" {p99=$2} END {print rps "|" p50 "|" p99}' <<<"$out")
  echo "usage query: $usage_query" >&2
fi
for p in "${pids[@]:2}"; do kill "$p" 2>/dev/null || true; done
pids=("${pids[@]:0:2}")

# 2. Scaling with the number of clients.
scale_rows=()
plot_rows=()
port=9110
for n in $SCALE; do
  db="sqlite://$work/scale-$n.db"
  key=$(target/release/examples/seed_clients "$db" "$n")
  serve "$port" "$db"; warm_pid=${pids[-1]}
  serve $((port + 1)) "$db" RELAY_CACHE_TTL=0
  verify_script "scale_$n" "$key"
  read -r wrps wp50 wp99 _ <<<"$(wrk_run "http://127.0.0.1:$port/v1/keys/verify" "scale_$n" 5)"
  read -r crps cp50 cp99 _ <<<"$(wrk_run "http://127.0.0.1:$((port + 1))/v1/keys/verify" "scale_$n" 5)"
  rss_mb=$(awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$warm_pid/status")
  scale_rows+=("$n|$wrps|$wp50|$wp99|$crps|$cp50|$cp99|$rss_mb")
  ms() { python3 -c "v='$1'; print(float(v[:-2]) if v.endswith('ms') else float(v[:-2]) / 1000 if v.endswith('us') else float(v[:-1]) * 1000)"; }
  plot_rows+=("$n $(ms "$wp50") $(ms "$wp99") $(ms "$cp50") $(ms "$cp99")")
  echo "$n clients: warm $wrps req/s p99 $wp99, cold $crps req/s p99 $cp99, RSS $rss_mb MB" >&2
  kill "${pids[-1]}" "${pids[-2]}" 2>/dev/null || true; pids=("${pids[@]:0:${#pids[@]}-2}")
  port=$((port + 2))
done
printf '%s\n' "${plot_rows[@]}" | python3 bench/plot.py bench/verify-latency.svg

# 2b. Console pages with CONSOLE_CLIENTS clients: time to the first byte (curl, over loopback),
# median and worst of 20 requests per page, signed in with the admin token.
console_rows=()
console_page_times() {  # port backend
  local port=$1 backend=$2 cookie client
  local jar="$work/jar-$port" login_csrf
  login_csrf=$(curl -s -c "$jar" localhost:$port/console/login | grep -o 'name="login_csrf" value="[^"]*"' | cut -d'"' -f4)
  cookie=$(curl -si -b "$jar" localhost:$port/console/login -d "credential=$RELAY_ADMIN_TOKEN" -d "login_csrf=$login_csrf" \
    | awk -F'[=;]' 'tolower($1) == "set-cookie: relay_console" {print $2}')
  client=$(curl -sf "localhost:$port/admin/clients?limit=1" -H "Authorization: Bearer $RELAY_ADMIN_TOKEN" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["clients"][0]["client_id"])')
  for page in /console /console/clients "/console/clients?q=no-such-name" "/console/clients/$client" \
      "/console/clients/$client?range=30d" /console/audit /console/signing-keys /console/clients/new; do
    stats=$(for _ in $(seq 1 20); do
        curl -s -o /dev/null -w '%{http_code} %{time_starttransfer}\n' -H "Cookie: relay_console=$cookie" "localhost:$port$page"
      done | python3 -c '
import sys
rows = [l.split() for l in sys.stdin]
assert all(code == "200" for code, _ in rows), rows
t = sorted(float(s) * 1000 for _, s in rows)
print(f"{t[len(t) // 2]:.1f} ms|{t[-1]:.1f} ms")')
    console_rows+=("$backend|${page//|/ }|$stats")
    echo "console $backend $page: $stats" >&2
  done
}
target/release/examples/seed_clients "sqlite://$work/console.db" "$CONSOLE_CLIENTS" >/dev/null
serve 9107 "sqlite://$work/console.db"
console_page_times 9107 SQLite
if [ -n "${pg_db:-}" ]; then
  console_pg="${pg_db}_console"
  psql "$PG_SERVER/postgres" -qc "CREATE DATABASE $console_pg"
  target/release/examples/seed_clients "$PG_SERVER/$console_pg" "$CONSOLE_CLIENTS" >/dev/null
  serve 9108 "$PG_SERVER/$console_pg"
  console_page_times 9108 PostgreSQL
fi
for p in "${pids[@]:2}"; do kill "$p" 2>/dev/null || true; done
pids=("${pids[@]:0:2}")
[ -n "${console_pg:-}" ] && psql "$PG_SERVER/postgres" -qc "DROP DATABASE IF EXISTS $console_pg WITH (FORCE)"

# 2c. Many live clients (bench/live_clients.sh: its own servers, ports 9120-9121).
live=$(CLIENTS="${LIVE_CLIENTS:-1000000}" DURATION="$DURATION" CONNECTIONS="$CONNECTIONS" bash bench/live_clients.sh)

# 2d. Against the original service (bench/legacy.sh: PostgreSQL and the original's module).
legacy=""
if [ -n "${pg_db:-}" ] && [ -f "${LEGACY_DIR:-../shared/legacy}/api_keys.py" ]; then
  legacy=$(DURATION="$DURATION" bash bench/legacy.sh)
else
  echo "against the original: skipped (needs PostgreSQL and LEGACY_DIR/api_keys.py)" >&2
fi

# 3. Micro-benchmarks.
micro=$(cargo bench --quiet --bench hot_path 2>&1 | python3 -c '
import sys
prev = ""
for line in sys.stdin:
    if "time:" in line and "[" in line:
        name = line.split("time:")[0].strip() or prev
        print(name + "|" + line.split("[", 1)[1].split("]")[0])
    elif line.strip() and not line.startswith(("Benchmarking", "Found", " ")):
        prev = line.strip()
')

ceiling=$(cut -d'|' -f2 <<<"${rows[0]}")
proxy=$(cut -d'|' -f2 <<<"${rows[6]}")
pct() { python3 -c "print(f'{$1/$2:.0%}')"; }
{
  echo "# Benchmarks"
  echo
  echo "Measured $(date -u +%Y-%m-%d) by \`bench/run.sh\` (every number below from one run). Machine:"
  echo "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)."
  echo "Load: wrk -t2 -c$CONNECTIONS, ${DURATION} s per run, on the same machine (it takes about one core);"
  echo "every throughput row is the better of two runs made in turn."
  echo
  echo "## Throughput"
  echo
  echo "| what | requests/s | p50 | p99 | non-2xx | of ceiling | of bare proxy |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for r in "${rows[@]}"; do
    IFS='|' read -r label rps p50 p99 non <<<"$r"
    of_proxy=""; case "$label" in relay*) of_proxy=$(pct "$rps" "$proxy");; esac
    echo "| $label | $rps | $p50 | $p99 | $non | $(pct "$rps" "$ceiling") | $of_proxy |"
  done
  if [ -n "$pgbench_tps" ]; then
    cold_pg=$(printf '%s\n' "${rows[@]}" | awk -F'|' '$1 ~ /cold key, PostgreSQL/ {print $2}')
    echo
    echo "Cache misses on PostgreSQL: \`pgbench -S -M prepared -c 10 -j 2\` (select-only, as many"
    echo "connections as the relay's pool) on the same server: $pgbench_tps transactions/s; cold"
    echo "verify answers $(pct "$cold_pg" "$pgbench_tps") of that. The same pgbench running the relay's own"
    echo "lookup (\`SELECT *\` of one client by key id): $pgbench_lookup_tps transactions/s; cold verify"
    echo "answers $(pct "$cold_pg" "$pgbench_lookup_tps") of that."
  fi
  echo
  echo "## Usage analytics"
  echo
  echo "What counting every use costs: the same binary with \`RELAY_USAGE_ANALYTICS\` on and off, on"
  echo "the same database, keys and upstream, 5 s each, on and off in turn $ANALYTICS_PASSES times. The CPU"
  echo "column is the server's own CPU time (utime + stime) per request: less disturbed by the"
  echo "load generator and the rest of the machine than throughput."
  echo
  echo "| what | throughput on/off (median) | server CPU per request on/off (median) | CPU µs/request on, off | throughput ratio of every pass |"
  echo "|---|---:|---:|---:|---|"
  for r in "${analytics_rows[@]}"; do
    IFS='|' read -r label median cpu cpu_on cpu_off all <<<"$r"
    echo "| ${label#counting, } | $median | $cpu | $cpu_on, $cpu_off | $all |"
  done
  echo
  echo "## Client policies"
  echo
  echo "What usage credits cost: a client with credits against one without, on the same server,"
  echo "5 s each, in turn $ANALYTICS_PASSES times (the credits are leased 1000 at a time)."
  echo
  echo "| what | throughput with/without credits (median) | server CPU per request with/without (median) | CPU µs/request with, without | throughput ratio of every pass |"
  echo "|---|---:|---:|---:|---|"
  for r in "${credits_rows[@]}"; do
    IFS='|' read -r label median cpu cpu_on cpu_off all <<<"$r"
    echo "| ${label#credits, } | $median | $cpu | $cpu_on, $cpu_off | $all |"
  done
  if [ -n "$usage_query" ]; then
    IFS='|' read -r qrps qp50 qp99 <<<"$usage_query"
    echo
    echo "\`GET /admin/usage\`, one client, 30 days by hour (721 buckets), PostgreSQL, among"
    echo "$USAGE_CLIENTS other clients each active in 30 of those hours (one connection, 5 s):"
    echo "p50 $qp50, p99 $qp99, $qrps queries/s."
  fi
  echo
  echo "## Scaling with the number of clients (SQLite, 5 s per row)"
  echo
  echo "| clients | warm req/s | warm p50 | warm p99 | cold req/s | cold p50 | cold p99 | server RSS |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
  for r in "${scale_rows[@]}"; do
    IFS='|' read -r n a b c d e f m <<<"$r"
    echo "| $n | $a | $b | $c | $d | $e | $f | $m MB |"
  done
  echo
  echo "![verify latency against client count](bench/verify-latency.svg)"
  echo
  echo "## Live clients (SQLite)"
  echo
  echo "Every client calling: keys drawn uniformly at random from all of them at"
  echo "\`POST /v1/keys/verify\`, after a warm-up presenting each once (\`bench/live_clients.sh\`);"
  echo "ratios against the same run with 1000 clients. Startup: until \`/healthz\` answers."
  echo "Uses not counted: uses the usage counters in memory could not hold because writing"
  echo "them fell behind (the server's \`relay_usage_counts_dropped_total\`)."
  echo
  echo "$live"
  if [ -n "$legacy" ]; then
    echo
    echo "## Against the original service (PostgreSQL)"
    echo
    echo "The original's key lookup (\`get_client_by_api_key\` of its \`api_keys.py\`, behind a"
    echo "minimal FastAPI app on uvicorn, \`bench/legacy/app.py\`; wrk -c4) and the relay's verify"
    echo "(wrk -c$CONNECTIONS) on the same database of the original's clients, keys drawn at random,"
    echo "the relay after each key's first use (\`bench/legacy.sh\`)."
    echo
    echo "$legacy"
  fi
  echo
  echo "## Console pages ($CONSOLE_CLIENTS clients)"
  echo
  echo "Time to the first byte of each page, signed in, 20 requests each (the list pages show 50"
  echo "clients, each with its 36-hour sparkline)."
  echo
  echo "| database | page | median | worst |"
  echo "|---|---|---:|---:|"
  for r in "${console_rows[@]}"; do
    IFS='|' read -r backend page median worst <<<"$r"
    echo "| $backend | \`$page\` | $median | $worst |"
  done
  echo
  echo "## Micro-benchmarks (criterion, \`cargo bench --bench hot_path\`; low, estimate, high)"
  echo
  echo "| what | time |"
  echo "|---|---|"
  while IFS='|' read -r name time; do
    [ -n "$name" ] && echo "| $name | $time |"
  done <<<"$micro"
} > BENCHMARKS.md
cat BENCHMARKS.md
