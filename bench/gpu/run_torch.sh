#!/usr/bin/env bash
# bench/gpu/run_torch.sh — one run on a GPU machine for python/vla_torch: the extension compiled
# against the installed torch (CPU and CUDA operators, sm_90), its tests (CPU and CUDA), and the
# GPU bench beside FLA and a per-token PyTorch loop. Offline: Eigen's headers may come in
# _carry/prefix/include/eigen3, flash-linear-attention as wheels in .whl/ (as for run_gpu.sh).
#
#   bash bench/gpu/run_torch.sh          logs go to $OUT (default: /tmp/vla_torch_out)
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/vla_torch_out}
mkdir -p "$out"
cd "$root"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-$(nproc)} PYTHONUNBUFFERED=1
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/vla_torch_ext}
[ -d "$root/_carry/prefix/include/eigen3" ] && export VLA_EIGEN_INCLUDE=${VLA_EIGEN_INCLUDE:-$root/_carry/prefix/include/eigen3}
if ! python3 -c "import fla" 2>/dev/null && ls "$root"/.whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/vla_site "$root"/.whl/*.whl \
    && export PYTHONPATH=/tmp/vla_site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name --format=csv,noheader
t0=$(date +%s)
python3 -c "import sys; sys.path.insert(0, 'python'); import vla_torch, torch; print('built; CUDA operators:', torch._C._dispatch_has_kernel_for_dispatch_key('vla::vla_forward', 'CUDA'))" >"$out/build.log" 2>&1
rc=$?
tail -5 "$out/build.log"; echo "build rc $rc in $(( $(date +%s) - t0 )) s"
if [ $rc != 0 ]; then
  VLA_TORCH_VERBOSE=1 python3 -c "import sys; sys.path.insert(0, 'python'); import vla_torch" 2>&1 | grep -E "error" | head -30
  exit 1
fi
timeout 240 python3 -m pytest python/tests -q -rs 2>&1 | tee "$out/pytest.log" | tail -25
test_rc=${PIPESTATUS[0]}
timeout 200 python3 python/bench_vla_torch_gpu.py --T 1024 4096 16384 65536 --loop-up-to 1024 2>&1 | tee "$out/bench_torch_gpu.log"
exit $test_rc
