#!/usr/bin/env bash
# bench/gpu/run_gpu.sh — one run on a GPU machine: configure + build (CMake, sm_90), the GPU tests,
# the benches of vla's kernels and of the peers (PyTorch SDPA, flash-linear-attention), and a short
# table last. Works offline: Eigen and Catch2 headers may come in _carry/prefix (a CMake prefix),
# flash-linear-attention as wheels in .whl/ (see bench/gpu/RESULTS.md for how they are fetched).
#
#   bash bench/gpu/run_gpu.sh [--quick]        logs and CSVs go to $OUT (default: build-gpu/out)
#   VLA_GPU_VARIANTS=ON also builds, tests and times the variant kernels (cmake/VlaCuda.cmake), with
#   VLA_GPU_VARIANT_DEFS="A=1;B=1" as their knobs if set (e.g. the backward's, vla/cuda/README.md);
#   VLA_CTEST_EXCLUDE=regex leaves matching tests out (e.g. _v1$: build and time the variant only);
#   VLA_V1_BENCH_ARGS are the variant bench's arguments (e.g. --only-backward for the backward's knobs).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
quick=""
[ "${1:-}" = "--quick" ] && quick="--quick"
build=${BUILD_DIR:-$root/build-gpu}
out=${OUT:-$build/out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

prefix_args=()
[ -d "$root/_carry/prefix" ] && prefix_args=(-DCMAKE_PREFIX_PATH="$root/_carry/prefix")
if ! python3 -c "import fla" 2>/dev/null && ls "$root"/.whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/vla_site "$root"/.whl/*.whl \
    && export PYTHONPATH=/tmp/vla_site${PYTHONPATH:+:$PYTHONPATH}
fi
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)

echo "== configure + build (sm_90)"
t0=$(date +%s)
cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DVLA_ENABLE_CUDA=ON -DVLA_BUILD_CUDA_TESTS=ON -DVLA_BUILD_GPU_BENCH=ON -DVLA_GPU_VARIANTS=${VLA_GPU_VARIANTS:-OFF} \
  ${VLA_GPU_VARIANT_DEFS:+"-DVLA_GPU_VARIANT_DEFS=$VLA_GPU_VARIANT_DEFS"} \
  -DVLA_BUILD_TESTS=OFF -DVLA_BUILD_BENCH=OFF -DVLA_BUILD_EXAMPLES=OFF -DVLA_BUILD_EXPERIMENTS=OFF \
  "${prefix_args[@]}" >"$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" >>"$out/build.log" 2>&1 || { grep -E "error|Error" "$out/build.log" | head -40; exit 1; }
echo "   built in $(( $(date +%s) - t0 )) s"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader 2>/dev/null | sed 's/^/   gpu: /'

echo "== GPU tests"
timeout 420 ctest --test-dir "$build" -L cuda ${VLA_CTEST_EXCLUDE:+-E "$VLA_CTEST_EXCLUDE"} -V >"$out/tests.log" 2>&1
test_rc=$?
python3 "$root/bench/gpu/errors.py" "$out/tests.log"
grep -E "tests passed|tests failed|Failed|Skipped|FAILED|REQUIRE|CHECK\(" "$out/tests.log" | head -40

echo "== benches: vla kernels"
timeout 300 "$build/bench/gpu/vla_gpu_bench" $quick --csv "$out/ours.csv" 2>&1 | tee "$out/bench.log"
if [ -x "$build/bench/gpu/vla_gpu_bench_v1" ]; then
  echo "== benches: variant kernels (v1)"
  timeout 150 "$build/bench/gpu/vla_gpu_bench_v1" $quick ${VLA_V1_BENCH_ARGS:-} --csv "$out/ours_v1.csv" 2>&1 | tee -a "$out/bench.log"
fi
echo "== benches: peers"
timeout 300 python3 "$root/bench/gpu/peers.py" $quick --csv "$out/peers.csv" 2>&1
echo "== benches: backward peers"
(cd "$root/bench/gpu" && timeout 240 python3 peers_backward.py $quick --csv "$out/peers_backward.csv" 2>&1)

python3 "$root/bench/gpu/table.py" "$out/ours.csv" "$out/ours_v1.csv" "$out/peers.csv" "$out/peers_backward.csv" | tee "$out/table.md"
echo
echo "tests: $([ $test_rc = 0 ] && echo PASSED || echo "FAILED (rc $test_rc, see $out/tests.log)")"
exit $test_rc
