#!/usr/bin/env bash
# The CPU tests under AddressSanitizer (with LeakSanitizer) and UndefinedBehaviorSanitizer: any
# report fails the run. Installs what it needs (tools/deps.sh).
# Usage: tools/sanitize.sh [extra cmake -D options]   (BUILD_DIR=… to choose the build folder)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/deps.sh
build=${BUILD_DIR:-build-asan}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVLA_SANITIZE=address,undefined -DVLA_ENABLE_CUDA=OFF \
  -DVLA_BUILD_BENCH=OFF -DVLA_BUILD_EXAMPLES=OFF -DVLA_BUILD_EXPERIMENTS=OFF -DVLA_NATIVE=OFF "$@"
cmake --build "$build" -j"$(nproc)" --target vla_tests
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir "$build" --output-on-failure -j"$(nproc)"
