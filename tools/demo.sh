#!/usr/bin/env bash
# The main job: install, build, and show VLA working — the quickstart stream, the training-free
# recall demo, the authors' TinyLM (a model directory exported from their PyTorch classes) prefilling
# and decoding, and the CPU throughput benchmark at the default shape (dk = 64) beside its peers.
# Usage: tools/demo.sh [extra Google Benchmark flags]   (BUILD_DIR=… to choose the build folder)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/deps.sh
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DVLA_BUILD_TESTS=OFF -DVLA_ENABLE_CUDA=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target vla_quickstart vla_recall vla_tinylm vla_bench_cpu
echo; echo "== quickstart: one head, 1000 steps =="; "$build/examples/vla_quickstart"
echo; echo "== training-free associative recall =="; "$build/examples/vla_recall" 64 5
echo; echo "== the authors' TinyLM (VLAv3Attn, random init, exported from their code: tests/fixtures/README.md) =="
"$build/examples/vla_tinylm" --model tests/fixtures/tinylm_vla --tokens "3 1 4 1 5 9 2 6 5 3 5 8 9 7 9" --generate 12
echo; echo "== CPU throughput, dk = 64 (VLA vs DeltaNet vs linear attention; full grid: $build/bench/vla_bench_cpu) =="
"$build/bench/vla_bench_cpu" --benchmark_filter='BM_Forward<.*>/dk:64/BH:16/T:1024/' --benchmark_min_time=0.2 "$@"
