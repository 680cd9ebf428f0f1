// Zero vectors (docs/maths.md §2: a zero key, penalty direction or α is defined behaviour, not an error) and
// tiny / huge but finite magnitudes: no NaN, defined results, agreement with the reference.
#include <limits>

#include "support.hpp"

namespace {

template <class Scalar>
using Vec = vla::Vector<Scalar>;

// A state warmed up on `steps` random steps (not a multiple of 20, so the next step refreshes only
// if asked for).
template <class Scalar>
vla::VlaState<Scalar> warmed(int dk, int dv, int steps, unsigned seed, const vla::Config& cfg = {}) {
  vla::VlaState<Scalar> st(dk, dv, cfg);
  std::vector<double> sink;
  vt::run_vla(st, vt::random_stream(dk, dv, steps, seed), 0, steps, sink);
  return st;
}

template <class Scalar>
Vec<Scalar> randv(int n, unsigned seed, bool positive) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n01;
  Vec<Scalar> x(n);
  for (int i = 0; i < n; ++i) x[i] = Scalar(positive ? vt::elu1(n01(rng)) : n01(rng));
  return x;
}

// The reference, loaded with a library state, for one step.
template <class Scalar>
ref::Vla ref_from(const vla::VlaState<Scalar>& st) {
  ref::Vla r(int(st.dk()), int(st.dv()), vt::params(st.config()));
  r.A = vt::to_vec(st.A()), r.S = vt::to_vec(st.S()), r.z = vt::to_vec(st.z()), r.t = st.steps();
  return r;
}

template <class Scalar>
std::vector<double> ref_step(ref::Vla& r, const Vec<Scalar>& q, const Vec<Scalar>& k, const Vec<Scalar>& v,
                             const Vec<Scalar>& u) {
  const Eigen::VectorXd qd = q.template cast<double>(), kd = k.template cast<double>(), vd = v.template cast<double>(),
                        ud = u.template cast<double>();
  std::vector<double> o(std::size_t(v.size()));
  r.step(qd.data(), kd.data(), vd.data(), ud.data(), o.data());
  return o;
}

}  // namespace

TEMPLATE_TEST_CASE("a zero key writes nothing: S and z unchanged, A still updated", "[zero]", float, double) {
  const int dk = 13, dv = 7;
  auto st = warmed<TestType>(dk, dv, 33, 1);
  const auto before = st.save();
  ref::Vla r = ref_from(st);
  Vec<TestType> k = Vec<TestType>::Zero(dk);
  k[3] = -TestType(0);  // a negative zero is a zero too
  const Vec<TestType> q = randv<TestType>(dk, 2, true), v = randv<TestType>(dv, 3, false), u = randv<TestType>(dk, 4, false);
  const Vec<TestType> o = st.step(q, k, v, u);
  CHECK(vt::bitwise_equal(st.S(), before.S));
  CHECK(vt::bitwise_equal(st.z(), before.z));
  CHECK_FALSE(vt::bitwise_equal(st.A(), before.A));  // the penalty update still happens
  CHECK(st.steps() == before.steps + 1);
  REQUIRE(o.allFinite());
  const auto ro = ref_step(r, q, k, v, u);
  CHECK(vt::rel_rms(vt::to_vec(o), ro) <= vt::Tol<TestType>::ref);
  CHECK(vt::rel_rms(vt::to_vec(st.A()), r.A) <= vt::Tol<TestType>::ref);
}

