#!/usr/bin/env bash
# bench/gpu/soak_gpu.sh — issue 13's soak on the GPU, after run_gpu.sh or sanitize_gpu.sh (same
# BUILD_DIR): 10⁶ steps of VLA per head on the recurrent and the chunked path, float tokens, against
# the float64 CPU forward (test_cuda_vla's hidden [soak] case; about a minute, most of it the
# float64 reference). The CPU's soak is `vla_experiments soak` (docs/experiments.md).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-gpu}
cd "$build/tests/cuda" && timeout 400 ./test_cuda_vla "[soak]" -s 2>&1 | grep -E "soak|passed|failed|FAILED|REQUIRE|CHECK"
