// Long streams: boundedness of ‖S_t‖_F (docs/maths.md §1, "Proposition 1") and adversarial streams in float
// against double (docs/maths.md §6), with cond(A) estimated and checked against an exact eigen-solve.
#include <Eigen/Eigenvalues>

#include <iostream>
#include <limits>

#include "support.hpp"

namespace {

using VecD = Eigen::VectorXd;

double exact_cond(const Eigen::MatrixXd& a) {
  const VecD lam = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(a, Eigen::EigenvaluesOnly).eigenvalues();
  return lam.minCoeff() > 0 ? lam.maxCoeff() / lam.minCoeff() : std::numeric_limits<double>::infinity();
}

}  // namespace

// Boundedness: 10,000 steps of bounded inputs (q, k = ELU(x)+1 and v, u with x uniform in [−1, 1]).
// ‖S_t‖_F, taken relative to its value at t = 100, stays within a small constant: measured max
// ratio 1.34 and min ratio 0.995 (printed); the bounds asserted are 4 and 1/4. Linear attention
// on the same stream is printed beside it (its ‖S‖ grows like t: 126× VLA's at T = 10,000).
TEMPLATE_TEST_CASE("Proposition 1: 10,000 bounded steps keep ||S_t||_F within a constant of its t=100 value",
                   "[stability][bounded]", float, double) {
  const int dk = 32, dv = 32, T = 10000;
  for (int period : {20, 0}) {
    vla::Config cfg;
    cfg.refresh_period = period;
    std::mt19937 rng(77 + unsigned(period));
    std::uniform_real_distribution<double> pm1(-1.0, 1.0);
    vla::VlaState<TestType> st(dk, dv, cfg);
    vla::LinearAttentionState<TestType> la(dk, dv, cfg);
    vla::Vector<TestType> q(dk), k(dk), v(dv), u(dk), o(dv);
    double s100 = 0, hi = 0, lo = 1e300;
    for (int t = 1; t <= T; ++t) {
      for (int i = 0; i < dk; ++i) q[i] = TestType(vt::elu1(pm1(rng)));
      for (int i = 0; i < dk; ++i) k[i] = TestType(vt::elu1(pm1(rng)));
      for (int i = 0; i < dk; ++i) u[i] = TestType(pm1(rng));
      for (int i = 0; i < dv; ++i) v[i] = TestType(pm1(rng));
      st.step(q, k, v, u, o);
      la.step(q, k, v);
      REQUIRE(o.allFinite());
      const double sn = double(st.S().norm());
      REQUIRE(std::isfinite(sn));
      if (t == 100) s100 = sn;
      if (t >= 100) hi = std::max(hi, sn), lo = std::min(lo, sn);
    }
    REQUIRE(st.A().allFinite());
    REQUIRE(st.z().allFinite());
    const double final_ratio = double(st.S().norm()) / s100, max_ratio = hi / s100, min_ratio = lo / s100;
    INFO("refresh " << period << ": ||S_100|| " << s100 << ", max/||S_100|| " << max_ratio);
    CHECK(max_ratio <= 4.0);
    CHECK(min_ratio >= 0.25);
    const double la_ratio = double(la.S().norm()) / double(st.S().norm());
    WARN("boundedness " << vt::Tol<TestType>::name << " refresh=" << period << ": ||S_t||_F / ||S_100||_F over t in "
                        << "[100, 10000]: min " << min_ratio << ", max " << max_ratio << ", final " << final_ratio
                        << "; ||S||_F linear attention / VLA at T=10000: " << la_ratio);
    std::cout << "[vla-tests] boundedness " << vt::Tol<TestType>::name << " refresh=" << period
              << ": max ||S_t||/||S_100|| = " << max_ratio << ", final " << final_ratio << "\n";
  }
}

// ---- Adversarial streams, float against double (docs/maths.md §6).

namespace {

using vt::Kind;
using vt::kind_name;
using vt::adversarial;

struct Measured {
  double err_o = 0, err_S = 0, cond_max = 0, cond_est_err = 0, jac_max = 0;
  bool cond_est_low = true;  // the estimate never exceeded the exact value (beyond rounding)
};

// Runs the stream in float and double; returns float-vs-double relative RMS of the outputs and the
// final S, the largest cond(A) along the stream and the worst relative error of condition_estimate
// against the exact eigen-solve at every checkpoint.
Measured float_vs_double(const vt::Stream& s, const vla::Config& cfg) {
  vla::VlaState<float> f(s.dk, s.dv, cfg);
  vla::VlaState<double> d(s.dk, s.dv, cfg);
  const auto q = vt::cast<float>(s.q), k = vt::cast<float>(s.k), v = vt::cast<float>(s.v), u = vt::cast<float>(s.u);
  Eigen::VectorXf of(s.dv);
  Eigen::VectorXd od(s.dv);
  double num = 0, den = 0;
  Measured m;
  const std::size_t dk = std::size_t(s.dk), dv = std::size_t(s.dv);
  for (int t = 0; t < s.T; ++t) {
    using MF = vt::CMap<float>;
    const MF qf(&q[t * dk], s.dk), kf(&k[t * dk], s.dk), vf(&v[t * dv], s.dv), uf(&u[t * dk], s.dk);
    f.step(qf, kf, vf, uf, of);
    d.step(qf.cast<double>(), kf.cast<double>(), vf.cast<double>(), uf.cast<double>(), od);
    REQUIRE(of.allFinite());
    num += (of.cast<double>() - od).squaredNorm(), den += od.squaredNorm();
    if ((t + 1) % 1000 == 0) {
      REQUIRE(f.S().allFinite());
      REQUIRE(f.A().allFinite());
      const double c_exact_d = exact_cond(d.A());
      const double c_exact_f = exact_cond(f.A().cast<double>());
      m.cond_max = std::max(m.cond_max, c_exact_d);
      // condition_estimate against the exact eigen-solve of the same matrix, float and double.
      const double est_f = double(f.penalty().condition_estimate());
      const double est_d = d.penalty().condition_estimate();
      m.cond_est_low = m.cond_est_low && est_f <= c_exact_f * (1 + 1e-4) && est_d <= c_exact_d * (1 + 1e-10);
      m.cond_est_err = std::max({m.cond_est_err, std::abs(est_f - c_exact_f) / c_exact_f,
                                 std::abs(est_d - c_exact_d) / c_exact_d});
      m.jac_max = std::max(m.jac_max, vla::jacobian_norm(vla::write_alignment<double>(d.A(), kf.cast<double>())));
    }
  }
  m.err_o = std::sqrt(num / den);
  m.err_S = vt::rel_rms(vt::to_vec(f.S()), vt::to_vec(d.S()));
  return m;
}

}  // namespace

