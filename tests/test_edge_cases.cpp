// Zero vectors (docs/maths.md §2: a zero key, penalty direction or α is defined behaviour, not an error) and
// tiny / huge but finite magnitudes: no NaN, defined results, agreement with the reference.
#include <limits>

#include "batch.hpp"

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

namespace {
/// A float run and the float64 reference on one random stream (dk 13, dv 7, T 60) with every input
/// scaled by `scale`, then rounded to float.
struct AllScaled {
  vt::Stream s;
  vla::VlaState<float> st{13, 7};
  ref::Vla r{13, 7};
  std::vector<double> out, rout;
  AllScaled(unsigned seed, double scale) : s(vt::random_stream(13, 7, 60, seed)) {
    for (auto* x : {&s.q, &s.k, &s.v, &s.u})
      for (double& e : *x) e *= scale;
    s = vt::rounded<float>(s);
    vt::run_vla(st, s, 0, 60, out);
    vt::run_ref(r, s, 0, 60, rout);
  }
};
}  // namespace

TEST_CASE("float: all inputs at 1e-30 at once: finite state matching the reference, outputs that underflow to ~0",
          "[magnitude]") {
  const int dk = 13, dv = 7, T = 60;
  AllScaled run(23, 1e-30);
  const vt::Stream& s = run.s;
  const vla::VlaState<float>& st = run.st;
  const ref::Vla& r = run.r;
  const std::vector<double>&out = run.out, &rout = run.rout;
  REQUIRE(st.S().allFinite());
  CHECK(vt::rel_rms(vt::to_vec(st.S()), r.S) <= vt::Tol<float>::ref);
  CHECK(vt::rel_rms(vt::to_vec(st.A()), r.A) <= vt::Tol<float>::ref);
  // True outputs are ~1e-56 (S q ~ 1e-60 over the floor ε_den = 1e-4): below float's range, so
  // the float result must be a (signed) zero or a subnormal, never NaN or large: within a few
  // float subnormal steps (1.4e-45) of the reference's.
  for (std::size_t i = 0; i < out.size(); ++i) {
    REQUIRE(std::isfinite(out[i]));
    CHECK(std::abs(out[i] - rout[i]) <= 1e-44);
  }
  // In double the same (float-rounded) inputs are far inside the range: the library's double state
  // must reproduce the reference's tiny outputs themselves, to the double tolerance.
  vla::VlaState<double> sd(dk, dv);
  std::vector<double> outd;
  vt::run_vla(sd, s, 0, T, outd);
  const double eod = vt::rel_rms(outd, rout);
  INFO("double library vs reference on the 1e-30 stream: o " << eod);
  CHECK(eod <= vt::Tol<double>::ref);
}

