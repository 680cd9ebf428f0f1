// vla/baselines.hpp — the two baselines of docs/maths.md §7, with the same shape of API as VlaState,
// so that comparisons run through the same batched forward, layout and threading.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "vla/config.hpp"
#include "vla/detail/cpu_kernels.hpp"
#include "vla/detail/eigen_util.hpp"

namespace vla {

/// Linear attention (Katharopoulos et al.): S ← S + v kᵀ; z ← z + k; o = S q / max(zᵀq, ε_den).
/// Uses Config::denom_eps and Config::normalize_output; the other fields do not apply.
template <class Scalar>
class LinearAttentionState {
 public:
  using VectorType = Vector<Scalar>;
  using MatrixType = Matrix<Scalar>;

  LinearAttentionState(Eigen::Index dk, Eigen::Index dv, const Config& cfg = Config{}) : cfg_(cfg) {
    cfg_.validate_for<Scalar>();
    if (dk <= 0 || dv <= 0) throw std::invalid_argument("vla::LinearAttentionState: dk and dv must be > 0");
    s_ = MatrixType::Zero(dv, dk);
    z_ = VectorType::Zero(dk);
    sq_.resize(dv);
    denom_eps_ = Scalar(cfg_.denom_eps);
  }
  /// Restores (S, z); validates sizes and finiteness.
  LinearAttentionState(MatrixType s, VectorType z, const Config& cfg) : LinearAttentionState(s.cols(), s.rows(), cfg) {
    detail::require_size(z.size(), s.cols(), "z");
    detail::require_finite(s, "S");
    detail::require_finite(z, "z");
    s_ = std::move(s);
    z_ = std::move(z);
  }

  Eigen::Index dk() const { return s_.cols(); }
  Eigen::Index dv() const { return s_.rows(); }
  const Config& config() const { return cfg_; }
  const MatrixType& S() const { return s_; }
  const VectorType& z() const { return z_; }
  /// The last step's S₂q (S after it, q unscaled): what the backward keeps of a step (docs/maths.md §9e).
  const VectorType& last_sq() const { return sq_; }

  VLA_NOINLINE VectorType step(const VectorCRef<Scalar>& q, const VectorCRef<Scalar>& k, const VectorCRef<Scalar>& v) {
    check_step(q, k, v);
    VectorType o(dv());
    step_unchecked(q, k, v, o);
    return o;
  }
  void check_step(const VectorCRef<Scalar>& q, const VectorCRef<Scalar>& k, const VectorCRef<Scalar>& v) const {
    detail::require_size(q.size(), dk(), "q");
    detail::require_size(k.size(), dk(), "k");
    detail::require_size(v.size(), dv(), "v");
    detail::require_finite(q, "q");
    detail::require_finite(k, "k");
    detail::require_finite(v, "v");
  }
  template <class Out>
  void step_unchecked(const VectorCRef<Scalar>& q, const VectorCRef<Scalar>& k, const VectorCRef<Scalar>& v, Out&& o) {
    // S_new q = S q + v (kᵀq): one read pass and one rank-1 write, as in the VLA step.
    detail::matvec(s_.data(), dv(), dk(), q.data(), sq_.data());
    detail::rank1_update(s_.data(), dv(), dk(), v.data(), k.data());
    sq_ += v * k.dot(q);
    z_ += k;
    detail::finish_output<Scalar>(s_, z_, q, sq_, cfg_.normalize_output, denom_eps_, o);
  }

 private:
  Config cfg_;
  MatrixType s_;
  VectorType z_, sq_;
  Scalar denom_eps_{};
};

/// DeltaNet (delta rule with unit keys): k̂ = k/‖k‖; S ← S + β (v − S k̂) k̂ᵀ; o = S q.
/// β ∈ (0, 1] per step. A zero key writes nothing (as in VLA). No Config field applies.
template <class Scalar>
class DeltaNetState {
 public:
  using VectorType = Vector<Scalar>;
  using MatrixType = Matrix<Scalar>;

  DeltaNetState(Eigen::Index dk, Eigen::Index dv) {
    if (dk <= 0 || dv <= 0) throw std::invalid_argument("vla::DeltaNetState: dk and dv must be > 0");
    s_ = MatrixType::Zero(dv, dk);
    khat_.resize(dk);
    sk_.resize(dv);
    sq_.resize(dv);
    e_.resize(dv);
  }
  /// Restores S; validates finiteness.
  explicit DeltaNetState(MatrixType s) : DeltaNetState(s.cols(), s.rows()) {
    detail::require_finite(s, "S");
    s_ = std::move(s);
  }

  Eigen::Index dk() const { return s_.cols(); }
  Eigen::Index dv() const { return s_.rows(); }
  const MatrixType& S() const { return s_; }
  /// The last step's key factor (k̂ = kf·k; 0 for a zero key, which writes nothing) and, where it is
  /// not 0, the vector it wrote, β(v − S k̂) (S before the step): what the backward keeps of a step
  /// to undo it (docs/maths.md §9e).
  Scalar last_key_factor() const { return kf_; }
  const VectorType& last_write() const { return e_; }

  VLA_NOINLINE VectorType step(const VectorCRef<Scalar>& q, const VectorCRef<Scalar>& k, const VectorCRef<Scalar>& v,
                               Scalar beta) {
    check_step(q, k, v, beta);
    VectorType o(dv());
    step_unchecked(q, k, v, beta, o);
    return o;
  }
  static void check_beta(Scalar beta) {
    if (!(beta > Scalar(0) && beta <= Scalar(1)))
      throw std::invalid_argument("vla::DeltaNetState: beta must be in (0, 1]");
  }
  void check_step(const VectorCRef<Scalar>& q, const VectorCRef<Scalar>& k, const VectorCRef<Scalar>& v,
                  Scalar beta) const {
    detail::require_size(q.size(), dk(), "q");
    detail::require_size(k.size(), dk(), "k");
    detail::require_size(v.size(), dv(), "v");
    detail::require_finite(q, "q");
    detail::require_finite(k, "k");
    detail::require_finite(v, "v");
    check_beta(beta);
  }
  template <class Out>
  void step_unchecked(const VectorCRef<Scalar>& q, const VectorCRef<Scalar>& k, const VectorCRef<Scalar>& v,
                      Scalar beta, Out&& o) {
    const Scalar kf = detail::unit_factor<Scalar>(k);
    kf_ = kf;
    // The same fused delta-rule write as VLA's (detail::delta_write), with write direction k̂.
    if (kf != Scalar(0)) {
      khat_.noalias() = k * kf;
      detail::dual_matvec(s_.data(), dv(), dk(), khat_.data(), q.data(), sk_.data(), sq_.data());
      detail::delta_write(s_.data(), dv(), dk(), v.data(), khat_.data(), q.data(), beta, sk_.data(), sq_.data(),
                          e_.data());
    } else {
      detail::matvec(s_.data(), dv(), dk(), q.data(), sq_.data());
    }
    o = sq_;
  }

 private:
  MatrixType s_;
  VectorType khat_, sk_, sq_, e_;
  Scalar kf_ = 0;  // the last step's key factor (last_key_factor)
};

}  // namespace vla
