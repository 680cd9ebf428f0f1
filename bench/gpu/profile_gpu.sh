#!/usr/bin/env bash
# bench/gpu/profile_gpu.sh — after run_gpu.sh (same BUILD_DIR): compute-sanitizer racecheck on the
# pipelined forward and decode kernels, and the stall profile (Nsight Compute, clocks untouched) of
# one VLA forward launch (B=8, H=16, T=1024) and one VLA decode launch (B·H = 1024). Log: $OUT/profile.log
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-gpu}
out=${OUT:-$build/out}
log="$out/profile.log"
: >"$log"
cd "$build/tests/cuda"
timeout 90 compute-sanitizer --tool racecheck --print-limit 3 ./test_cuda_vla "vla: split sequences give the same bits" >>"$log" 2>&1
timeout 60 compute-sanitizer --tool racecheck --print-limit 3 ./test_cuda_decode "decode step through a state pool - vla::op::Vla" >>"$log" 2>&1
echo "== racecheck"; grep -E "RACECHECK SUMMARY|No test cases" "$log"
m="regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio,smsp__issue_active.avg.per_cycle_active"
for k in recurrent_kernel decode_kernel; do
  only=forward; [ $k = decode_kernel ] && only=decode
  echo "== ncu: $k" >>"$log"
  timeout 80 ncu --clock-control none --kernel-name regex:$k --launch-skip 1 --launch-count 1 --metrics "$m" \
    "$build/bench/gpu/vla_gpu_bench" --quick --only-$only >>"$log" 2>&1
  echo "== ncu $k: issue rate and the largest stall reasons (warps stalled per issued instruction)"
  sed -n "/== ncu: $k/,\$p" "$log" | grep -E "issue_active|issue_stalled" | awk '{print $NF, $1}' | sort -gr | head -9
done
