#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz/, clang with ASan + UBSan) and runs each for a bounded
# time from the seed corpus in tests/fuzz/corpus/; a crash or a broken invariant fails the run.
# Usage: tools/fuzz.sh [seconds per harness, default 30]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
bash tools/deps.sh clang libclang-rt-14-dev
build=${BUILD_DIR:-build-fuzz}
CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DVLA_BUILD_FUZZERS=ON -DVLA_ENABLE_CUDA=OFF \
  -DVLA_BUILD_TESTS=OFF -DVLA_BUILD_BENCH=OFF -DVLA_BUILD_EXAMPLES=OFF -DVLA_BUILD_EXPERIMENTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)"
for name in forward state split safetensors; do
  work=$(mktemp -d)
  cp tests/fuzz/corpus/"$name"/* "$work"/
  log="$work/log.txt"
  echo "== fuzz_$name: ${secs} s from $(ls tests/fuzz/corpus/"$name" | wc -l) seeds"
  if ! "$build/tests/fuzz/vla_fuzz_$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
      -artifact_prefix="$work/" "$work" >"$log" 2>&1; then
    tail -60 "$log"
    echo "fuzz_$name: FAILED (the crashing input is in $work)"
    exit 1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$log" | sed 's/^/   /'
  rm -rf "$work"
done
echo "fuzz: no crash, no broken invariant"
