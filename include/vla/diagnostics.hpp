// vla/diagnostics.hpp — per-head diagnostics of docs/maths.md §6, switched on without changing results.
//
// A Recorder watches one head's state. The caller steps the state as usual and then calls
// `recorder.observe(state, k)` with the key of that step; every `stride`-th step the recorder
// measures, from the public state only:
//   ‖S_t‖_F, ‖A_t‖_F, cond₂(A_t) (estimate or exact), c_t = k̂ᵀα̂ and ‖J_t‖₂ from the closed form.
// After VlaState::step, A() is exactly the A that produced that step's α, so c_t is that step's
// alignment and ‖J_t‖₂ = jacobian_norm(c_t) is the norm of that step's J = I − k̂α̂ᵀ (docs/maths.md §5).
//
// Results are unchanged: the recorder only reads the state through const accessors.
// Zero cost when off: a default-constructed Recorder (stride 0) returns from observe() after one
// integer test and never touches the key; `Monitored` wraps a VlaState and a Recorder for callers
// who prefer one object. Per layer/head: `DiagnosticsSet` holds one Recorder per (layer, head),
// each off unless enabled. The batched forward (vla::forward) has no per-step hook; to watch it,
// run it in chunks of `stride` tokens carrying the final state (bitwise equal, docs/maths.md §3), restore a
// VlaState from the state buffers (VlaSnapshot) and observe it with the chunk's last key.
#pragma once

#include <Eigen/Eigenvalues>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

#include "vla/baselines.hpp"
#include "vla/jacobian.hpp"
#include "vla/state.hpp"

namespace vla {

/// What a Recorder measures and how often.
struct DiagnosticsOptions {
  /// How cond₂(A_t) is measured.
  enum class Condition {
    Off,       ///< not measured (NaN in the record)
    Estimate,  ///< PenaltyInverse::condition_estimate(condition_iterations): power + inverse power iteration
    Exact      ///< eigenvalues of A_t promoted to double: O(dk³), the ground truth, also for float states
  };
  /// Measure after every stride-th step: when the state's step count n (1-based) satisfies
  /// n % stride == 0. 0 switches the recorder off.
  std::int64_t stride = 1;
  Condition condition = Condition::Estimate;
  int condition_iterations = 20;
};

/// One measurement, taken right after step `step` (the state's step count, 1-based). Fields that
/// do not apply (A for the baselines, cond when off) are NaN. Values are stored in double whatever
/// the state's scalar; each is computed in the state's scalar first (cond: see Condition).
struct DiagnosticRecord {
  std::int64_t step = 0;
  double s_norm = 0;    ///< ‖S_t‖_F
  double a_norm = 0;    ///< ‖A_t‖_F
  double cond = 0;      ///< cond₂(A_t) (+inf when A_t is not numerically positive definite)
  double alignment = 0; ///< c_t = k̂_tᵀα̂_t (1 for a zero key or zero α: the step wrote nothing)
  double jacobian = 0;  ///< ‖J_t‖₂ = ‖I − k̂α̂ᵀ‖₂ from the closed form (baselines: their own J, see observe)
};

namespace diag_detail {
inline constexpr double nan() { return std::numeric_limits<double>::quiet_NaN(); }

/// cond₂ of a symmetric matrix from its eigenvalues in double; +inf unless positive definite.
template <class Scalar>
double condition_exact_double(const Matrix<Scalar>& a) {
  Eigen::SelfAdjointEigenSolver<Matrix<double>> es(a.template cast<double>(), Eigen::EigenvaluesOnly);
  const double lo = es.eigenvalues().minCoeff(), hi = es.eigenvalues().maxCoeff();
  return lo > 0 ? hi / lo : std::numeric_limits<double>::infinity();
}
}  // namespace diag_detail

/// Measures a VLA state right after the step whose (raw, unnormalised) key was `k`.
/// This is what a Recorder stores; callable directly at any time.
template <class Scalar>
DiagnosticRecord measure(const VlaState<Scalar>& st, const VectorCRef<Scalar>& k,
                         DiagnosticsOptions::Condition condition = DiagnosticsOptions::Condition::Estimate,
                         int condition_iterations = 20) {
  detail::require_size(k.size(), st.dk(), "k");
  DiagnosticRecord r;
  r.step = st.steps();
  r.s_norm = static_cast<double>(st.S().norm());
  r.a_norm = static_cast<double>(st.A().norm());
  switch (condition) {
    case DiagnosticsOptions::Condition::Off: r.cond = diag_detail::nan(); break;
    case DiagnosticsOptions::Condition::Estimate:
      r.cond = static_cast<double>(st.penalty().condition_estimate(condition_iterations));
      break;
    case DiagnosticsOptions::Condition::Exact: r.cond = diag_detail::condition_exact_double(st.A()); break;
  }
  const Scalar c = write_alignment<Scalar>(st.A(), k);
  r.alignment = static_cast<double>(c);
  r.jacobian = static_cast<double>(jacobian_norm<Scalar>(c));
  return r;
}

/// One head's recorder. Default-constructed: off.
template <class Scalar>
class Recorder {
 public:
  /// Receives each record instead of storing it (e.g. to stream a long run to a file).
  using Sink = std::function<void(const DiagnosticRecord&)>;

  Recorder() = default;
  explicit Recorder(DiagnosticsOptions opt, Sink sink = {}) : opt_(opt), sink_(std::move(sink)) {
    if (opt_.stride < 0) throw std::invalid_argument("vla::Recorder: stride must be >= 0 (0 = off)");
    if (opt_.condition_iterations < 1) throw std::invalid_argument("vla::Recorder: condition_iterations must be >= 1");
  }