// Regression test (this caught a library bug, since fixed in detail::finish_output).
// With q, k and v all around 1e30 in float, the true output o = S q / max(zᵀq, ε_den) is ~1e29
// (representable), but the step forms S q (~1e60) and zᵀq (~1e62) in float: both overflowed to inf
// and gave o = inf/inf = NaN. o is homogeneous of degree 0 in q when the normaliser is on, so the
// library now recomputes from q/max|q| (and ε_den scaled to match) when either product overflows.
TEST_CASE("float: all inputs at 1e30 at once: finite state and finite outputs matching the reference",
          "[magnitude][regression]") {
  AllScaled run(29, 1e30);
  const vla::VlaState<float>& st = run.st;
  const ref::Vla& r = run.r;
  const std::vector<double>&out = run.out, &rout = run.rout;
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

// ---- The output floor, max(zᵀq, ε_den) (docs/maths.md §2.6), where it binds.
//
// Random streams of ELU+1 keys and queries always have zᵀq ≫ ε_den, so the floor never binds there.
// These cases set the state's z (any finite z is a valid state) so that after the step's z ← z + k,
// zᵀq takes a chosen value τ: z₀ = w − k with wᵀq = τ. The floor must clamp zᵀq itself — a
// negative zᵀq gives o = S q / ε_den, not S q / |zᵀq| — and each case is compared with the
// float64 reference loaded with the same state (Tol<Scalar>::ref), on the recurrent step and on the
// chunked path of the batched forward.

namespace {

template <class Scalar>
struct FloorCase {
  vla::VlaSnapshot<Scalar> snap;
  Vec<Scalar> q, k, v, u;
};

// A warmed state whose z makes (z + k)ᵀq = tau (up to rounding z to Scalar), q scaled by q_scale.
template <class Scalar>
FloorCase<Scalar> floor_case(const vla::Config& cfg, double tau, double q_scale, unsigned seed) {
  const int dk = 13, dv = 7;
  FloorCase<Scalar> c;
  c.snap = warmed<Scalar>(dk, dv, 33, seed, cfg).save();
  c.q = randv<Scalar>(dk, seed + 1, true);
  c.k = randv<Scalar>(dk, seed + 2, true);
  c.v = randv<Scalar>(dv, seed + 3, false);
  c.u = randv<Scalar>(dk, seed + 4, false);
  const Eigen::VectorXd qb = c.q.template cast<double>(), r = randv<double>(dk, seed + 5, false);
  const Eigen::VectorXd w = r + (tau - r.dot(qb)) / qb.squaredNorm() * qb;  // wᵀq_base = tau
  c.snap.z = (w - c.k.template cast<double>()).template cast<Scalar>();
  c.q = (qb * q_scale).template cast<Scalar>();
  return c;
}

// The case through VlaState::step and through the chunked batched forward, both against the reference.
// With ref_div = s ≠ 1 the reference runs on q/s with ε_den/s instead — the same function by
// homogeneity, o = S q / max(zᵀq, ε) = S (q/s) / max(zᵀ(q/s), ε/s) — so that its own float64
// products do not overflow for the huge-q cases.
template <class Scalar>
void check_floor_case(const vla::Config& cfg, const FloorCase<Scalar>& c, double zq_lo, double zq_hi,
                      double ref_div = 1) {
  const int dk = int(c.q.size()), dv = int(c.v.size());
  vla::VlaState<Scalar> st(c.snap, cfg);
  ref::Vla r = ref_from(st);
  r.p.denom_eps = cfg.denom_eps / ref_div;
  const Eigen::VectorXd qd = c.q.template cast<double>() / ref_div;
  std::vector<double> ro(static_cast<std::size_t>(dv));
  {
    const Eigen::VectorXd kd = c.k.template cast<double>(), vd = c.v.template cast<double>(),
                          ud = c.u.template cast<double>();
    r.step(qd.data(), kd.data(), vd.data(), ud.data(), ro.data());
  }
  // The reference's zᵀq (float64, after its z ← z + k) lies where the case intends; zq_lo, zq_hi
  // bound zᵀ(q/ref_div).
  const double zq = Eigen::Map<const Eigen::VectorXd>(r.z.data(), dk).dot(qd);
  INFO(vt::Tol<Scalar>::name << ": zᵀq = " << zq << " × " << ref_div << ", denom_eps " << cfg.denom_eps << ", max|q| "
                             << c.q.cwiseAbs().maxCoeff());
  REQUIRE(zq >= zq_lo);
  REQUIRE(zq <= zq_hi);
  const Vec<Scalar> o = st.step(c.q, c.k, c.v, c.u);
  REQUIRE(o.allFinite());
  // ‖out − ref‖/‖ref‖ after dividing both by max|ref| (outputs reach 1e300 in double: their squares
  // would overflow).
  double big = 0;
  for (double x : ro) big = std::max(big, std::abs(x));
  REQUIRE(big > 0);
  auto rel = [&](const std::vector<double>& out) {
    std::vector<double> a(out.size()), b(ro.size());
    for (std::size_t i = 0; i < out.size(); ++i) a[i] = out[i] / big;
    for (std::size_t i = 0; i < ro.size(); ++i) b[i] = ro[i] / big;
    return vt::rel_rms(a, b);
  };
  const double e_step = rel(vt::to_vec(o));
  // The chunked path (its own output code, chunked::finish_outputs), one sequence of one token.
  vt::StateBuf<Scalar> init(1, dk, dv), fin(1, dk, dv);
  init.put(0, c.snap);
  std::vector<Scalar> q(c.q.data(), c.q.data() + dk), k(c.k.data(), c.k.data() + dk), u(c.u.data(), c.u.data() + dk),
      v(c.v.data(), c.v.data() + dv), oc(std::size_t(dv), Scalar(-1));
  vla::ForwardArgs<Scalar> a;
  a.batch = 1, a.seq_len = 1, a.heads = 1, a.dk = dk, a.dv = dv;
  a.q = q.data(), a.k = k.data(), a.v = v.data(), a.u = u.data(), a.o = oc.data();
  a.initial_state = init.in(), a.final_state = fin.out();
  vla::CpuOptions opt;
  opt.path = vla::Path::chunked;
  vla::forward<vla::backend::Cpu>(a, cfg, opt);
  std::vector<double> ocd(oc.begin(), oc.end());
  const double e_chunk = rel(ocd);
  INFO("recurrent step vs reference " << e_step << ", chunked path vs reference " << e_chunk);
  CHECK(e_step <= vt::Tol<Scalar>::ref);
  CHECK(e_chunk <= vt::Tol<Scalar>::ref);
}

}  // namespace

TEMPLATE_TEST_CASE("the output floor binds for zT q <= denom_eps, negative zT q included", "[floor][reference]", float,
                   double) {
  vla::Config def;  // ε_den = 1e-4
  vla::Config wide;
  wide.denom_eps = 0.5;  // wide enough that float rounding of zᵀq (~1e-6) cannot cross it
  SECTION("zT q = -1 (|zT q| far above the floor): o = S q / eps_den") {
    check_floor_case<TestType>(def, floor_case<TestType>(def, -1.0, 1.0, 41), -1.01, -0.99);
  }
  SECTION("zT q = -3, eps_den = 0.5") {
    check_floor_case<TestType>(wide, floor_case<TestType>(wide, -3.0, 1.0, 43), -3.01, -2.99);
  }
  SECTION("zT q = -0.6, just beyond -eps_den = -0.5") {
    check_floor_case<TestType>(wide, floor_case<TestType>(wide, -0.6, 1.0, 45), -0.61, -0.59);
  }
  SECTION("0 < zT q = 0.2 < eps_den = 0.5") {
    check_floor_case<TestType>(wide, floor_case<TestType>(wide, 0.2, 1.0, 47), 0.19, 0.21);
  }
  SECTION("zT q = 0.9 > eps_den = 0.5: the floor does not bind") {
    check_floor_case<TestType>(wide, floor_case<TestType>(wide, 0.9, 1.0, 49), 0.89, 0.91);
  }
}

// Huge q (docs/maths.md §2, "Huge q"): when zᵀq overflows, the output is recomputed from q̃ = q/max|q|
// by rules::rescaled_output, whose second branch is the floor: o = S q̃ · (max|q| / ε_den) when
// zᵀq̃·max|q| ≤ ε_den. A negative zᵀq that overflows reaches exactly that branch. ε_den = 1e6 keeps
// o = S q / ε_den representable (q ~ 1e35 in float, 1e305 in double; zᵀq ~ −1e40 / −1e310 overflows).
TEMPLATE_TEST_CASE("huge q with zT q overflowing below the floor: the rescaled floor branch", "[floor][magnitude]",
                   float, double) {
  vla::Config cfg;
  cfg.denom_eps = 1e6;
  const double scale = std::is_same<TestType, float>::value ? 1e35 : 1e305;
  const FloorCase<TestType> c = floor_case<TestType>(cfg, -1e5, scale, 51);
  // The library's own zᵀq overflows, so the rescaled path is the one taken.
  REQUIRE_FALSE(std::isfinite((c.snap.z + c.k).dot(c.q)));
  check_floor_case<TestType>(cfg, c, -1e5 * 1.01, -1e5 * 0.99, scale);
  // And the non-binding branch of the same path: zᵀq ≈ +1e5·scale overflows positive.
  const FloorCase<TestType> p = floor_case<TestType>(cfg, 1e5, scale, 53);
  REQUIRE_FALSE(std::isfinite((p.snap.z + p.k).dot(p.q)));
  check_floor_case<TestType>(cfg, p, 1e5 * 0.99, 1e5 * 1.01, scale);
}

// DeltaNet with a zero key (docs/maths.md §7: a zero key writes nothing): S is unchanged and the output is
// still S q — computed here in float64 from the restored S, not by the library. Recurrent step, and
// the batched forward on both paths with the zero key in the middle of a sequence.
TEMPLATE_TEST_CASE("DeltaNet: a zero key writes nothing and outputs S q", "[zero][baseline]", float, double) {
  const int dk = 13, dv = 7;
  std::mt19937 rng(61);
  std::normal_distribution<double> n01;
  vla::Matrix<TestType> s0(dv, dk);
  for (Eigen::Index j = 0; j < dk; ++j)
    for (Eigen::Index i = 0; i < dv; ++i) s0(i, j) = TestType(n01(rng));
  const Vec<TestType> q = randv<TestType>(dk, 62, true), v = randv<TestType>(dv, 63, false);
  const Eigen::VectorXd sq = s0.template cast<double>() * q.template cast<double>();
  vla::DeltaNetState<TestType> st(s0);
  const Vec<TestType> o = st.step(q, Vec<TestType>::Zero(dk), v, TestType(0.7));
  CHECK(vt::bitwise_equal(st.S(), s0));
  CHECK(vt::rel_rms(vt::to_vec(o), vt::to_vec(sq)) <= vt::Tol<TestType>::ref);

  // Batched: 3 tokens, the middle key zero; the middle output is S₁ q₁ with S₁ after token 0.
  vt::Batch<TestType> b = vt::random_batch<TestType>(1, 3, 1, dk, dv, 64);
  std::fill(b.k.begin() + dk, b.k.begin() + 2 * dk, TestType(0));
  ref::DeltaNet rd(dk, dv);
  rd.S = vt::to_vec(s0);
  std::vector<double> ro(std::size_t(3 * dv)), s1q;
  for (int t = 0; t < 3; ++t) {
    const auto x = vt::token(b, t, 0);
    const Eigen::VectorXd qd = x.q.template cast<double>(), kd = x.k.template cast<double>(), vd = x.v.template cast<double>();
    if (t == 1)  // S₁ q₁ formed directly from the reference's S after token 0
      s1q = vt::to_vec(Eigen::VectorXd(Eigen::Map<const Eigen::Matrix<double, -1, -1, Eigen::RowMajor>>(rd.S.data(), dv, dk) * qd));
    rd.step(qd.data(), kd.data(), vd.data(), double(x.beta), &ro[std::size_t(t * dv)]);
  }
  vt::StateBuf<TestType> init(1, dk, dv);
  init.put_S(0, s0);
  for (vla::Path path : {vla::Path::recurrent, vla::Path::chunked}) {
    INFO((path == vla::Path::chunked ? "chunked" : "recurrent"));
    std::fill(b.o.begin(), b.o.end(), TestType(-7));
    auto a = b.args();
    a.initial_state.S = init.S.data();
    vla::CpuOptions opt;
    opt.path = path;
    vla::deltanet_forward<vla::backend::Cpu>(a, vla::Config{}, opt);
    std::vector<double> od(b.o.begin(), b.o.end());
    CHECK(vt::rel_rms(std::vector<double>(od.begin() + dv, od.begin() + 2 * dv), s1q) <= vt::Tol<TestType>::ref);
    CHECK(vt::rel_rms(od, ro) <= vt::Tol<TestType>::ref);
  }
}
