#!/usr/bin/env bash
# Runs one or more fuzz targets for a fixed time each, PAR at a time (default 2), with the
# committed seeds; prints libFuzzer's final statistics. Nightly toolchain and cargo-fuzz
# required:
#   cargo install cargo-fuzz
#   fuzz/run.sh 600                       # every target, 10 minutes each
#   fuzz/run.sh 60 callback_envelope      # one target, one minute
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(callback_envelope decrypt ndjson_line jsonp_query pay_xml)
cargo +nightly fuzz build -O >/dev/null
mkdir -p logs
run() {
  local t=$1
  mkdir -p "corpus/$t"
  cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=4096 -print_final_stats=1 >"logs/$t.log" 2>&1 || true
  echo "== $t"; grep -E "^(stat::|SUMMARY|==[0-9]+== ERROR|Done )" "logs/$t.log" || tail -5 "logs/$t.log"
}
i=0
for t in "${targets[@]}"; do
  run "$t" &
  i=$((i + 1))
  if [ $((i % ${PAR:-2})) -eq 0 ]; then wait; fi
done
wait
