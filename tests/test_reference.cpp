// Every single-head path against the float64 reference (tests/reference.hpp), in float and double:
// VlaState with the refresh on and off and other configurations, linear attention, DeltaNet.
// Tolerances: vt::Tol<Scalar>::ref (support.hpp), stated once per scalar type.
#include "support.hpp"

namespace {

struct Shape {
  int dk, dv;
};
const Shape kShapes[] = {{13, 7}, {32, 64}, {64, 32}, {1, 3}, {5, 1}};

// Runs the stream through VlaState<Scalar> and the reference; returns the worst relative error
// over outputs and the final A, S, z.
template <class Scalar>
double vla_vs_reference(int dk, int dv, int T, unsigned seed, const vla::Config& cfg) {
  const vt::Stream s = vt::rounded<Scalar>(vt::random_stream(dk, dv, T, seed));
  vla::VlaState<Scalar> st(dk, dv, cfg);
  ref::Vla r(dk, dv, vt::params(cfg));
  std::vector<double> out, rout;
  vt::run_vla(st, s, 0, T, out);
  vt::run_ref(r, s, 0, T, rout);
  const double eo = vt::rel_rms(out, rout);
  const double ea = vt::rel_rms(vt::to_vec(st.A()), r.A);
  const double es = vt::rel_rms(vt::to_vec(st.S()), r.S);
  const double ez = vt::rel_rms(vt::to_vec(st.z()), r.z);
  INFO(vt::Tol<Scalar>::name << " dk=" << dk << " dv=" << dv << " T=" << T << " seed=" << seed << " refresh="
                             << cfg.refresh_period << ": o " << eo << ", A " << ea << ", S " << es << ", z " << ez);
  CHECK(st.steps() == T);
  CHECK(st.S().allFinite());
  CHECK(eo <= vt::Tol<Scalar>::ref);
  CHECK(ea <= vt::Tol<Scalar>::ref);
  CHECK(es <= vt::Tol<Scalar>::ref);
  CHECK(ez <= vt::Tol<Scalar>::ref);
  return std::max(std::max(eo, ea), std::max(es, ez));
}

}  // namespace

TEMPLATE_TEST_CASE("VlaState matches the float64 reference (refresh on and off)", "[state][reference]", float,
                   double) {
  double worst = 0;
  unsigned seed = 100;
  for (const Shape& sh : kShapes) {
    for (int period : {20, 0, 7}) {
      vla::Config cfg;
      cfg.refresh_period = period;
      worst = std::max(worst, vla_vs_reference<TestType>(sh.dk, sh.dv, 300, ++seed, cfg));
    }
  }
  WARN("VlaState<" << vt::Tol<TestType>::name << "> vs float64 reference, 15 streams of 300 steps: worst rel RMS "
                   << worst << " (tolerance " << vt::Tol<TestType>::ref << ")");
}

TEMPLATE_TEST_CASE("VlaState matches the reference under other configurations", "[state][reference]", float, double) {
  double worst = 0;
  vla::Config a;
  a.lambda0 = 1.0, a.refresh_period = 3, a.refresh_eps = 0.05;
  vla::Config b;
  b.normalize_output = false;
  vla::Config c;
  c.lambda0 = 0.01, c.stab_eps = 1e-2, c.denom_eps = 1.0, c.refresh_eps = 0.0;
  vla::Config d;
  d.refresh_period = 1;
  unsigned seed = 200;
  for (const vla::Config& cfg : {a, b, c, d}) worst = std::max(worst, vla_vs_reference<TestType>(13, 7, 400, ++seed, cfg));
  WARN("VlaState<" << vt::Tol<TestType>::name << "> vs reference, other configs: worst rel RMS " << worst);
}

// The returning step is built on the in-place one, so comparing the two alone would compare a thing
// with itself. Both are checked against the float64 reference stepped alongside (Tol<Scalar>::ref);
// the in-place one writes into a segment of a larger poisoned buffer (the neighbours must stay
// untouched, and an o of the wrong size is refused before the state changes); and the two agree
// bit for bit, outputs and state.
TEMPLATE_TEST_CASE("the step writes o in place and through the returning overload alike", "[state]", float, double) {
  const int dk = 13, dv = 7;
  const vt::Stream s = vt::rounded<TestType>(vt::random_stream(dk, dv, 40, 9));
  vla::VlaState<TestType> a(dk, dv), b(dk, dv);
  ref::Vla r(dk, dv);
  const auto q = vt::cast<TestType>(s.q), k = vt::cast<TestType>(s.k), v = vt::cast<TestType>(s.v),
             u = vt::cast<TestType>(s.u);
  vla::Vector<TestType> big = vla::Vector<TestType>::Constant(dv + 3, TestType(-6.5));
  std::vector<double> out_a, out_b, rout;
  for (int t = 0; t < s.T; ++t) {
    using M = vt::CMap<TestType>;
    const M qt(&q[t * dk], dk), kt(&k[t * dk], dk), vt_(&v[t * dv], dv), ut(&u[t * dk], dk);
    if (t == 5) {
      const auto before = b.save();
      vla::Vector<TestType> wrong(dv + 1);
      CHECK_THROWS_AS(b.step(qt, kt, vt_, ut, wrong), std::invalid_argument);
      CHECK(vt::same_snapshot(b.save(), before));
    }
    const auto o = a.step(qt, kt, vt_, ut);
    b.step(qt, kt, vt_, ut, big.segment(1, dv));
    REQUIRE(vt::bitwise_equal(o, vla::Vector<TestType>(big.segment(1, dv))));
    REQUIRE(big[0] == TestType(-6.5));
    REQUIRE(big[dv + 1] == TestType(-6.5));
    REQUIRE(big[dv + 2] == TestType(-6.5));
    for (Eigen::Index i = 0; i < dv; ++i) out_a.push_back(double(o[i])), out_b.push_back(double(big[1 + i]));
  }
  vt::run_ref(r, s, 0, s.T, rout);
  CHECK(vt::rel_rms(out_a, rout) <= vt::Tol<TestType>::ref);
  CHECK(vt::rel_rms(out_b, rout) <= vt::Tol<TestType>::ref);
  CHECK(vt::rel_rms(vt::to_vec(b.S()), r.S) <= vt::Tol<TestType>::ref);
  CHECK(vt::same_snapshot(a.save(), b.save()));
}

