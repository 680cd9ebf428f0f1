#!/usr/bin/env bash
# bench/gpu/profile_gpu.sh — after run_gpu.sh (same BUILD_DIR): compute-sanitizer racecheck on the
# forward (test_cuda_vla's hidden [race1] / [race2] shapes: every VLA A-/S-warp count, all hazards
# reported with their source lines), on the variant build's forward where there is one, on the
# baselines and on the decode step (log: $OUT/race.log); then, unless --race-only, the stall
# profile (Nsight Compute, clocks untouched) of one VLA forward launch (B=8, H=16, T=1024) and one
# VLA decode launch (B·H = 1024) (log: $OUT/profile.log), and the VLA backward phase by phase
# (vla_backward_phases; $OUT/backward_phases.log).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-gpu}
out=${OUT:-$build/out}
race="$out/race.log"
: >"$race"
cd "$build/tests/cuda"
racecheck() {
  local bin=$1
  shift
  echo "== racecheck $bin $*" >>"$race"
  if [ ! -x "$bin" ]; then
    echo "   (not built)" >>"$race"
    return
  fi
  timeout 120 compute-sanitizer --tool racecheck --racecheck-report all --print-limit 12 "$bin" "$@" >>"$race" 2>&1
  echo "   exit $?" >>"$race"
}
racecheck ./test_cuda_vla "[race1]"
racecheck ./test_cuda_vla "[race2]"
racecheck ./test_cuda_vla_v1 "[race1]"
racecheck ./test_cuda_baselines "baselines: split and varlen - LinearAttention"
racecheck ./test_cuda_decode "decode step through a state pool - vla::op::Vla"
racecheck "$build/bench/gpu/vla_racecheck_probe"
echo "== racecheck: per run, the summary; then the distinct hazards (the writing and the reading site)"
grep -E "^== racecheck|RACECHECK SUMMARY|test cases|^   exit|^probe " "$race" | sed 's/^=========/   /'
grep -E "(Write|Read) Thread" "$race" |
  sed -E 's/^=+ *//; s/Thread \([0-9]+,0,0\) at //; s/\(const vla::cuda::detail::Recurrence[^)]*\)//; s/\([^)]*\)//g;
          s/vla::cuda::detail:://g; s/vla::op:://g; s/\(int\)//g; s/\(bool\)//g; s/\+0x[0-9a-f]+//' |
  sort | uniq -c | sort -rn | head -24

[ "${1:-}" = "--race-only" ] && exit 0
log="$out/profile.log"
: >"$log"
m="regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio,smsp__issue_active.avg.per_cycle_active"
for k in recurrent_kernel decode_warp_kernel; do
  only=forward; [ $k = decode_warp_kernel ] && only=decode
  echo "== ncu: $k" >>"$log"
  timeout 80 ncu --clock-control none --kernel-name regex:$k --launch-skip 1 --launch-count 1 --metrics "$m" \
    "$build/bench/gpu/vla_gpu_bench" --quick --only-$only >>"$log" 2>&1
  echo "== ncu $k: issue rate and the largest stall reasons (warps stalled per issued instruction)"
  sed -n "/== ncu: $k/,\$p" "$log" | grep -E "issue_active|issue_stalled" | awk '{print $NF, $1}' | sort -gr | head -9
done

# The VLA backward phase by phase (bench/gpu/backward_phases.cu: clock64 per phase, cycles per token).
if [ -x "$build/bench/gpu/vla_backward_phases" ]; then
  echo "== backward phases (d = 64 and 128)"
  for a in "8 16 4096 64" "8 16 2048 128"; do timeout 60 "$build/bench/gpu/vla_backward_phases" $a; done 2>&1 | tee "$out/backward_phases.log"
fi
if [ -x "$build/bench/gpu/vla_backward_phases_v1" ]; then
  echo "== backward phases, variant knobs (VLA_GPU_VARIANT_DEFS)"
  for a in "8 16 4096 64" "8 16 2048 128"; do timeout 60 "$build/bench/gpu/vla_backward_phases_v1" $a; done 2>&1 | tee "$out/backward_phases_v1.log"
fi