TEMPLATE_TEST_CASE("a zero penalty direction leaves A unchanged (the refresh still falls on time)", "[zero]", float,
                   double) {
  const int dk = 13, dv = 7;
  auto st = warmed<TestType>(dk, dv, 33, 5);  // next step is t = 33: no refresh
  const auto before = st.save();
  const Vec<TestType> q = randv<TestType>(dk, 6, true), k = randv<TestType>(dk, 7, true), v = randv<TestType>(dv, 8, false);
  const Vec<TestType> u = Vec<TestType>::Zero(dk);
  ref::Vla r = ref_from(st);
  const Vec<TestType> o = st.step(q, k, v, u);
  CHECK(vt::bitwise_equal(st.A(), before.A));
  CHECK_FALSE(vt::bitwise_equal(st.S(), before.S));  // the write still happens
  const auto ro = ref_step(r, q, k, v, u);
  CHECK(vt::rel_rms(vt::to_vec(o), ro) <= vt::Tol<TestType>::ref);
  CHECK(vt::rel_rms(vt::to_vec(st.S()), r.S) <= vt::Tol<TestType>::ref);
  // At a refresh step (t+1 = 40), a zero u gives exactly A + refresh_eps·I.
  std::vector<double> sink;
  vt::run_vla(st, vt::random_stream(dk, dv, 5, 9), 0, 5, sink);  // steps 34..38
  REQUIRE(st.steps() == 39);
  vla::Matrix<TestType> expect = st.A();
  expect.diagonal().array() += TestType(st.config().refresh_eps);
  st.step(q, k, v, u);
  CHECK(vt::bitwise_equal(st.A(), expect));
}

TEMPLATE_TEST_CASE("a zero alpha (A so small that A k underflows) writes nothing, no NaN", "[zero]", float, double) {
  const int dk = 6, dv = 4;
  vla::VlaSnapshot<TestType> snap;
  snap.A = vla::Matrix<TestType>::Identity(dk, dk) * std::numeric_limits<TestType>::denorm_min();
  snap.S = vla::Matrix<TestType>::Constant(dv, dk, TestType(0.5));
  snap.z = Vec<TestType>::Constant(dk, TestType(2));
  snap.steps = 3;
  vla::VlaState<TestType> st(snap, vla::Config{});
  const Vec<TestType> q = randv<TestType>(dk, 10, true), k = randv<TestType>(dk, 11, true), v = randv<TestType>(dv, 12, false);
  const Vec<TestType> o = st.step(q, k, v, Vec<TestType>::Zero(dk));
  CHECK(vt::bitwise_equal(st.S(), snap.S));
  CHECK(o.allFinite());
  CHECK(st.A().allFinite());
  CHECK(vt::bitwise_equal(st.z(), Vec<TestType>(snap.z + k)));
}

TEMPLATE_TEST_CASE("zero q gives o = 0 and an all-zero step changes nothing but the step count", "[zero]", float, double) {
  const int dk = 13, dv = 7;
  auto st = warmed<TestType>(dk, dv, 21, 13);
  const auto before = st.save();
  const Vec<TestType> zk = Vec<TestType>::Zero(dk), zv = Vec<TestType>::Zero(dv);
  const Vec<TestType> o = st.step(zk, zk, zv, zk);
  CHECK(o.isZero(0));
  CHECK(vt::bitwise_equal(st.A(), before.A));
  CHECK(vt::bitwise_equal(st.S(), before.S));
  CHECK(vt::bitwise_equal(st.z(), before.z));
  CHECK(st.steps() == before.steps + 1);
  // With the normaliser off too.
  vla::Config off;
  off.normalize_output = false;
  vla::VlaState<TestType> st2(dk, dv, off);
  CHECK(st2.step(zk, zk, zv, zk).isZero(0));
  // A fresh state's first output with a zero key: S = 0, so o = 0 exactly.
  vla::VlaState<TestType> st3(dk, dv);
  CHECK(st3.step(randv<TestType>(dk, 14, true), zk, randv<TestType>(dv, 15, false), randv<TestType>(dk, 16, false))
            .isZero(0));
}

