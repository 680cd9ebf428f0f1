#!/usr/bin/env bash
# bench/gpu/chunked_check.sh — a quick device call for work on the chunked kernel: build only its
# test and the GPU bench (sm_90), run the chunked tests, time the forward rows (ours only; the
# peers come from run_gpu.sh), then (unless VLA_CHECK_PROFILE=0) the phase profile of the A warps (a second build with
# -DVLA_CUDA_CHUNKED_PROFILE=1, one T = 65,536 forward) and, with --sanitize, memcheck + racecheck
# of the chunked tests, with --ncu an Nsight Compute summary of one launch. Logs go to $OUT (default build-gpu/out).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-gpu}
out=${OUT:-$build/out}
mkdir -p "$out"
prefix_args=()
[ -d "$root/_carry/prefix" ] && prefix_args=(-DCMAKE_PREFIX_PATH="$root/_carry/prefix")
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
common=(-DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DVLA_ENABLE_CUDA=ON -DVLA_BUILD_CUDA_TESTS=ON
  -DVLA_BUILD_GPU_BENCH=ON -DVLA_BUILD_TESTS=OFF -DVLA_BUILD_BENCH=OFF -DVLA_BUILD_EXAMPLES=OFF
  -DVLA_BUILD_EXPERIMENTS=OFF "${prefix_args[@]}")
t0=$(date +%s)
cmake -S "$root" -B "$build" "${gen[@]}" "${common[@]}" >"$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
profile=${VLA_CHECK_PROFILE:-1}  # 0: no profile build
if [ "$profile" = 1 ]; then
  cmake -S "$root" -B "$build-prof" "${gen[@]}" "${common[@]}" -DCMAKE_CUDA_FLAGS=-DVLA_CUDA_CHUNKED_PROFILE=1 \
    >"$out/build-prof.log" 2>&1 || { tail -30 "$out/build-prof.log"; exit 1; }
  cmake --build "$build-prof" -j"$(nproc)" --target test_cuda_chunked >>"$out/build-prof.log" 2>&1 &
fi
cmake --build "$build" -j"$(nproc)" --target test_cuda_chunked vla_gpu_bench >>"$out/build.log" 2>&1 &
wait
[ -x "$build/tests/cuda/test_cuda_chunked" ] || { grep -E "error" "$out/build.log" | head -40; exit 1; }
echo "== built in $(( $(date +%s) - t0 )) s"
echo "== chunked tests"
(cd "$build/tests/cuda" && timeout 240 ./test_cuda_chunked -s >"$out/tests.log" 2>&1)
rc=$?
python3 "$root/bench/gpu/errors.py" "$out/tests.log" 2>/dev/null | head -60
grep -E "test cases|assertions|FAILED" "$out/tests.log" | tail -8
echo "== forward bench (ours)"
timeout 200 "$build/bench/gpu/vla_gpu_bench" --only-forward --csv "$out/ours.csv" 2>&1 | tee "$out/bench.log"
if [ "$profile" = 1 ]; then
  echo "== phase profile (A warps of CTA 0)"
  (cd "$build-prof/tests/cuda" && timeout 60 ./test_cuda_chunked "[long]" 2>&1 | grep -E "profile|passed|failed" | head)
fi
sanitize=0 ncu=0
for a in "$@"; do
  [ "$a" = "--sanitize" ] && sanitize=1
  [ "$a" = "--ncu" ] && ncu=1
done
if [ $ncu = 1 ]; then
  echo "== Nsight Compute: one chunked launch (T = 65,536, float tokens, [long])"
  (cd "$build/tests/cuda" && timeout 150 ncu --kernel-name regex:chunked_vla --launch-count 1 \
    --section SchedulerStats --section WarpStateStats \
    --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
    ./test_cuda_chunked "[long]" >"$out/ncu.log" 2>&1)
  grep -E "^ +[A-Z][A-Za-z /()%-]+ +[a-z/%]* +[0-9.,]+$" "$out/ncu.log" | head -20
  echo "   stall reasons (warps per issued instruction), largest first:"
  grep -E "smsp__average_warps_issue_stalled_" "$out/ncu.log" | awk '{print $NF, $1}' | sort -rn | head -12 |
    sed -E 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//; s/^/   /'
fi
if [ $sanitize = 1 ]; then
  cd "$build/tests/cuda"
  echo "== memcheck"
  timeout 150 compute-sanitizer --tool memcheck ./test_cuda_chunked "[split]" >"$out/memcheck.log" 2>&1
  tail -3 "$out/memcheck.log"
  echo "== racecheck"
  timeout 150 compute-sanitizer --tool racecheck --racecheck-report all --print-limit 400 ./test_cuda_chunked "[split]" \
    >"$out/racecheck.log" 2>&1
  tail -3 "$out/racecheck.log"
  echo "== racecheck: the distinct hazards (kind, writing and reading site)"
  grep -E "(Error|Warning): Race|(Write|Read) Thread" "$out/racecheck.log" |
    sed -E 's/^=+ *//; s/Thread \([0-9]+,0,0\) at //; s/\([^)]*\)//g; s/vla::cuda::detail:://g; s/\+0x[0-9a-f]+//' |
    sort | uniq -c | sort -rn | head -30
fi
exit $rc
