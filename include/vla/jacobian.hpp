// vla/jacobian.hpp — the exact spectral norm of the recurrence Jacobian (docs/maths.md §5).
//
// S_t = S_{t−1}(I − k̂ α̂ᵀ) + v α̂ᵀ, so ∂S_t/∂S_{t−1} is right-multiplication by J = I − k̂ α̂ᵀ.
// For unit k̂, α̂ with c = k̂ᵀα̂:  ‖J‖₂² = (3 − 2c + √(5 − 4c)) / 2.
// ‖J‖₂ = 1 exactly when c = 1 (α̂ = k̂: A isotropic, or k̂ an eigenvector of A) and lies in (1, φ)
// for c ∈ (0, 1), φ = (1 + √5)/2. The paper's "Proposition 2" (‖J‖₂ = 1 at every step) is true
// only in the c = 1 case; in general the norm is above 1 and products of J still shrink.
#pragma once

#include <cmath>

#include "vla/detail/eigen_util.hpp"

namespace vla {

/// ‖I − k̂ α̂ᵀ‖₂ for unit k̂, α̂ with k̂ᵀα̂ = c ∈ [−1, 1].
template <class Scalar>
Scalar jacobian_norm(Scalar c) {
  using std::sqrt;
  return sqrt((Scalar(3) - Scalar(2) * c + sqrt(Scalar(5) - Scalar(4) * c)) / Scalar(2));
}

/// c = k̂ᵀα̂ with α = A k̂: how closely the write direction follows the key (1 = identical).
/// Returns 1 for a zero key or zero α: such a step writes nothing, and its Jacobian is I.
template <class Scalar>
Scalar write_alignment(const Matrix<Scalar>& A, const VectorCRef<Scalar>& k) {
  const Scalar kf = detail::unit_factor<Scalar>(k);
  if (kf == Scalar(0)) return Scalar(1);
  const Vector<Scalar> khat = k * kf;
  const Vector<Scalar> alpha = A.template selfadjointView<Eigen::Lower>() * khat;
  const Scalar af = detail::unit_factor<Scalar>(alpha);
  if (af == Scalar(0)) return Scalar(1);
  return khat.dot(alpha) * af;
}

/// The golden ratio φ, the supremum of ‖J‖₂ over SPD A.
template <class Scalar>
constexpr Scalar golden_ratio() {
  return Scalar(1.6180339887498948482045868343656381L);
}

}  // namespace vla
