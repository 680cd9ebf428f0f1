// vla/penalty_inverse.hpp — A = M⁻¹ for the penalty M = λ0·I + Σ û ûᵀ, kept by Sherman–Morrison.
#pragma once

#include <Eigen/Cholesky>
#include <Eigen/Eigenvalues>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "vla/detail/eigen_util.hpp"

namespace vla {

/// The inverse penalty A (dk×dk, symmetric positive definite) of SPEC section 2, step 2–3.
///
/// Rank-1 updates are applied as A ← A − s sᵀ with s = A d / √δ, so every update is bitwise
/// symmetric (s_i s_j == s_j s_i); A never drifts from symmetry through rounding.
template <class Scalar>
class PenaltyInverse {
 public:
  using MatrixType = Matrix<Scalar>;
  using VectorType = Vector<Scalar>;

  /// A = I / lambda0.
  PenaltyInverse(Eigen::Index dk, Scalar lambda0) {
    if (dk <= 0) throw std::invalid_argument("vla::PenaltyInverse: dk must be > 0");
    if (!std::isfinite(lambda0) || !(lambda0 > 0))
      throw std::invalid_argument("vla::PenaltyInverse: lambda0 must be finite and > 0");
    a_ = MatrixType::Identity(dk, dk) / lambda0;
    w_.resize(dk);
  }

  /// Restores a saved A. Throws unless A is square, finite, symmetric and positive definite.
  explicit PenaltyInverse(MatrixType a) : a_(std::move(a)) {
    check_spd(a_);
    w_.resize(a_.rows());
  }

  Eigen::Index dim() const { return a_.rows(); }
  /// The full symmetric A.
  const MatrixType& matrix() const {
    if (upper_stale_) {
      a_.template triangularView<Eigen::StrictlyUpper>() = a_.transpose();
      upper_stale_ = false;
    }
    return a_;
  }

  /// Sherman–Morrison with direction d, used as given (VlaState passes û = u/‖u‖/√dk):
  ///   w = A d;  δ = max(1 + dᵀw, stab_eps);  A ← A − w wᵀ / δ.   Returns δ.
  /// Unchecked: d must have dim() finite entries (VlaState validates before calling).
  Scalar update(const VectorCRef<Scalar>& d, Scalar stab_eps) {
    w_.noalias() = a_.template selfadjointView<Eigen::Lower>() * d;
    const Scalar delta = rules::sm_denominator<Scalar>(Scalar(1) + d.dot(w_), stab_eps);
    w_ *= Scalar(1) / std::sqrt(delta);
    // A -= s sᵀ on the lower triangle only: half the stores, and A stays exactly symmetric.
    // Every product reads only the lower triangle; the upper one is mirrored when matrix() asks.
    a_.template selfadjointView<Eigen::Lower>().rankUpdate(w_, Scalar(-1));
    upper_stale_ = true;
    return delta;
  }

  /// A ← A + eps·I (SPEC 2.3).
  void refresh(Scalar eps) { a_.diagonal().array() += eps; }

  /// out = A x.
  template <class Out>
  void apply(const VectorCRef<Scalar>& x, Out&& out) const {
    out.noalias() = a_.template selfadjointView<Eigen::Lower>() * x;
  }
  VectorType apply(const VectorCRef<Scalar>& x) const {
    VectorType out(dim());
    apply(x, out);
    return out;
  }

  /// cond₂(A) = λmax/λmin, estimated cheaply (SPEC 6): power iteration for λmax(A), inverse power
  /// iteration through one Cholesky factorisation for λmin(A). `iterations` each; 20 gives a few
  /// digits for the condition numbers that matter (large ones converge fastest). Returns +inf when
  /// A is no longer numerically positive definite — the event the diagnostic exists to catch.
  Scalar condition_estimate(int iterations = 20) const {
    const Eigen::Index n = dim();
    const MatrixType& a = matrix();
    Eigen::LLT<MatrixType> llt(a);
    if (llt.info() != Eigen::Success) return std::numeric_limits<Scalar>::infinity();
    // Start from a fixed, non-degenerate vector: deterministic and not orthogonal to any eigvector
    // in general position.
    VectorType x = VectorType::LinSpaced(n, Scalar(1), Scalar(2)).normalized();
    VectorType y = x;
    Scalar lmax = 0, inv_lmin = 0;
    for (int i = 0; i < iterations; ++i) {
      VectorType ax = a * x;
      lmax = ax.norm();
      x = ax / lmax;
      VectorType ay = llt.solve(y);
      inv_lmin = ay.norm();
      y = ay / inv_lmin;
    }
    return lmax * inv_lmin;
  }

  /// Exact cond₂(A) from a symmetric eigen-solve, O(dk³): the ground truth for the estimate.
  Scalar condition_exact() const {
    Eigen::SelfAdjointEigenSolver<MatrixType> es(matrix(), Eigen::EigenvaluesOnly);
    const Scalar lo = es.eigenvalues().minCoeff(), hi = es.eigenvalues().maxCoeff();
    return lo > 0 ? hi / lo : std::numeric_limits<Scalar>::infinity();
  }

  /// Throws std::invalid_argument unless `a` is a valid A: square, finite, symmetric (to a few
  /// ulps of its scale) and positive definite.
  static void check_spd(const MatrixType& a) {
    if (a.rows() == 0 || a.rows() != a.cols())
      throw std::invalid_argument("vla::PenaltyInverse: A must be square and non-empty");
    detail::require_finite(a, "A");
    const Scalar scale = a.cwiseAbs().maxCoeff();
    const Scalar tol = Scalar(64) * std::numeric_limits<Scalar>::epsilon() * scale;
    if (((a - a.transpose()).cwiseAbs().array() > tol).any())
      throw std::invalid_argument("vla::PenaltyInverse: A must be symmetric");
    Eigen::LLT<MatrixType> llt(a);
    if (llt.info() != Eigen::Success)
      throw std::invalid_argument("vla::PenaltyInverse: A must be positive definite");
  }

 private:
  mutable MatrixType a_;         // lower triangle authoritative; upper mirrored on demand
  mutable bool upper_stale_ = false;
  VectorType w_;  // scratch: keeps update() free of allocations
};

}  // namespace vla
