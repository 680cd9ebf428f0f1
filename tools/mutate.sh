#!/usr/bin/env bash
# tools/mutate.sh — mutation check of the CPU test suite: plants known bugs in the library, one at a
# time, and checks that the tests catch each (issue 13). Not run by CI; run it after changing the
# tests or the code a mutation patches.
#
# Usage: bash tools/mutate.sh [NAME...]     (no NAME: every mutation; `--list` prints the names)
# Environment:
#   MUTATE_DIR   scratch folder (default /tmp/vla-mutate; wiped at start). The real tree is never
#                modified: include/ and tests/ are copied there, and each mutation patches its own copy.
#   JOBS         mutations built in parallel (default: nproc)
#   CXX          compiler (default c++); MUTATE_CXXFLAGS replaces the flags "-O2 -march=native"
#
# How: for each mutation, a literal search-and-replace (replace_once: the search text must occur
# exactly once in the file, or the script fails loudly — so it cannot rot silently when the code
# moves) in a fresh copy; then the test files that should catch it are compiled with tests/main.cpp
# (Catch2's runner, compiled once) into one binary, which is run whole. The same binaries are first
# built and run without any mutation, and must pass. Prints "mutation | caught / NOT CAUGHT";
# exits 1 if any mutation was not caught, 2 on a setup error (unmutated tests failing, a patch that
# does not apply, a mutant that does not compile).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=${MUTATE_DIR:-/tmp/vla-mutate}
jobs=${JOBS:-$(nproc)}
cxx=${CXX:-c++}
read -r -a cxxflags <<<"${MUTATE_CXXFLAGS:--O2 -march=native}"
read -r -a eigen <<<"$(pkg-config --cflags eigen3 2>/dev/null || echo -I/usr/include/eigen3)"

# ---- The mutations: name | tests that must catch it | what it plants. Each is a function mut_<name>
# run inside its copy's root. The first eight are the ones issue 13 found uncaught; the rest are
# cheap extras of kinds already caught, kept as a control.
names=(scan_skips_odd_blocks denominator_abs rescaled_floor_abs monitored_inplace_no_record
       deltanet_zero_key_zero_output cond_estimate_zero exact_cond_in_float float_accepts_huge_refresh_eps
       alias_reload_after_write
       denominator_floor_at_zero rescaled_floor_unscaled refresh_off_by_one float_accepts_tiny_denom_eps)

declare -A tests what
tests[scan_skips_odd_blocks]="test_invalid_input"
what[scan_skips_odd_blocks]="require_finite_buffer scans only every other 4096-value block"
tests[denominator_abs]="test_edge_cases"
what[denominator_abs]="output denominator max(|zq|, eps) instead of max(zq, eps)"
tests[rescaled_floor_abs]="test_edge_cases"
what[rescaled_floor_abs]="huge-q rescaled output floors |zq~| instead of zq~"
tests[monitored_inplace_no_record]="test_diagnostics"
what[monitored_inplace_no_record]="Monitored's in-place step does not record"
tests[deltanet_zero_key_zero_output]="test_edge_cases"
what[deltanet_zero_key_zero_output]="DeltaNet step with a zero key outputs 0, not S q"
tests[cond_estimate_zero]="test_penalty_inverse"
what[cond_estimate_zero]="condition_estimate returns 0 (not +inf) for a non-SPD A"
tests[exact_cond_in_float]="test_diagnostics"
what[exact_cond_in_float]="diagnostics' exact cond eigen-solves in the state's scalar, not double"
tests[float_accepts_huge_refresh_eps]="test_config"
what[float_accepts_huge_refresh_eps]="validate_for<float> accepts a refresh_eps that overflows float"
tests[alias_reload_after_write]="test_forward"
what[alias_reload_after_write]="forward writes fresh final states, then reloads the initial ones (breaks aliasing)"
tests[denominator_floor_at_zero]="test_edge_cases"
what[denominator_floor_at_zero]="(extra) output denominator floored at 0: zq used when 0 < zq < eps"
tests[rescaled_floor_unscaled]="test_edge_cases"
what[rescaled_floor_unscaled]="(extra) huge-q floor branch forgets the max|q| factor"
tests[refresh_off_by_one]="test_penalty_inverse"
what[refresh_off_by_one]="(extra, already caught) refresh after step t with t % period == 0"
tests[float_accepts_tiny_denom_eps]="test_edge_cases"
what[float_accepts_tiny_denom_eps]="(extra, already caught) validate_for<float> accepts a denom_eps that underflows"

