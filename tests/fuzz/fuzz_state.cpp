// libFuzzer harness: VlaState from snapshots of arbitrary bits, restore() and step() on them, and
// Config::validate. Invariants: a rejected snapshot, config or step throws std::invalid_argument and
// leaves the state as it was (save() bit for bit); an accepted snapshot restores exactly (save()
// returns it); an accepted step on bounded inputs from a fresh state writes no NaN.
#include <vla/vla.hpp>

#include <cmath>
#include <stdexcept>

#include "fuzz_common.hpp"

namespace {

bool same(const vla::VlaSnapshot<float>& a, const vla::VlaSnapshot<float>& b) {
  auto eq = [](const auto& x, const auto& y) {
    return x.rows() == y.rows() && x.cols() == y.cols() &&
           std::memcmp(x.data(), y.data(), sizeof(float) * std::size_t(x.size())) == 0;
  };
  return eq(a.A, b.A) && eq(a.S, b.S) && eq(a.z, b.z) && a.steps == b.steps;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  vfuzz::Reader in{data, size};
  // A config of fuzzed fields: validate() either throws or the config builds a state.
  // A config: fuzzed bits (only the validation invariants apply), or constants within a few decades
  // of the defaults (the no-NaN invariant applies too: extreme constants such as λ0 ~ 1e-19 or
  // ε_refresh ~ 1e38 leave float's useful range, docs/maths.md §6).
  vla::Config cfg;
  const int mode = in.byte() % 3;
  if (mode == 1) {
    cfg.lambda0 = in.raw_float();
    cfg.stab_eps = in.raw_float();
    cfg.refresh_period = in.range(-2, 9);
    cfg.refresh_eps = in.raw_float();
    cfg.denom_eps = in.raw_float();
    cfg.normalize_output = in.byte() % 2;
  } else if (mode == 2) {
    vfuzz::sane_config(in, cfg);
  }
  // With the normaliser off, o = S q is a plain product: its true value can lie outside float's range
  // (and overflow to inf − inf), so the no-NaN invariant is the normalised output's.
  const bool sane = mode != 1 && cfg.normalize_output;
  const int dk = in.range(1, 5), dv = in.range(1, 5);
  try {
    cfg.validate_for<float>();
  } catch (const std::invalid_argument&) {
    try {
      vla::VlaState<float> bad(dk, dv, cfg);
      vfuzz::broken("a state was built from a config that validate_for<float> refused");
    } catch (const std::invalid_argument&) {
    }
    return 0;
  }
  vla::VlaState<float> st(dk, dv, cfg);
  // A few bounded steps from the fresh state: no NaN.
  const int steps = in.range(0, 6);
  for (int t = 0; t < steps; ++t) {
    Eigen::VectorXf q(dk), k(dk), u(dk), v(dv);
    for (auto* x : {&q, &k, &u}) for (int i = 0; i < dk; ++i) (*x)[i] = in.bounded_float();
    for (int i = 0; i < dv; ++i) v[i] = in.bounded_float();
    const Eigen::VectorXf o = st.step(q, k, v, u);
    if (sane && (o.hasNaN() || st.S().hasNaN() || st.A().hasNaN())) vfuzz::broken("NaN from bounded steps");
  }
  // A step with raw bits: rejected (non-finite) without a change, or accepted.
  {
    const vla::VlaSnapshot<float> before = st.save();
    Eigen::VectorXf q(dk), k(dk), u(dk), v(dv);
    for (auto* x : {&q, &k, &u}) for (int i = 0; i < dk; ++i) (*x)[i] = in.raw_float();
    for (int i = 0; i < dv; ++i) v[i] = in.raw_float();
    try {
      st.step(q, k, v, u);
    } catch (const std::invalid_argument&) {
      if (!same(st.save(), before)) vfuzz::broken("a rejected step changed the state");
    }
  }
  // A snapshot of arbitrary bits (sizes that may not match): restore throws without a change, or
  // restores it exactly.
  vla::VlaSnapshot<float> snap;
  const int sk = in.byte() % 8 ? dk : in.range(0, 6), sv = in.byte() % 8 ? dv : in.range(0, 6);
  snap.A.resize(sk, in.byte() % 8 ? sk : in.range(0, 6));
  snap.S.resize(sv, in.byte() % 8 ? sk : in.range(0, 6));
  snap.z.resize(in.byte() % 8 ? sk : in.range(0, 6));
  const bool spd = in.byte() % 2;
  for (Eigen::Index i = 0; i < snap.A.rows(); ++i)
    for (Eigen::Index j = 0; j < snap.A.cols(); ++j) snap.A(i, j) = spd ? (i == j ? 2.f : 0.f) : in.raw_float();
  if (in.byte() % 2 && snap.A.rows() == snap.A.cols()) snap.A = (snap.A + snap.A.transpose()).eval() / 2.f;
  for (Eigen::Index i = 0; i < snap.S.size(); ++i) snap.S.data()[i] = spd ? in.bounded_float() : in.raw_float();
  for (Eigen::Index i = 0; i < snap.z.size(); ++i) snap.z[i] = spd ? in.bounded_float() : in.raw_float();
  snap.steps = in.byte() % 4 ? in.range(0, 100) : in.i64();
  const vla::VlaSnapshot<float> before = st.save();
  try {
    st.restore(snap);
  } catch (const std::invalid_argument&) {
    if (!same(st.save(), before)) vfuzz::broken("a rejected restore changed the state");
    return 0;
  }
  if (!same(st.save(), snap)) vfuzz::broken("an accepted restore did not restore the snapshot exactly");
  return 0;
}