TEMPLATE_TEST_CASE("LinearAttentionState matches the float64 reference", "[baseline][reference]", float, double) {
  double worst = 0;
  unsigned seed = 300;
  for (const Shape& sh : kShapes) {
    for (bool normalize : {true, false}) {
      vla::Config cfg;
      cfg.normalize_output = normalize;
      const vt::Stream s = vt::rounded<TestType>(vt::random_stream(sh.dk, sh.dv, 300, ++seed));
      vla::LinearAttentionState<TestType> st(sh.dk, sh.dv, cfg);
      ref::LinearAttention r(sh.dk, sh.dv, vt::params(cfg));
      const auto q = vt::cast<TestType>(s.q), k = vt::cast<TestType>(s.k), v = vt::cast<TestType>(s.v);
      std::vector<double> out, rout(s.dv * std::size_t(s.T));
      for (int t = 0; t < s.T; ++t) {
        using M = vt::CMap<TestType>;
        const auto o = st.step(M(&q[t * sh.dk], sh.dk), M(&k[t * sh.dk], sh.dk), M(&v[t * sh.dv], sh.dv));
        for (Eigen::Index i = 0; i < o.size(); ++i) out.push_back(double(o[i]));
        r.step(s.qt(t), s.kt(t), s.vt(t), &rout[std::size_t(t) * sh.dv]);
      }
      const double eo = vt::rel_rms(out, rout), es = vt::rel_rms(vt::to_vec(st.S()), r.S),
                   ez = vt::rel_rms(vt::to_vec(st.z()), r.z);
      INFO("dk=" << sh.dk << " dv=" << sh.dv << " normalize=" << normalize << ": o " << eo << " S " << es << " z " << ez);
      CHECK(eo <= vt::Tol<TestType>::ref);
      CHECK(es <= vt::Tol<TestType>::ref);
      CHECK(ez <= vt::Tol<TestType>::ref);
      worst = std::max({worst, eo, es, ez});
    }
  }
  WARN("LinearAttentionState<" << vt::Tol<TestType>::name << "> vs reference: worst rel RMS " << worst);
}

TEMPLATE_TEST_CASE("DeltaNetState matches the float64 reference", "[baseline][reference]", float, double) {
  double worst = 0;
  unsigned seed = 400;
  for (const Shape& sh : kShapes) {
    for (bool beta_one : {false, true}) {
      vt::Stream s = vt::rounded<TestType>(vt::random_stream(sh.dk, sh.dv, 300, ++seed));
      if (beta_one) std::fill(s.beta.begin(), s.beta.end(), 1.0);
      vla::DeltaNetState<TestType> st(sh.dk, sh.dv);
      ref::DeltaNet r(sh.dk, sh.dv);
      const auto q = vt::cast<TestType>(s.q), k = vt::cast<TestType>(s.k), v = vt::cast<TestType>(s.v);
      std::vector<double> out, rout(s.dv * std::size_t(s.T));
      for (int t = 0; t < s.T; ++t) {
        using M = vt::CMap<TestType>;
        const auto o = st.step(M(&q[t * sh.dk], sh.dk), M(&k[t * sh.dk], sh.dk), M(&v[t * sh.dv], sh.dv),
                               TestType(s.beta[t]));
        for (Eigen::Index i = 0; i < o.size(); ++i) out.push_back(double(o[i]));
        r.step(s.qt(t), s.kt(t), s.vt(t), s.beta[t], &rout[std::size_t(t) * sh.dv]);
      }
      const double eo = vt::rel_rms(out, rout), es = vt::rel_rms(vt::to_vec(st.S()), r.S);
      INFO("dk=" << sh.dk << " dv=" << sh.dv << " beta_one=" << beta_one << ": o " << eo << " S " << es);
      CHECK(eo <= vt::Tol<TestType>::ref);
      CHECK(es <= vt::Tol<TestType>::ref);
      worst = std::max({worst, eo, es});
    }
  }
  WARN("DeltaNetState<" << vt::Tol<TestType>::name << "> vs reference: worst rel RMS " << worst);
}

TEST_CASE("elu_plus_one is ELU(x)+1", "[feature_map]") {
  Eigen::ArrayXd x(7);
  x << -30, -2, -1e-12, 0, 1e-12, 0.5, 40;
  const Eigen::ArrayXd y = vla::elu_plus_one(x);
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    INFO("x = " << x[i]);
    CHECK(y[i] == vt::elu1(x[i]));
    CHECK(y[i] > 0);
  }
  const Eigen::VectorXf xf = x.cast<float>().matrix();
  const Eigen::VectorXf yf = vla::elu_plus_one(xf);
  std::vector<float> raw(xf.data(), xf.data() + xf.size());
  vla::elu_plus_one_inplace(raw.data(), std::int64_t(raw.size()));
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    CHECK(yf[i] == float(xf[i] > 0 ? xf[i] + 1 : std::exp(xf[i])));
    CHECK(raw[std::size_t(i)] == yf[i]);
  }
}
