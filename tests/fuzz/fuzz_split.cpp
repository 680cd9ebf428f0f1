// libFuzzer harness: the time split (vla/time_split.hpp, docs/maths.md §4b) on fuzzed configs,
// sizes, span counts, lengths, warm starts and inputs (bounded magnitudes, zeros, and sometimes one
// non-finite entry). Invariants: a non-finite input or a bad option throws std::invalid_argument and
// leaves o untouched; otherwise the split run's outputs and final state agree with the unsplit
// VlaState run within 1e-6 relative, or 1e-12 of their natural scale where the true value is rounding
// noise around zero (double; measured agreement is ~1e-15, tests/test_time_split.cpp), and are finite.
#include <vla/vla.hpp>

#include <cmath>
#include <limits>
#include <stdexcept>

#include "fuzz_common.hpp"

namespace {

using Rows = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// ‖a − b‖ ≤ 1e-6·‖b‖ + floor: relative, except where the true value is rounding noise around 0
/// (e.g. S after writes that cancel exactly in exact arithmetic), where `floor` (1e-12 of the
/// quantity's natural scale) decides.
bool close(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b, double scale) {
  return (a - b).norm() <= 1e-6 * b.norm() + 1e-12 * scale;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  vfuzz::Reader in{data, size};
  vla::Config cfg;
  if (in.byte() % 2) vfuzz::sane_config(in, cfg);  // constants within a few decades of the defaults
  const int dk = in.range(1, 5), dv = in.range(1, 5), T = in.range(0, 48);
  const int spans = in.range(-1, 12), threads = in.range(0, 2), warm = in.range(0, 25);
  auto fill = [&](Rows& m) {
    for (Eigen::Index i = 0; i < m.rows(); ++i)
      for (Eigen::Index j = 0; j < m.cols(); ++j) m(i, j) = double(in.bounded_float(3));
  };
  Rows q(T, dk), k(T, dk), u(T, dk), v(T, dv);
  fill(q), fill(k), fill(u), fill(v);
  // A warm start: the fresh state run through `warm` bounded steps (SPD A, S ≠ 0, phase ≠ 0).
  vla::VlaState<double> st(dk, dv, cfg);
  for (int t = 0; t < warm; ++t) {
    Eigen::VectorXd a(dk), b(dk), c(dk), e(dv);
    for (auto* x : {&a, &b, &c}) for (int i = 0; i < dk; ++i) (*x)[i] = double(in.bounded_float(3));
    for (int i = 0; i < dv; ++i) e[i] = double(in.bounded_float(3));
    st.step(a, b, e, c);
  }
  const vla::VlaSnapshot<double> init = st.save();
  const bool poison = T > 0 && in.byte() % 8 == 0;
  if (poison) {
    Rows* which[] = {&q, &k, &v, &u};
    Rows& m = *which[in.range(0, 3)];
    m(in.range(0, T - 1) % m.rows(), 0) = in.byte() % 2 ? std::numeric_limits<double>::quiet_NaN()
                                                        : std::numeric_limits<double>::infinity();
  }
  Rows o = Rows::Constant(T, dv, 7.0);
  const bool bad_option = spans < 1;
  try {
    const vla::VlaSnapshot<double> fin = vla::split_forward<double>(cfg, init, q, k, v, u, o, {spans, threads});
    if (poison || bad_option) vfuzz::broken("a non-finite input or a bad option was accepted");
    vla::VlaState<double> ref(init, cfg);
    Rows o_ref(T, dv);
    for (int t = 0; t < T; ++t)
      o_ref.row(t) = ref.step(q.row(t).transpose(), k.row(t).transpose(), v.row(t).transpose(), u.row(t).transpose())
                         .transpose();
    if (!o.allFinite() || !fin.A.allFinite() || !fin.S.allFinite()) vfuzz::broken("the split wrote a non-finite value");
    if (fin.steps != ref.steps()) vfuzz::broken("the split's final step count differs");
    // Natural scales: S is built from v (and S0), z from k (and z0), o = S q / max(zᵀq, ε_den), so
    // o's rounding noise is S's times ‖q‖ / ε_den at worst (found by the fuzzer: S exactly 0 up to
    // 1e-20 of noise, divided by ε_den = 1e-6).
    const double s_scale = init.S.norm() + v.norm() * (1 + T), z_scale = init.z.norm() + k.cwiseAbs().sum();
    const double o_scale = s_scale * (1 + q.norm()) / (cfg.normalize_output ? cfg.denom_eps : 1.0);
    if (!close(o, o_ref, o_scale) || !close(fin.A, ref.A(), ref.A().norm()) || !close(fin.S, ref.S(), s_scale) ||
        !close(fin.z, ref.z(), z_scale))
      vfuzz::broken("the split run differs from the unsplit run");
  } catch (const std::invalid_argument&) {
    if (!poison && !bad_option) vfuzz::broken("a valid split was refused");
    if (!(o.array() == 7.0).all()) vfuzz::broken("a refused split wrote to o");
  }
  return 0;
}
