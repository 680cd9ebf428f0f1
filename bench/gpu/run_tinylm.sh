#!/usr/bin/env bash
# bench/gpu/run_tinylm.sh — the TinyLM on the GPU in one device call: build, test_cuda_tinylm, the
# TinyLM bench (bench_tinylm_gpu.cu), and the authors' own TinyLM on the same GPU (tinylm_peer.py).
#   NOTEBOOK=path/to/07-vlav3-benchmark-fixed.ipynb BUILD_DIR=… bash bench/gpu/run_tinylm.sh
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-gpu}
prefix_args=()
[ -d "$root/_carry/prefix" ] && prefix_args=(-DCMAKE_PREFIX_PATH="$root/_carry/prefix")
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DVLA_ENABLE_CUDA=ON \
  -DVLA_BUILD_CUDA_TESTS=ON -DVLA_BUILD_GPU_BENCH=ON -DVLA_BUILD_TESTS=OFF -DVLA_BUILD_BENCH=OFF \
  -DVLA_BUILD_EXAMPLES=OFF -DVLA_BUILD_EXPERIMENTS=OFF "${prefix_args[@]}" >/dev/null || exit 1
cmake --build "$build" --target test_cuda_tinylm vla_tinylm_gpu_bench -j"$(nproc)" >/dev/null || exit 1
"$build/tests/cuda/test_cuda_tinylm" | grep -E "rel RMS|passed|failed"
"$build/bench/gpu/vla_tinylm_gpu_bench"
[ -n "${NOTEBOOK:-}" ] && python3 "$root/bench/gpu/tinylm_peer.py" "$NOTEBOOK"