// Bounds, float vs double, relative RMS over the whole 10,000-step stream (dk = dv = 32).
// Float rounding in the Sherman–Morrison form perturbs A by ~eps·‖A‖ per step, which relative to
// A's smallest eigenvalue is ~eps·cond(A): the write direction α̂ = A k̂/‖A k̂‖ is off by that much
// whenever k̂ lies near A's small eigen-directions, and the errors add up like a random walk. So the
// bounds scale with g = eps_float · max cond(A) · √T:
//   outputs ≤ 0.4 · g,  final S ≤ 16 · g   (about 10× over the measured constants).
// Measured (printed below as K_o = err_o/g, K_S = err_S/g): K_o ≤ 0.04, K_S ≤ 1.6 — the largest
// for one key repeated with u = k, where cond(A) = 1 + T/(λ0·dk) ≈ 3,126 without the refresh and
// S's float error reaches 4.6e-2 (4.9e-3 with the refresh, cond ≈ 259). Benign streams (cond < 500)
// stay below 1.4e-5 (S) and 8.3e-7 (outputs).
// cond(A): condition_estimate (20 iterations) against the exact eigen-solve of the same A at every
// 1,000th step, float and double. It is a lower bound; its accuracy is set by the gaps at the ends
// of A's spectrum, not by cond: measured ≤ 10.2 % (the worst on nearly isotropic A, cond < 2,
// whose clustered spectrum slows the power iterations), ≤ 8 % where cond(A) > 50. Asserted: 15 %.
TEST_CASE("adversarial streams: float stays close to double, cond(A) estimate checked, no NaN over 10k steps",
          "[stability][adversarial]") {
  const int dk = 32, dv = 32, T = 10000;
  const double eps = std::numeric_limits<float>::epsilon(), K_o = 0.4, K_S = 16.0, bound_cond = 0.15;
  struct Row {
    Kind kind;
    int period;
  };
  const Row rows[] = {
      {Kind::Aligned, 20},  {Kind::Aligned, 0},  {Kind::RepeatedKey, 20}, {Kind::RepeatedKey, 0},
      {Kind::RepeatedAligned, 20}, {Kind::RepeatedAligned, 0}, {Kind::Subspace, 20}, {Kind::Subspace, 0},
      {Kind::Drift, 20},    {Kind::Drift, 0},    {Kind::Outliers, 20},    {Kind::Outliers, 0},
  };
  double cond_of[6][2] = {};
  unsigned seed = 500;
  for (const Row& r : rows) {
    vla::Config cfg;
    cfg.refresh_period = r.period;
    const vt::Stream s = adversarial(r.kind, dk, dv, T, ++seed);
    const Measured m = float_vs_double(s, cfg);
    INFO(kind_name(r.kind) << ", refresh " << r.period);
    const double g = eps * m.cond_max * std::sqrt(double(T));
    CHECK(m.err_o <= K_o * g);
    CHECK(m.err_S <= K_S * g);
    cond_of[int(r.kind)][r.period == 0] = m.cond_max;
    CHECK(m.cond_est_err <= bound_cond);
    CHECK(m.cond_est_low);
    WARN("adversarial " << kind_name(r.kind) << ", refresh=" << r.period << ": float vs double rel RMS o "
                        << m.err_o << ", S " << m.err_S << "; max cond(A) " << m.cond_max
                        << "; cond estimate rel err " << m.cond_est_err << "; ||J|| at checkpoints <= " << m.jac_max << "; K_o " << m.err_o / g
                        << ", K_S " << m.err_S / g);
    std::cout << "[vla-tests] adversarial " << kind_name(r.kind) << " refresh=" << r.period << ": o " << m.err_o
              << " S " << m.err_S << " cond " << m.cond_max << " est-err " << m.cond_est_err << " K_o " << m.err_o / g << " K_S "
              << m.err_S / g << "\n";
  }
  // Without the refresh, a repeated penalty direction grows M along one direction only:
  // M = λ0·I + t·ûûᵀ with ‖û‖² = 1/dk, so cond(A) = 1 + t/(λ0·dk) exactly — 3,126 at t = 10,000.
  CHECK(std::abs(cond_of[int(Kind::RepeatedAligned)][1] / (1 + T / (0.1 * dk)) - 1) <= 1e-6);
  // The refresh floors A's small eigenvalues (docs/maths.md §6): cond(A) is far lower with it.
  CHECK(cond_of[int(Kind::RepeatedAligned)][0] * 5 < cond_of[int(Kind::RepeatedAligned)][1]);
  CHECK(cond_of[int(Kind::Subspace)][0] * 2 < cond_of[int(Kind::Subspace)][1]);
}