# replace_once FILE OLD NEW: replaces the literal text OLD (may span lines) by NEW; fails unless
# OLD occurs exactly once, or if the file is unchanged afterwards.
replace_once() {
  local file=$1
  [[ -f $file ]] || { echo "mutate.sh: $file not found" >&2; return 1; }
  local before
  before=$(cksum <"$file")
  OLD=$2 NEW=$3 perl -0777 -i -pe '
    my $n = () = /\Q$ENV{OLD}\E/g;
    die "mutate.sh: pattern found $n times (want 1) in $ARGV:\n$ENV{OLD}\n" if $n != 1;
    s/\Q$ENV{OLD}\E/$ENV{NEW}/;' "$file"
  [[ $(cksum <"$file") != "$before" ]] || { echo "mutate.sh: $file unchanged" >&2; return 1; }
}

mut_scan_skips_odd_blocks() {
  replace_once include/vla/backend/cpu.hpp \
    'for (std::int64_t b0 = 0; b0 < n; b0 += block) {' \
    'for (std::int64_t b0 = 0; b0 < n; b0 += 2 * block) {'
}
mut_denominator_abs() {
  replace_once include/vla/detail/rules.hpp \
    'return zq > denom_eps ? zq : denom_eps;' \
    'return (zq < T(0) ? -zq : zq) > denom_eps ? (zq < T(0) ? -zq : zq) : denom_eps;'
}
mut_rescaled_floor_abs() {
  replace_once include/vla/detail/rules.hpp \
    'return zq_scaled * q_max > denom_eps ? sq_scaled / zq_scaled : sq_scaled * (q_max / denom_eps);' \
    'const T a = zq_scaled < T(0) ? -zq_scaled : zq_scaled; return a * q_max > denom_eps ? sq_scaled / a : sq_scaled * (q_max / denom_eps);'
}
mut_monitored_inplace_no_record() {
  replace_once include/vla/diagnostics.hpp \
    '    state_.step(q, k, v, u, std::forward<Out>(o));
    rec_.observe(state_, k);' \
    '    state_.step(q, k, v, u, std::forward<Out>(o));'
}
mut_deltanet_zero_key_zero_output() {
  replace_once include/vla/baselines.hpp \
    '    } else {
      detail::matvec(s_.data(), dv(), dk(), q.data(), sq_.data());
    }
    o = sq_;' \
    '    } else {
      sq_.setZero();
    }
    o = sq_;'
}
mut_cond_estimate_zero() {
  replace_once include/vla/penalty_inverse.hpp \
    'if (llt.info() != Eigen::Success) return std::numeric_limits<Scalar>::infinity();' \
    'if (llt.info() != Eigen::Success) return Scalar(0);'
}
mut_exact_cond_in_float() {
  replace_once include/vla/diagnostics.hpp \
    'Eigen::SelfAdjointEigenSolver<Matrix<double>> es(a.template cast<double>(), Eigen::EigenvaluesOnly);' \
    'Eigen::SelfAdjointEigenSolver<Matrix<Scalar>> es(a, Eigen::EigenvaluesOnly);'
}
mut_float_accepts_huge_refresh_eps() {
  replace_once include/vla/config.hpp \
    '    if (!std::isfinite(static_cast<Scalar>(refresh_eps))) bad("refresh_eps", msg);
' ''
}
mut_alias_reload_after_write() {
  # After every initial state has been validated, write the fresh state to every final state and
  # load the initial states again: harmless with separate buffers, wrong when they alias.
  replace_once include/vla/backend/cpu.hpp \
    '    // Time-blocked: every pair of a thread runs kTimeBlock tokens' \
    '    if (a.final_state.S) {
      ForwardArgs<Scalar> fresh = a;
      fresh.initial_state = {};
      for (std::int64_t p = 0; p < pairs; ++p) Ops::store(Ops::make(fresh, cfg, opt, p), a, p);
      states.clear();
      for (std::int64_t p = 0; p < pairs; ++p) states.push_back(Ops::make(a, cfg, opt, p));
    }
    // Time-blocked: every pair of a thread runs kTimeBlock tokens'
}
mut_denominator_floor_at_zero() {
  replace_once include/vla/detail/rules.hpp \
    'return zq > denom_eps ? zq : denom_eps;' \
    'return zq > T(0) ? zq : denom_eps;'
}
mut_rescaled_floor_unscaled() {
  replace_once include/vla/detail/rules.hpp \
    ': sq_scaled * (q_max / denom_eps);' \
    ': sq_scaled / denom_eps;'
}
mut_refresh_off_by_one() {
  replace_once include/vla/detail/rules.hpp \
    'return refresh_period > 0 && (t + 1) % refresh_period == 0;' \
    'return refresh_period > 0 && t % refresh_period == 0;'
}
mut_float_accepts_tiny_denom_eps() {
  replace_once include/vla/config.hpp \
    '    if (!(static_cast<Scalar>(denom_eps) > 0)) bad("denom_eps", msg);
' ''
}

