#!/usr/bin/env bash
# bench/gpu/sanitize_gpu.sh — compute-sanitizer's four tools (memcheck with leak check, racecheck,
# initcheck, synccheck) over the GPU tests, one device call. The tests between them launch every
# kernel instance (each op, token type and (dk, dv) pair, both VLA paths, the time split, decode,
# the state pool), on small shapes: the T = 65,536 cases ([long]) are left out, as is the fault test
# (it exhausts device memory on purpose, so the tools would count its refused allocations).
#
#   BUILD_DIR=… bash bench/gpu/sanitize_gpu.sh [tool ...]     (default: all four; logs to $OUT)
#
# Builds the test binaries if they are not there (as run_gpu.sh does). The four tools run side by
# side (three processes each: test_cuda_vla alone, the chunked and time-split tests, the rest),
# every run under its own time limit (VLA_SANITIZE_LIMIT seconds, default 170) so that one call
# ends in time: a run that hits it is reported as "timed out" with what it had checked. The table
# at the end has one row per (tool, binary): the tool's own summary line, and the tests' verdict
# under it. Then racecheck and synccheck on each probe of bench/gpu/racecheck_probe.cu, one
# process per probe (the reduced hand-over protocols; each checks every value it reads).
# VLA_SANITIZE_TAR=1 packs the logs into $out/sanitize_logs.tar.gz (fewer files to carry back).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-gpu}
out=${OUT:-$build/out}
limit=${VLA_SANITIZE_LIMIT:-170}
mkdir -p "$out"
tools=("$@")
[ ${#tools[@]} = 0 ] && tools=(memcheck racecheck initcheck synccheck)

bins=(test_cuda_vla test_cuda_chunked test_cuda_baselines test_cuda_decode test_cuda_time_split test_cuda_states test_cuda_backward)
filter() {  # the Catch2 filter per binary: everything but the long cases and the hidden ones
  # (an exclusion-only filter such as "~[long]" alone would also select hidden cases: the soak)
  case $1 in
    test_cuda_vla | test_cuda_chunked | test_cuda_time_split) echo "~[long]~[.]" ;;
    test_cuda_backward) echo "~[long]" ;;  # no hidden cases; T = 16384 left out
    *) echo "" ;;
  esac
}

if [ ! -x "$build/tests/cuda/test_cuda_states" ]; then
  prefix_args=()
  [ -d "$root/_carry/prefix" ] && prefix_args=(-DCMAKE_PREFIX_PATH="$root/_carry/prefix")
  gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  t0=$(date +%s)
  cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DVLA_ENABLE_CUDA=ON -DVLA_BUILD_CUDA_TESTS=ON -DVLA_BUILD_GPU_BENCH=ON -DVLA_BUILD_TESTS=OFF \
    -DVLA_BUILD_BENCH=OFF -DVLA_BUILD_EXAMPLES=OFF -DVLA_BUILD_EXPERIMENTS=OFF "${prefix_args[@]}" \
    >"$out/sanitize_build.log" 2>&1 || { tail -30 "$out/sanitize_build.log"; exit 1; }
  cmake --build "$build" -j"$(nproc)" >>"$out/sanitize_build.log" 2>&1 ||
    { grep -E "error" "$out/sanitize_build.log" | head -40; exit 1; }
  echo "== built in $(( $(date +%s) - t0 )) s"
fi

run_tool() {  # run_tool TOOL BINARY...: the binaries one after another
  local tool=$1 extra=()
  shift
  case $tool in
    memcheck) extra=(--leak-check full) ;;
    racecheck) extra=(--racecheck-report all) ;;
  esac
  for b in "$@"; do
    local log="$out/sanitize_${tool}_${b}.log" t0
    t0=$(date +%s)
    (cd "$build/tests/cuda" && timeout "$limit" compute-sanitizer --tool "$tool" "${extra[@]}" --print-limit 50 \
      "./$b" $(filter "$b") >"$log" 2>&1)
    echo "rc $? wall $(( $(date +%s) - t0 ))" >>"$log"
  done
}
t0=$(date +%s)
for tool in "${tools[@]}"; do  # three queues per tool: twelve processes for the four tools
  run_tool "$tool" test_cuda_vla &
  run_tool "$tool" test_cuda_chunked test_cuda_time_split test_cuda_backward &
  run_tool "$tool" test_cuda_baselines test_cuda_decode test_cuda_states &
