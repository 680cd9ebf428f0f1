// vla/penalty_inverse.hpp — A = M⁻¹ for the penalty M = λ0·I + Σ û ûᵀ, kept by Sherman–Morrison.
#pragma once

#include <Eigen/Cholesky>
#include <Eigen/Eigenvalues>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "vla/detail/cpu_kernels.hpp"
#include "vla/detail/eigen_util.hpp"

namespace vla {

/// The inverse penalty A (dk×dk, symmetric positive definite) of docs/maths.md §2, steps 2–4.
///
/// Rank-1 updates are applied as A ← A − s sᵀ with s = A d / √δ, so element (i, j) and (j, i)
/// come from the same product s_i·s_j and A stays symmetric through rounding.
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
    neg_w_.resize(dk);
  }

  /// Restores a saved A. Throws unless A is square, finite, symmetric, with a positive diagonal,
  /// and (when check_positive_definite, the default) positive definite by a Cholesky
  /// factorisation — O(dk³), which a decode loop restoring states vla itself wrote may skip.
  explicit PenaltyInverse(MatrixType a, bool check_positive_definite = true) : a_(std::move(a)) {
    check_spd(a_, check_positive_definite);
    w_.resize(a_.rows());
    neg_w_.resize(a_.rows());
  }

  Eigen::Index dim() const { return a_.rows(); }
  /// The full symmetric A.
  const MatrixType& matrix() const { return a_; }
  /// s = A_old d / √δ of the last update_apply with a direction (A_new = A_old − s sᵀ before the
  /// refresh): what the backward keeps of a step to undo it (docs/maths.md §9d). Stale after an
  /// update_apply without a direction.
  const VectorType& last_s() const { return w_; }

  /// Sherman–Morrison with direction d, used as given (VlaState passes û = u/‖u‖/√dk):
  ///   w = A d;  δ = max(1 + dᵀw, stab_eps);  A ← A − w wᵀ / δ.   Returns δ.
  /// Unchecked: d must have dim() finite entries (VlaState validates before calling).
  Scalar update(const VectorCRef<Scalar>& d, Scalar stab_eps) {
    return update_apply(d.data(), stab_eps, false, Scalar(0), nullptr, nullptr);
  }

  /// A ← A + eps·I (docs/maths.md §2.3).
  void refresh(Scalar eps) { a_.diagonal().array() += eps; }

  /// out = A x.
  template <class Out>
  void apply(const VectorCRef<Scalar>& x, Out&& out) const {
    out.noalias() = a_ * x;
  }
  VectorType apply(const VectorCRef<Scalar>& x) const {
    VectorType out(dim());
    apply(x, out);
    return out;
  }

  /// docs/maths.md §2 steps 2–4 fused, on raw pointers of dim() entries (the CPU step's hot path):
  /// the Sherman–Morrison update with direction d (skipped when d is null), then the refresh
  /// A ← A + refresh_eps·I when `refresh`, then out = A x (skipped when x is null).
  /// One read pass computes A d and A x together; out is formed as A_old x − s (sᵀx) + ε x,
  /// equal to A_new x in exact arithmetic, so the rank-1 write is the only second pass.
  /// Returns δ (1 when d is null).
  Scalar update_apply(const Scalar* d, Scalar stab_eps, bool refresh, Scalar refresh_eps, const Scalar* x,
                      Scalar* out) {
    const Eigen::Index n = dim();
    Scalar delta = 1;
    if (d) {
      // A d goes through the same dual pass with or without x (x = d when absent, its result
      // unused), so A's update is bitwise independent of whether this step has a key.
      detail::dual_matvec(a_.data(), n, n, d, x ? x : d, w_.data(), x ? out : neg_w_.data());
      delta = rules::sm_denominator<Scalar>(Scalar(1) + detail::dot(d, w_.data(), n), stab_eps);
      w_ *= Scalar(1) / std::sqrt(delta);  // s
      if (x) {
        const Scalar sx = detail::dot(w_.data(), x, n);
        for (Eigen::Index i = 0; i < n; ++i) out[i] -= w_[i] * sx;
      }
      neg_w_ = -w_;
      detail::rank1_update(a_.data(), n, n, neg_w_.data(), w_.data());
    } else if (x) {
      detail::dual_matvec(a_.data(), n, n, x, x, out, neg_w_.data());
    }
    if (refresh) {
      a_.diagonal().array() += refresh_eps;
      if (x)
        for (Eigen::Index i = 0; i < n; ++i) out[i] += refresh_eps * x[i];
    }
    return delta;
  }

  /// cond₂(A) = λmax/λmin, estimated cheaply (docs/maths.md §6): power iteration for λmax(A), inverse power
  /// iteration through one Cholesky factorisation for λmin(A). `iterations` each; 20 gives a few
  /// digits for the condition numbers that matter (large ones converge fastest). Returns +inf when
  /// A is no longer numerically positive definite — the event the diagnostic exists to catch.
  /// Both iterations converge from below, so the estimate is a lower bound of the true cond(A):
  /// within a few per cent for well-separated extreme eigenvalues, up to ~20 % low when they are
  /// clustered (measured); condition_exact() is the ground truth.
  Scalar condition_estimate(int iterations = 20) const {
    const Eigen::Index n = dim();
    const MatrixType& a = a_;
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
    Eigen::SelfAdjointEigenSolver<MatrixType> es(a_, Eigen::EigenvaluesOnly);
    const Scalar lo = es.eigenvalues().minCoeff(), hi = es.eigenvalues().maxCoeff();
    return lo > 0 ? hi / lo : std::numeric_limits<Scalar>::infinity();
  }

  /// Throws std::invalid_argument unless `a` is a valid A: square, finite, symmetric (to a few
  /// ulps of its scale), with a positive diagonal, and positive definite (the O(dk³) part, skipped
  /// when !positive_definite).
  static void check_spd(const MatrixType& a, bool positive_definite = true) {
    if (a.rows() == 0 || a.rows() != a.cols())
      throw std::invalid_argument("vla::PenaltyInverse: A must be square and non-empty");
    detail::require_finite(a, "A");
    const Scalar scale = a.cwiseAbs().maxCoeff();
    const Scalar tol = Scalar(64) * std::numeric_limits<Scalar>::epsilon() * scale;
    if (((a - a.transpose()).cwiseAbs().array() > tol).any())
      throw std::invalid_argument("vla::PenaltyInverse: A must be symmetric");
    if (!(a.diagonal().array() > Scalar(0)).all())
      throw std::invalid_argument("vla::PenaltyInverse: A must be positive definite (a diagonal entry is <= 0)");
    if (!positive_definite) return;
    Eigen::LLT<MatrixType> llt(a);
    if (llt.info() != Eigen::Success)
      throw std::invalid_argument("vla::PenaltyInverse: A must be positive definite");
  }

 private:
  MatrixType a_;
  VectorType w_, neg_w_;  // scratch: keeps the update free of allocations
};

}  // namespace vla