if [[ ${1:-} == --list ]]; then
  for n in "${names[@]}"; do printf '%-32s %-22s %s\n' "$n" "${tests[$n]}" "${what[$n]}"; done
  exit 0
fi
selected=("${@:-${names[@]}}")
for n in "${selected[@]}"; do
  [[ -n ${tests[$n]:-} ]] || { echo "mutate.sh: unknown mutation '$n' (--list)" >&2; exit 2; }
done

rm -rf "$work"
mkdir -p "$work/pristine"
cp -r "$root/include" "$root/tests" "$work/pristine/"
echo "mutate.sh: work in $work, $jobs jobs, $cxx ${cxxflags[*]}"
"$cxx" -std=c++17 "${cxxflags[@]}" -c "$root/tests/main.cpp" -o "$work/main.o"

# build_run DIR TESTS...: compiles DIR's tests/<T>.cpp with main.o into DIR/tests.bin and runs it.
# Writes DIR/status: pass | fail | build.
build_run() {
  local dir=$1
  shift
  local srcs=()
  for t in "$@"; do srcs+=("$dir/tests/$t.cpp"); done
  if ! "$cxx" -std=c++17 "${cxxflags[@]}" -w -I"$dir/include" -I"$dir/tests" "${eigen[@]}" \
      -DVLA_FIXTURE_DIR="\"$dir/tests/fixtures\"" "${srcs[@]}" "$work/main.o" -o "$dir/tests.bin" -pthread \
      >"$dir/build.log" 2>&1; then
    echo build >"$dir/status"
    return
  fi
  if timeout 600 "$dir/tests.bin" >"$dir/run.log" 2>&1; then echo pass >"$dir/status"; else echo fail >"$dir/status"; fi
}

# A slot for a background job (at most $jobs at once).
wait_slot() { while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done; }

# 1. The unmutated tests must pass.
declare -A need=()
for n in "${selected[@]}"; do for t in ${tests[$n]}; do need[$t]=1; done; done
for t in "${!need[@]}"; do
  dir="$work/base-$t"
  mkdir -p "$dir" && cp -r "$work/pristine/include" "$work/pristine/tests" "$dir/"
  wait_slot
  build_run "$dir" "$t" &
done
wait
bad=0
for t in "${!need[@]}"; do
  s=$(cat "$work/base-$t/status")
  if [[ $s != pass ]]; then
    echo "mutate.sh: unmutated $t: $s (see $work/base-$t/*.log)" >&2
    bad=1
  fi
done
((bad == 0)) || exit 2

# 2. Each mutation in its own copy.
for n in "${selected[@]}"; do
  dir="$work/m-$n"
  mkdir -p "$dir" && cp -r "$work/pristine/include" "$work/pristine/tests" "$dir/"
  if ! (cd "$dir" && "mut_$n") >"$dir/patch.log" 2>&1; then
    echo patch >"$dir/status"
    continue
  fi
  diff -ru "$work/pristine/include" "$dir/include" >"$dir/mutation.diff" || true
  wait_slot
  # shellcheck disable=SC2086
  build_run "$dir" ${tests[$n]} &
done
wait

printf '\n%-32s | %-13s | %-22s | %s\n' mutation result tests "what it plants"
printf '%s\n' "---------------------------------+---------------+------------------------+----------------"
missed=0 broken=0
for n in "${selected[@]}"; do
  s=$(cat "$work/m-$n/status")
  case $s in
    fail) r="caught" ;;
    pass) r="NOT CAUGHT"; missed=1 ;;
    build) r="BUILD FAILED"; broken=1 ;;
    patch) r="PATCH FAILED"; broken=1 ;;
  esac
  printf '%-32s | %-13s | %-22s | %s\n' "$n" "$r" "${tests[$n]}" "${what[$n]}"
done
if ((broken)); then
  echo "mutate.sh: some mutations did not apply or build (see $work/m-*/patch.log, build.log)" >&2
  exit 2
fi
((missed == 0)) || { echo "mutate.sh: some mutations were NOT CAUGHT" >&2; exit 1; }
echo "mutate.sh: all ${#selected[@]} mutations caught"