  bool enabled() const noexcept { return opt_.stride > 0; }
  const DiagnosticsOptions& options() const noexcept { return opt_; }
  /// Whether the step whose 1-based count is n is measured.
  bool due(std::int64_t n) const noexcept { return opt_.stride > 0 && n % opt_.stride == 0; }

  /// Call right after `st.step(q, k, v, u)` with the same k. Measures when due(st.steps()).
  template <class Derived>
  void observe(const VlaState<Scalar>& st, const Eigen::MatrixBase<Derived>& k) {
    if (!due(st.steps())) return;
    emit(measure<Scalar>(st, VectorCRef<Scalar>(k), opt_.condition, opt_.condition_iterations));
  }

  /// Linear attention: ‖S‖_F only; J = I so ‖J‖₂ = 1; A, cond and c do not apply (NaN).
  /// The baselines carry no step count: the recorder counts its own observe() calls.
  void observe(const LinearAttentionState<Scalar>& st) {
    if (!due(++own_steps_)) return;
    emit(baseline_record(static_cast<double>(st.S().norm()), 1.0));
  }
  /// DeltaNet: ‖S‖_F only; J = I − β k̂k̂ᵀ is symmetric with eigenvalues 1 and 1 − β, so
  /// ‖J‖₂ = 1 for β ∈ (0, 1] and dk ≥ 2 (recorded as such).
  void observe(const DeltaNetState<Scalar>& st) {
    if (!due(++own_steps_)) return;
    emit(baseline_record(static_cast<double>(st.S().norm()), st.dk() >= 2 ? 1.0 : diag_detail::nan()));
  }

  /// The stored records (empty when a sink is set).
  const std::vector<DiagnosticRecord>& records() const noexcept { return records_; }
  /// Drops the stored records and restarts the baselines' step count.
  void clear() {
    records_.clear();
    own_steps_ = 0;
  }

 private:
  DiagnosticRecord baseline_record(double s_norm, double jac) const {
    DiagnosticRecord r;
    r.step = own_steps_;
    r.s_norm = s_norm;
    r.a_norm = r.cond = r.alignment = diag_detail::nan();
    r.jacobian = jac;
    return r;
  }
  void emit(const DiagnosticRecord& r) {
    if (sink_)
      sink_(r);
    else
      records_.push_back(r);
  }

  DiagnosticsOptions opt_{0, DiagnosticsOptions::Condition::Off, 20};
  Sink sink_;
  std::vector<DiagnosticRecord> records_;
  std::int64_t own_steps_ = 0;
};

/// A VlaState stepped together with its Recorder: step() is VlaState::step, then observe().
template <class Scalar>
class Monitored {
 public:
  using VectorType = Vector<Scalar>;

  explicit Monitored(VlaState<Scalar> state, Recorder<Scalar> recorder = {})
      : state_(std::move(state)), rec_(std::move(recorder)) {}

  VectorType step(const VectorCRef<Scalar>& q, const VectorCRef<Scalar>& k, const VectorCRef<Scalar>& v,
                  const VectorCRef<Scalar>& u) {
    VectorType o = state_.step(q, k, v, u);
    rec_.observe(state_, k);
    return o;
  }
  template <class Out>
  void step(const VectorCRef<Scalar>& q, const VectorCRef<Scalar>& k, const VectorCRef<Scalar>& v,
            const VectorCRef<Scalar>& u, Out&& o) {
    state_.step(q, k, v, u, std::forward<Out>(o));
    rec_.observe(state_, k);
  }

  const VlaState<Scalar>& state() const noexcept { return state_; }
  VlaState<Scalar>& state() noexcept { return state_; }
  const Recorder<Scalar>& recorder() const noexcept { return rec_; }
  Recorder<Scalar>& recorder() noexcept { return rec_; }

 private:
  VlaState<Scalar> state_;
  Recorder<Scalar> rec_;
};

/// One Recorder per (layer, head), all off until enabled: switch diagnostics on per head.
template <class Scalar>
class DiagnosticsSet {
 public:
  DiagnosticsSet(int layers, int heads) : layers_(layers), heads_(heads) {
    if (layers <= 0 || heads <= 0) throw std::invalid_argument("vla::DiagnosticsSet: layers and heads must be > 0");
    recs_.resize(static_cast<std::size_t>(layers) * static_cast<std::size_t>(heads));
  }
  int layers() const noexcept { return layers_; }
  int heads() const noexcept { return heads_; }

  /// Switches (layer, head) on with `opt` (stride 0 switches it off); drops its old records.
  void enable(int layer, int head, DiagnosticsOptions opt, typename Recorder<Scalar>::Sink sink = {}) {
    at(layer, head) = Recorder<Scalar>(opt, std::move(sink));
  }
  /// Switches every head of every layer on with `opt`.
  void enable_all(DiagnosticsOptions opt) {
    for (auto& r : recs_) r = Recorder<Scalar>(opt);
  }
  void disable(int layer, int head) { at(layer, head) = Recorder<Scalar>(); }

  Recorder<Scalar>& at(int layer, int head) { return recs_[index(layer, head)]; }
  const Recorder<Scalar>& at(int layer, int head) const { return recs_[index(layer, head)]; }

 private:
  std::size_t index(int layer, int head) const {
    if (layer < 0 || layer >= layers_ || head < 0 || head >= heads_)
      throw std::out_of_range("vla::DiagnosticsSet: (layer, head) out of range");
    return static_cast<std::size_t>(layer) * static_cast<std::size_t>(heads_) + static_cast<std::size_t>(head);
  }
  int layers_, heads_;
  std::vector<Recorder<Scalar>> recs_;
};

}  // namespace vla