TEMPLATE_TEST_CASE("a long stream with many zero vectors matches the reference, no NaN", "[zero][reference]", float,
                   double) {
  const int dk = 13, dv = 7, T = 500;
  vt::Stream s = vt::random_stream(dk, dv, T, 17);
  vt::zero_some_vectors(s, 18);
  s = vt::rounded<TestType>(s);
  vla::VlaState<TestType> st(dk, dv);
  ref::Vla r(dk, dv);
  std::vector<double> out, rout;
  vt::run_vla(st, s, 0, T, out);
  vt::run_ref(r, s, 0, T, rout);
  for (double x : out) REQUIRE(std::isfinite(x));
  CHECK(vt::rel_rms(out, rout) <= vt::Tol<TestType>::ref);
  CHECK(vt::rel_rms(vt::to_vec(st.S()), r.S) <= vt::Tol<TestType>::ref);
}

// ---- Magnitudes: each input scaled on its own to tiny and huge (but finite) values, then all at once.

namespace {
template <class Scalar>
void scaled_stream_vs_reference(int which, double scale, double tol) {
  const int dk = 13, dv = 7, T = 60;
  vt::Stream s = vt::random_stream(dk, dv, T, 19 + unsigned(which));
  std::vector<double>* target[] = {&s.q, &s.k, &s.v, &s.u};
  const char* names[] = {"q", "k", "v", "u"};
  for (double& x : *target[which]) x *= scale;
  s = vt::rounded<Scalar>(s);
  vla::VlaState<Scalar> st(dk, dv);
  ref::Vla r(dk, dv);
  std::vector<double> out, rout;
  vt::run_vla(st, s, 0, T, out);
  vt::run_ref(r, s, 0, T, rout);
  INFO(vt::Tol<Scalar>::name << ": " << names[which] << " scaled by " << scale);
  REQUIRE(st.A().allFinite());
  REQUIRE(st.S().allFinite());
  REQUIRE(st.z().allFinite());
  for (double x : out) REQUIRE(std::isfinite(x));
  const double eo = vt::rel_rms(out, rout), es = vt::rel_rms(vt::to_vec(st.S()), r.S),
               ea = vt::rel_rms(vt::to_vec(st.A()), r.A), ez = vt::rel_rms(vt::to_vec(st.z()), r.z);
  INFO("o " << eo << " S " << es << " A " << ea << " z " << ez);
  CHECK(eo <= tol);
  CHECK(es <= tol);
  CHECK(ea <= tol);
  CHECK(ez <= tol);
}
}  // namespace

TEST_CASE("float: each input at 1e-30 or 1e30 alone gives the reference's result", "[magnitude][reference]") {
  for (int which = 0; which < 4; ++which)
    for (double scale : {1e-30, 1e30}) scaled_stream_vs_reference<float>(which, scale, vt::Tol<float>::ref);
}

TEST_CASE("double: each input at 1e-150 or 1e150 alone gives the reference's result", "[magnitude][reference]") {
  for (int which = 0; which < 4; ++which)
    for (double scale : {1e-150, 1e150}) scaled_stream_vs_reference<double>(which, scale, vt::Tol<double>::ref);
}

TEST_CASE("float: all inputs at 1e-30 at once: finite state matching the reference, outputs that underflow to ~0",
          "[magnitude]") {
  const int dk = 13, dv = 7, T = 60;
  vt::Stream s = vt::random_stream(dk, dv, T, 23);
  for (auto* x : {&s.q, &s.k, &s.v, &s.u})
    for (double& e : *x) e *= 1e-30;
  s = vt::rounded<float>(s);
  vla::VlaState<float> st(dk, dv);
  ref::Vla r(dk, dv);
  std::vector<double> out, rout;
  vt::run_vla(st, s, 0, T, out);
  vt::run_ref(r, s, 0, T, rout);
  REQUIRE(st.S().allFinite());
  CHECK(vt::rel_rms(vt::to_vec(st.S()), r.S) <= vt::Tol<float>::ref);
  CHECK(vt::rel_rms(vt::to_vec(st.A()), r.A) <= vt::Tol<float>::ref);
  // True outputs are ~1e-56 (S q ~ 1e-60 over the floor ε_den = 1e-4): below float's range, so
  // the float result must be a (signed) zero or a subnormal, never NaN or large.
  for (std::size_t i = 0; i < out.size(); ++i) {
    REQUIRE(std::isfinite(out[i]));
    CHECK(std::abs(out[i]) <= 1e-44);
    CHECK(std::abs(rout[i]) <= 1e-44);
  }
}

