#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets, libFuzzer through cargo fuzz) for MINUTES each,
# JOBS at a time, from its seeds (fuzz/seeds/TARGET) and the corpus grown by earlier runs
# (fuzz/corpus/TARGET), and prints a table: executions, time, corpus size, crashes.
#
#   bench/fuzz.sh [MINUTES] [TARGET...]       MINUTES=1 by default; JOBS=2 (environment)
#
# A crash leaves its input in fuzz/artifacts/TARGET and the script exits 1: add that input as
# a regression (a seed, and a case in src/fuzzing.rs's properties), fix, run again.
# cargo fuzz needs nightly features; RUSTC_BOOTSTRAP lets the one stable toolchain build them.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${1:-1}"; shift || true
JOBS="${JOBS:-2}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(ls fuzz/fuzz_targets | sed 's/\.rs$//')
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
(cd fuzz && cargo fuzz build 2>&1 | tail -1) >&2
log=$(mktemp -d)
run() {  # target
  mkdir -p "fuzz/corpus/$1"
  cargo fuzz run "$1" "fuzz/corpus/$1" "fuzz/seeds/$1" -- \
    -max_total_time=$((MINUTES * 60)) -print_final_stats=1 -rss_limit_mb=2048 >"$log/$1" 2>&1
  echo "$? $1"
}
export -f run; export MINUTES log
failed=0
while read -r status target; do
  [ "$status" = 0 ] || failed=1
done < <(printf '%s\n' "${targets[@]}" | xargs -P "$JOBS" -I{} bash -c 'run {}')
echo "| target | executions | seconds | executions/s | corpus inputs | crashes |"
echo "|---|---:|---:|---:|---:|---:|"
for t in "${targets[@]}"; do
  runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log/$t" | tail -1)
  rate=$(awk '/stat::average_exec_per_sec/ {r=$2} END {print r}' "$log/$t")
  crashes=$(ls "fuzz/artifacts/$t" 2>/dev/null | grep -c . || true)
  echo "| $t | ${runs:-?} | $((MINUTES * 60)) | ${rate:-?} | $(ls "fuzz/corpus/$t" | wc -l) | $crashes |"
  grep -q "^==.*ERROR\|panicked" "$log/$t" && { echo "--- $t:" >&2; tail -30 "$log/$t" >&2; }
done
rm -rf "$log"
exit "$failed"
