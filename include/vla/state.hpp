// vla/state.hpp — one head's VLA state and the recurrence step of docs/maths.md §2, written once.
//
// Every CPU path (single-head streaming, the batched forward on any number of threads) runs
// VlaState::step_unchecked; the batched forward only adds validation, layout and threading.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <utility>

#include "vla/config.hpp"
#include "vla/detail/eigen_util.hpp"
#include "vla/penalty_inverse.hpp"

namespace vla {

/// Everything a VlaState is, as plain matrices: what save() returns and restore() takes.
template <class Scalar>
struct VlaSnapshot {
  Matrix<Scalar> A;         ///< dk×dk inverse penalty, SPD
  Matrix<Scalar> S;         ///< dv×dk memory
  Vector<Scalar> z;         ///< dk running key sum (output normaliser)
  std::int64_t steps = 0;   ///< steps taken: the refresh phase (docs/maths.md §3)
};

/// What one step computed besides the new state, as factors (docs/maths.md §2): û = uf·u, k̂ = kf·k,
/// α̂ = af·α, δ the Sherman–Morrison denominator. A zero factor marks a zero vector (nothing done
/// with it). The backward keeps these per token (docs/maths.md §9d).
template <class Scalar>
struct VlaStepFactors {
  Scalar uf = 0, kf = 0, af = 0, delta = 1;
};

/// One head's recurrent state (A, S, z, t) and its step. Value type: copying it saves it.
template <class Scalar>
class VlaState {
 public:
  using VectorType = Vector<Scalar>;
  using MatrixType = Matrix<Scalar>;

  /// Fresh state: A = I/λ0, S = 0, z = 0, t = 0. Validates the config and the sizes.
  VlaState(Eigen::Index dk, Eigen::Index dv, const Config& cfg = Config{})
      : cfg_(checked(cfg, dk, dv)), pen_(dk, Scalar(cfg.lambda0)) {
    s_ = MatrixType::Zero(dv, dk);
    z_ = VectorType::Zero(dk);
    init_scalars();
  }

  /// A state restored from a snapshot (e.g. another stream's final state). Validates it; the
  /// O(dk³) positive-definiteness check of A can be skipped (see PenaltyInverse).
  VlaState(const VlaSnapshot<Scalar>& snap, const Config& cfg, bool check_positive_definite = true)
      : cfg_(checked(cfg, snap.A.rows(), snap.S.rows())), pen_(checked_a(snap, check_positive_definite)), s_(snap.S), z_(snap.z),
        steps_(snap.steps) {
    init_scalars();
  }

  Eigen::Index dk() const { return pen_.dim(); }
  Eigen::Index dv() const { return s_.rows(); }
  const Config& config() const { return cfg_; }

  const MatrixType& A() const { return pen_.matrix(); }
  const PenaltyInverse<Scalar>& penalty() const { return pen_; }
  const MatrixType& S() const { return s_; }
  const VectorType& z() const { return z_; }
  std::int64_t steps() const { return steps_; }

  VlaSnapshot<Scalar> save() const { return {A(), s_, z_, steps_}; }

  /// The last step's factors and vectors (valid after a step; the vectors where their factor is
  /// non-zero): s = A û/√δ (A before the step), α̂, e = v − S k̂ (S before the step) and S₂q (S after
  /// it, q unscaled). What the backward keeps of each step to undo it (docs/maths.md §9d).
  const VlaStepFactors<Scalar>& last_factors() const { return last_; }
  const VectorType& last_s() const { return pen_.last_s(); }
  const VectorType& last_alpha_hat() const { return alpha_; }
  const VectorType& last_e() const { return e_; }
  const VectorType& last_sq() const { return sq_; }

  /// Replaces the state with a snapshot; validates first, so a throw leaves *this unchanged.
  void restore(const VlaSnapshot<Scalar>& snap) { *this = VlaState(snap, cfg_); }

  /// One step (docs/maths.md §2) on q, k ∈ R^dk, v ∈ R^dv, u ∈ R^dk; returns o ∈ R^dv.
  /// Throws std::invalid_argument on a size mismatch or a non-finite entry, before any change.
  VectorType step(const VectorCRef<Scalar>& q, const VectorCRef<Scalar>& k, const VectorCRef<Scalar>& v,
                  const VectorCRef<Scalar>& u) {
    VectorType o(dv());
    step(q, k, v, u, o);
    return o;
  }

  /// As above, writing o (size dv) in place. Out of line (VLA_NOINLINE, vla/detail/eigen_util.hpp):
  /// every caller of the public step gets the same bits.
  template <class Out>
  VLA_NOINLINE void step(const VectorCRef<Scalar>& q, const VectorCRef<Scalar>& k, const VectorCRef<Scalar>& v,
                         const VectorCRef<Scalar>& u, Out&& o) {
    check_step(q, k, v, u);
    detail::require_size(o.size(), dv(), "o");
    step_unchecked(q, k, v, u, o);
  }

