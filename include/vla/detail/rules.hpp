// vla/detail/rules.hpp — the scalar rules of docs/maths.md §2 that every backend shares.
//
// The Eigen backend and the CUDA kernels express the matrix work differently (Eigen expressions vs
// warp-level loops), but the scalar decisions — when to refresh, how δ and the output normaliser are
// floored, when a vector counts as zero and how it is normalised — are written once, here, and
// compiled for host and device alike. A change to any of them changes every backend together.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define VLA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define VLA_HOST_DEVICE inline
#endif

namespace vla {
namespace rules {

/// Step `t` (0-based, counted before the step) ends with A ← A + ε_refresh·I (docs/maths.md §2.3).
VLA_HOST_DEVICE constexpr bool refresh_due(std::int64_t t, int refresh_period) {
  return refresh_period > 0 && (t + 1) % refresh_period == 0;
}

/// δ = max(1 + ûᵀAû, ε_stab) (docs/maths.md §2.2). δ ≥ 1 for SPD A; the floor only guards rounding.
template <class T>
VLA_HOST_DEVICE T sm_denominator(T one_plus_uAu, T stab_eps) {
  return one_plus_uAu > stab_eps ? one_plus_uAu : stab_eps;
}

/// max(zᵀq, ε_den) (docs/maths.md §2.6).
template <class T>
VLA_HOST_DEVICE T output_denominator(T zq, T denom_eps) {
  return zq > denom_eps ? zq : denom_eps;
}

/// Scale-safe normalisation, in two reductions so that no finite input overflows or underflows:
///   m = max_i |x_i|,  s = Σ (x_i / m)²,  x̂ = x · normalize_factor(m, s).
/// Returns 0 when x counts as zero: m == 0, or m so small (subnormal) that 1/m is not finite.
/// A zero vector is defined behaviour (docs/maths.md §2): a zero key or zero α writes nothing, a zero
/// penalty direction leaves A unchanged. `extra` is a further factor (1/√dk for û).
template <class T>
VLA_HOST_DEVICE T inverse_max(T max_abs) {
  // 1/m, or 0 where x counts as zero. Written without std::isfinite so it compiles for the device.
  if (!(max_abs > T(0))) return T(0);
  const T r = T(1) / max_abs;
  return (r - r == T(0)) ? r : T(0);  // inf - inf is NaN: subnormal m counts as zero
}

/// x is finite (neither inf nor NaN). Written without std::isfinite so it compiles for the device:
/// inf − inf and NaN − NaN are NaN, which compares unequal to 0.
template <class T>
VLA_HOST_DEVICE bool is_finite(T x) {
  return x - x == T(0);
}

/// docs/maths.md §2.6 for a finite q whose products overflow (S q or zᵀq not finite, e.g. |q| ~ 1e30 in
/// float): with the normaliser on, o = S q / max(zᵀq, ε_den) is homogeneous of degree 0 in q, so
/// it equals the same function of q̃ = q / m, m = max|q|, with the floor scaled by m:
///   o = S q̃ / zᵀq̃           when zᵀq̃ · m > ε_den,
///   o = S q̃ · (m / ε_den)    otherwise (the floor binds: max(zᵀq, ε) = ε).
/// One entry of o from sq_scaled = (S q̃)_i, zq_scaled = zᵀq̃ and q_max = m. Backends take this
/// path only when a product is not finite; the common path is o = S q / output_denominator(zᵀq).
template <class T>
VLA_HOST_DEVICE T rescaled_output(T sq_scaled, T zq_scaled, T q_max, T denom_eps) {
  return zq_scaled * q_max > denom_eps ? sq_scaled / zq_scaled : sq_scaled * (q_max / denom_eps);
}

template <class T>
VLA_HOST_DEVICE T normalize_factor(T inv_max, T scaled_sumsq, T extra = T(1)) {
  // scaled_sumsq = Σ (x_i·inv_max)² ∈ [1, n] whenever inv_max > 0.
  if (!(inv_max > T(0)) || !(scaled_sumsq > T(0))) return T(0);
  using std::sqrt;
  return inv_max * extra / sqrt(scaled_sumsq);
}

}  // namespace rules
}  // namespace vla
