#!/usr/bin/env bash
# Installs what is needed, builds everything (CUDA sources too when nvcc is present: they compile
# everywhere, and GPU tests report themselves skipped without a GPU), and runs every test.
# Usage: tools/test.sh [extra cmake -D options]   (BUILD_DIR=… to choose the build folder)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/deps.sh
build=${BUILD_DIR:-build-test}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j"$(nproc)"
# vla_torch (python/): its tests need torch and pytest, which the steps above do not install; where
# both are importable (e.g. the device machine with pytest added) they run, elsewhere they are skipped.
if python3 -c "import torch, pytest" 2>/dev/null; then
  python3 -m pytest python/tests -q
else
  echo "python/tests (vla_torch): skipped, torch or pytest not importable here"
fi