  /// Validates one step's inputs without running it.
  void check_step(const VectorCRef<Scalar>& q, const VectorCRef<Scalar>& k, const VectorCRef<Scalar>& v,
                  const VectorCRef<Scalar>& u) const {
    detail::require_size(q.size(), dk(), "q");
    detail::require_size(k.size(), dk(), "k");
    detail::require_size(v.size(), dv(), "v");
    detail::require_size(u.size(), dk(), "u");
    detail::require_finite(q, "q");
    detail::require_finite(k, "k");
    detail::require_finite(v, "v");
    detail::require_finite(u, "u");
  }

  /// The step itself, docs/maths.md §2 in order. Inputs must already be validated.
  ///
  /// Fused form (identical in exact arithmetic): A û and A k̂ come from one pass over A, and
  /// α = A_old k̂ − s(sᵀk̂) + ε_refresh·k̂; S k̂ and S q from one pass over S, and
  /// o ∝ S_new q = S q + e (α̂ᵀq). Four passes over the state per step instead of six.
  template <class Out>
  void step_unchecked(const VectorCRef<Scalar>& q, const VectorCRef<Scalar>& k, const VectorCRef<Scalar>& v,
                      const VectorCRef<Scalar>& u, Out&& o) {
    const Eigen::Index n = dk(), m = dv();
    // 1. û = u/‖u‖/√dk and k̂ = k/‖k‖; a zero vector is marked by a zero factor (docs/maths.md §2).
    const Scalar uf = detail::unit_factor<Scalar>(u, inv_sqrt_dk_);
    const Scalar kf = detail::unit_factor<Scalar>(k);
    if (uf != Scalar(0)) uhat_.noalias() = u * uf;
    if (kf != Scalar(0)) khat_.noalias() = k * kf;
    // 2–4. Sherman–Morrison (a zero û leaves A as it is), refresh, α = A k̂ (none for a zero k̂).
    last_.uf = uf;
    last_.kf = kf;
    last_.delta = pen_.update_apply(uf != Scalar(0) ? uhat_.data() : nullptr, stab_eps_,
                      rules::refresh_due(steps_, cfg_.refresh_period), refresh_eps_,
                      kf != Scalar(0) ? khat_.data() : nullptr, alpha_.data());
    // 5. α̂, then e = v − S k̂ and S ← S + e α̂ᵀ. A zero k̂ or α writes nothing.
    const Scalar af = kf != Scalar(0) ? detail::unit_factor<Scalar>(alpha_) : Scalar(0);
    last_.af = af;
    if (af != Scalar(0)) {
      alpha_ *= af;
      detail::dual_matvec(s_.data(), m, n, khat_.data(), q.data(), sk_.data(), sq_.data());
      detail::delta_write(s_.data(), m, n, v.data(), alpha_.data(), q.data(), Scalar(1), sk_.data(), sq_.data(),
                          e_.data());
    } else {
      detail::matvec(s_.data(), dv(), dk(), q.data(), sq_.data());
    }
    // 6. z and the output.
    z_ += k;
    detail::finish_output<Scalar>(s_, z_, q, sq_, cfg_.normalize_output, denom_eps_, o);
    // 7.
    ++steps_;
  }

 private:
  static const Config& checked(const Config& cfg, Eigen::Index dk, Eigen::Index dv) {
    cfg.validate_for<Scalar>();
    if (dk <= 0) throw std::invalid_argument("vla::VlaState: dk must be > 0");
    if (dv <= 0) throw std::invalid_argument("vla::VlaState: dv must be > 0");
    return cfg;
  }
  static PenaltyInverse<Scalar> checked_a(const VlaSnapshot<Scalar>& snap, bool check_positive_definite) {
    PenaltyInverse<Scalar> pen(snap.A, check_positive_definite);  // checks A: square, finite, symmetric, SPD
    detail::require_size(snap.S.cols(), snap.A.rows(), "S (columns)");
    detail::require_size(snap.z.size(), snap.A.rows(), "z");
    detail::require_finite(snap.S, "S");
    detail::require_finite(snap.z, "z");
    if (snap.steps < 0) throw std::invalid_argument("vla::VlaState: steps must be >= 0");
    return pen;
  }
  void init_scalars() {
    stab_eps_ = Scalar(cfg_.stab_eps);
    refresh_eps_ = Scalar(cfg_.refresh_eps);
    denom_eps_ = Scalar(cfg_.denom_eps);
    inv_sqrt_dk_ = Scalar(1) / std::sqrt(Scalar(dk()));
    uhat_.resize(dk());
    khat_.resize(dk());
    alpha_.resize(dk());
    sk_.resize(dv());
    sq_.resize(dv());
    e_.resize(dv());
  }

  Config cfg_;
  PenaltyInverse<Scalar> pen_;
  MatrixType s_;
  VectorType z_;
  std::int64_t steps_ = 0;
  // The config's constants in Scalar, rounded once (no double arithmetic inside a float step).
  Scalar stab_eps_{}, refresh_eps_{}, denom_eps_{}, inv_sqrt_dk_{};
  // Scratch vectors: the step allocates nothing.
  VectorType uhat_, khat_, alpha_, sk_, sq_, e_;
  VlaStepFactors<Scalar> last_;  // the last step's factors (last_factors)
};

}  // namespace vla