done
probe=$build/bench/gpu/vla_racecheck_probe
if [ -x "$probe" ]; then
  # The stripped-down hand-over protocols: what racecheck and synccheck say of each, one at a time.
  (for i in $(seq 0 40); do
     "$probe" "$i" | grep -q "^probe" || break
     for tool in racecheck synccheck; do
       [[ " ${tools[*]} " == *" $tool "* ]] || continue
       extra=()
       [ "$tool" = racecheck ] && extra=(--racecheck-report all)
       r=$(timeout 60 compute-sanitizer --tool "$tool" "${extra[@]}" --print-limit 1 "$probe" "$i" 2>&1)
       name=$(grep -m1 "^probe" <<<"$r" | sed -E 's/^probe +//; s/ +(ran|unspecified|an illegal).*//')
       verdict=$(grep -m1 "^probe" <<<"$r" | sed -E 's/.* (ran|unspecified launch failure|an illegal[^,]*),/\1,/')
       summ=$(grep -E "(ERROR|RACECHECK) SUMMARY" <<<"$r" | head -1 | sed -E 's/^=+ *//')
       printf "| %-9s | %-50s | %-56s | %s\n" "$tool" "$name" "$summ" "$verdict"
     done
   done >"$out/sanitize_probes.log" 2>&1) &
fi
wait
echo "== compute-sanitizer, $(( $(date +%s) - t0 )) s (limit ${limit} s per run)"
printf "| %-9s | %-20s | %-44s | %-28s | %5s |\n" tool binary "tool summary" tests "s"
for tool in "${tools[@]}"; do
  for b in "${bins[@]}"; do
    log="$out/sanitize_${tool}_${b}.log"
    summ=$(grep -E "(ERROR|RACECHECK|LEAK) SUMMARY" "$log" | tail -1 | sed -E 's/^=+ *//')
    rc=$(sed -nE 's/^rc ([0-9]+) wall.*/\1/p' "$log")
    wall=$(sed -nE 's/^rc [0-9]+ wall ([0-9]+)/\1/p' "$log")
    tests=$(grep -E "^All tests passed|^test cases:" "$log" | tail -1 | cut -c1-28)
    [ "$rc" = 124 ] && summ="timed out; ${summ:-no summary}" tests="(stopped at ${limit} s)"
    printf "| %-9s | %-20s | %-44s | %-28s | %5s |\n" "$tool" "$b" "${summ:-none}" "${tests:-rc $rc}" "$wall"
  done
done
if [ -s "$out/sanitize_probes.log" ]; then
  echo "== the probes of bench/gpu/racecheck_probe.cu, one process each (each checks every value it reads)"
  cat "$out/sanitize_probes.log"
fi
echo "== distinct reports (tool: kind, site), most frequent first"
for tool in "${tools[@]}"; do
  grep -hE "^========= (Invalid|Race|Uninitialized|Barrier|Potential|Leaked|Error|Warning|Program hit)" \
    "$out"/sanitize_${tool}_*.log 2>/dev/null | sed -E "s/^=+ */$tool: /; s/0x[0-9a-f]+/0x…/g" | sort | uniq -c |
    sort -rn | head -12
done
echo "== sites (tool: kind at function, source line), most frequent first"
for tool in "${tools[@]}"; do
  grep -hE "^=========     (at|Write Thread|Read Thread) " "$out"/sanitize_${tool}_*.log 2>/dev/null |
    sed -E "s/^=+ */$tool: /; s/Thread \([0-9]+,0,0\) //; s/\+0x[0-9a-f]+//; s/\(vla::cuda::detail::RecurrentParams<T1>\)//" |
    sort | uniq -c | sort -rn | head -6
done
if [ "${VLA_SANITIZE_TAR:-0}" = 1 ]; then
  (cd "$out" && tar czf sanitize_logs.tar.gz sanitize_*.log && rm -f sanitize_*.log)
fi
