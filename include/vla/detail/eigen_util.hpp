// vla/detail/eigen_util.hpp — small Eigen helpers shared by the CPU classes.
#pragma once

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "vla/detail/rules.hpp"

// VLA_NOINLINE marks each state's public step (VlaState, LinearAttentionState, DeltaNetState ::step):
// one compiled copy per output type, whoever calls it. Inlined copies of the same float code may
// contract a·b + c into FMAs differently in different callers — GCC 12 with -march=native on an
// Intel Xeon (AVX-512) did, when one function stepped two states on the same inputs and merged their
// common subexpressions: the Monitored wrapper's outputs differed from the plain state's in the last
// bit (tests/test_diagnostics.cpp) — and diagnostics are promised to change no bit. The batched
// forward calls step_unchecked inline: out of line, that measured 7–9 % slower there.
#if defined(__GNUC__) || defined(__clang__)
#define VLA_NOINLINE __attribute__((noinline))
#elif defined(_MSC_VER)
#define VLA_NOINLINE __declspec(noinline)
#else
#define VLA_NOINLINE
#endif

namespace vla {

template <class Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
/// Read-only view of any vector-like argument (Eigen vector, Map, segment, column).
template <class Scalar>
using VectorCRef = Eigen::Ref<const Vector<Scalar>>;

namespace detail {

/// The factor f with x̂ = f·x (rules::normalize_factor), 0 when x counts as zero.
/// Fast path: one pass for ‖x‖² when it is comfortably inside the normal range (no square can
/// have overflowed, and underflowed squares are below rounding of the sum); otherwise the
/// two-reduction scaled form of rules::normalize_factor, which is safe for every finite x.
template <class Scalar, class Derived>
Scalar unit_factor(const Eigen::MatrixBase<Derived>& x, Scalar extra = Scalar(1)) {
  using L = std::numeric_limits<Scalar>;
  const Scalar ss = x.squaredNorm();
  if (ss > L::min() / L::epsilon() && ss < L::max() / Scalar(4)) return extra / std::sqrt(ss);
  const Scalar inv_max = rules::inverse_max<Scalar>(x.cwiseAbs().maxCoeff());
  if (inv_max == Scalar(0)) return Scalar(0);
  return rules::normalize_factor<Scalar>(inv_max, (x * inv_max).squaredNorm(), extra);
}

/// docs/maths.md §2.6's output from sq = S q (S already updated): o = sq / max(zᵀq, ε_den), or o = sq when
/// the normaliser is off. With the normaliser on, o is homogeneous of degree 0 in q, so when S q or
/// zᵀq overflow for huge (finite) q the output is recomputed from q/max|q| with the floor scaled to
/// match — the same function, without an inf/inf. The common path is untouched.
template <class Scalar, class Out>
void finish_output(const Matrix<Scalar>& s, const Vector<Scalar>& z, const VectorCRef<Scalar>& q,
                   const Vector<Scalar>& sq, bool normalize, Scalar denom_eps, Out&& o) {
  if (!normalize) {
    o = sq;
    return;
  }
  const Scalar zq = z.dot(q);
  if (std::isfinite(zq) && sq.allFinite()) {
    o = sq / rules::output_denominator<Scalar>(zq, denom_eps);
    return;
  }
  const Scalar m = q.cwiseAbs().maxCoeff();  // huge: its reciprocal is a normal number
  const Vector<Scalar> qs = q / m;
  const Scalar zqs = z.dot(qs);
  // max(m·zqs, ε)  ⇒  o = S qs / zqs when m·zqs > ε, else o = S qs · (m / ε) (rules::rescaled_output,
  // the rule the CUDA kernels apply too).
  const Vector<Scalar> sqs = s * qs;
  o = sqs.unaryExpr([&](Scalar x) { return rules::rescaled_output<Scalar>(x, zqs, m, denom_eps); });
}

/// Whether every entry is finite, in one vectorised pass: 0·x is 0 for a finite x and NaN for an
/// infinite or NaN one, and a sum of zeros is exactly 0. (Eigen's allFinite compares x − x with itself
/// entry by entry; on the backward's token matrices this is a few times faster.)
template <class Derived>
bool all_finite(const Eigen::DenseBase<Derived>& x) {
  using Scalar = typename Derived::Scalar;
  return (x.derived().array() * Scalar(0)).sum() == Scalar(0);
}

template <class Derived>
void require_finite(const Eigen::MatrixBase<Derived>& x, const char* what) {
  if (!x.allFinite()) throw std::invalid_argument(std::string("vla: ") + what + " has a non-finite entry");
}

inline void require_size(Eigen::Index got, Eigen::Index want, const char* what) {
  if (got != want)
    throw std::invalid_argument(std::string("vla: ") + what + " has size " + std::to_string(got) +
                                ", expected " + std::to_string(want));
}

}  // namespace detail
}  // namespace vla