// Regression test (this caught a library bug, since fixed in detail::finish_output).
// With q, k and v all around 1e30 in float, the true output o = S q / max(zᵀq, ε_den) is ~1e29
// (representable), but the step forms S q (~1e60) and zᵀq (~1e62) in float: both overflowed to inf
// and gave o = inf/inf = NaN. o is homogeneous of degree 0 in q when the normaliser is on, so the
// library now recomputes from q/max|q| (and ε_den scaled to match) when either product overflows.
TEST_CASE("float: all inputs at 1e30 at once: finite state and finite outputs matching the reference",
          "[magnitude][regression]") {
  const int dk = 13, dv = 7, T = 60;
  vt::Stream s = vt::random_stream(dk, dv, T, 29);
  for (auto* x : {&s.q, &s.k, &s.v, &s.u})
    for (double& e : *x) e *= 1e30;
  s = vt::rounded<float>(s);
  vla::VlaState<float> st(dk, dv);
  ref::Vla r(dk, dv);
  std::vector<double> out, rout;
  vt::run_vla(st, s, 0, T, out);
  vt::run_ref(r, s, 0, T, rout);
  CHECK(st.A().allFinite());
  CHECK(st.S().allFinite());
  CHECK(st.z().allFinite());
  CHECK(vt::rel_rms(vt::to_vec(st.S()), r.S) <= vt::Tol<float>::ref);
  int nonfinite = 0;
  for (double x : out) nonfinite += !std::isfinite(x);
  INFO("non-finite outputs: " << nonfinite << " of " << out.size() << "; o_0[0] = " << out[0] << ", reference "
                                << rout[0]);
  CHECK(nonfinite == 0);
  if (nonfinite == 0) CHECK(vt::rel_rms(out, rout) <= vt::Tol<float>::ref);
}

// Regression test (this caught a library bug, since fixed by Config::validate_for<Scalar>).
// Config::validate() checks denom_eps > 0 in double, but VlaState<float> rounds it to float once:
// denom_eps = 1e-50 passed and became 0.0f, so a zero q gave o = 0 / max(0, 0) = NaN — the division
// by zero the floor exists to stop. States now reject floors that vanish in their scalar.
TEST_CASE("float: a valid denom_eps that underflows in float never lets o divide by zero", "[zero][regression]") {
  vla::Config cfg;
  cfg.denom_eps = 1e-50;
  REQUIRE_NOTHROW(cfg.validate());                // fine as a double
  REQUIRE_NOTHROW(cfg.validate_for<double>());    // and in a double state
  CHECK_THROWS_WITH(cfg.validate_for<float>(), Catch::Contains("denom_eps"));
  CHECK_THROWS_AS((vla::VlaState<float>(4, 3, cfg)), std::invalid_argument);
  CHECK_THROWS_AS((vla::LinearAttentionState<float>(4, 3, cfg)), std::invalid_argument);
  vla::Config stab = vla::Config{};
  stab.stab_eps = 1e-60;
  CHECK_THROWS_WITH(stab.validate_for<float>(), Catch::Contains("stab_eps"));
  vla::Config lam = vla::Config{};
  lam.lambda0 = 1e-45;  // rounds to a float subnormal: 1/λ0 overflows
  CHECK_THROWS_WITH(lam.validate_for<float>(), Catch::Contains("lambda0"));
  // A double state with the same config steps without a NaN.
  vla::VlaState<double> st(4, 3, cfg);
  const Eigen::VectorXd zero = Eigen::VectorXd::Zero(4), one = Eigen::VectorXd::Ones(4);
  CHECK(st.step(zero, one, Eigen::VectorXd::Ones(3), one).allFinite());
}
