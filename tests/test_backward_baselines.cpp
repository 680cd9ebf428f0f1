// The baselines' backward (docs/maths.md §9b, vla/backward.hpp): linear attention and DeltaNet
// against central finite differences of their own forwards in double (every input, β and the
// initial state; normaliser on and off, the output floor binding, a zero key), float against
// double, and the batched vla::backward against the single-head routines bit for bit.
#include <cmath>
#include <random>

#include "support.hpp"
#include "vla/backward.hpp"

namespace {

using MatD = Eigen::MatrixXd;
using VecD = Eigen::VectorXd;
using RowMatD = Eigen::Matrix<double, -1, -1, Eigen::RowMajor>;

double elu1(double x) { return x > 0 ? x + 1 : std::exp(x); }

struct BaseProblem {
  vla::Config cfg;
  MatD S0, Q, K, V, dO, dS;
  VecD z0, beta, dz;
};

BaseProblem make_base(int dk, int dv, int T, unsigned seed, bool normalize) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n01;
  std::uniform_real_distribution<double> u01(0.1, 1.0);
  BaseProblem p;
  p.cfg.normalize_output = normalize;
  auto fill = [&](MatD& m, int r, int c, bool feature, double scale) {
    m = MatD(r, c);
    for (int i = 0; i < r; ++i)
      for (int j = 0; j < c; ++j) m(i, j) = feature ? elu1(n01(rng)) : scale * n01(rng);
  };
  fill(p.S0, dv, dk, false, 0.3);
  fill(p.Q, T, dk, true, 1);
  fill(p.K, T, dk, true, 1);
  fill(p.V, T, dv, false, 1);
  fill(p.dO, T, dv, false, 1);
  fill(p.dS, dv, dk, false, 1);
  p.z0 = VecD(dk), p.dz = VecD(dk), p.beta = VecD(T);
  for (int j = 0; j < dk; ++j) p.z0[j] = elu1(n01(rng)), p.dz[j] = n01(rng);
  for (int t = 0; t < T; ++t) p.beta[t] = u01(rng);
  return p;
}

double la_loss(const BaseProblem& p, const MatD& S0, const VecD& z0, const MatD& Q, const MatD& K, const MatD& V) {
  vla::LinearAttentionState<double> st(S0, z0, p.cfg);
  double L = 0;
  for (int t = 0; t < Q.rows(); ++t)
    L += p.dO.row(t).dot(st.step(Q.row(t).transpose(), K.row(t).transpose(), V.row(t).transpose()).transpose());
  return L + (p.dS.array() * st.S().array()).sum() + p.dz.dot(st.z());
}

double dn_loss(const BaseProblem& p, const MatD& S0, const MatD& Q, const MatD& K, const MatD& V, const VecD& beta) {
  vla::DeltaNetState<double> st(S0);
  double L = 0;
  for (int t = 0; t < Q.rows(); ++t)
    L += p.dO.row(t).dot(
        st.step(Q.row(t).transpose(), K.row(t).transpose(), V.row(t).transpose(), beta[t]).transpose());
  return L + (p.dS.array() * st.S().array()).sum();
}

// Central differences of f over every entry of x (a matrix or a vector), step 1e-6.
template <class X, class F>
X fd_of(const X& x, F&& f) {
  X g(x.rows(), x.cols());
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    X a = x, b = x;
    a.data()[i] += 1e-6;
    b.data()[i] -= 1e-6;
    g.data()[i] = (f(a) - f(b)) / 2e-6;
  }
  return g;
}

template <class X>
double rel(const X& got, const X& want) {
  return (got - want).norm() / want.norm();
}

}  // namespace

TEST_CASE("linear attention backward: every gradient matches central differences (double)", "[backward][baselines]") {
  for (bool normalize : {true, false}) {
    BaseProblem p = make_base(4, 3, 17, normalize ? 81u : 82u, normalize);
    p.K.row(6).setZero();  // a zero key: linear attention writes v 0ᵀ = 0 and is smooth there
    INFO("normalize_output " << normalize);
    const auto g = vla::linear_attention_backward<double>(p.S0, p.z0, p.cfg, p.Q, p.K, p.V, p.dO, &p.dS, &p.dz, 5);
    CHECK(g.floored_steps == 0);
    CHECK(rel(g.dq, fd_of(p.Q, [&](const MatD& x) { return la_loss(p, p.S0, p.z0, x, p.K, p.V); })) <= 1e-6);
    CHECK(rel(g.dk, fd_of(p.K, [&](const MatD& x) { return la_loss(p, p.S0, p.z0, p.Q, x, p.V); })) <= 1e-6);
    CHECK(rel(g.dv, fd_of(p.V, [&](const MatD& x) { return la_loss(p, p.S0, p.z0, p.Q, p.K, x); })) <= 1e-6);
    CHECK(rel(g.dS0, fd_of(p.S0, [&](const MatD& x) { return la_loss(p, x, p.z0, p.Q, p.K, p.V); })) <= 1e-6);
    CHECK(rel(g.dz0, fd_of(p.z0, [&](const VecD& x) { return la_loss(p, p.S0, x, p.Q, p.K, p.V); })) <= 1e-6);
    CHECK(g.dbeta.size() == 0);
  }
}

TEST_CASE("linear attention backward: where the output floor binds, no gradient flows through zᵀq", "[backward][baselines]") {
  // z0 far negative: zᵀq < ε_den on the first steps, so o = S q / ε_den there (locally smooth: the
  // finite differences see the floored function, and the backward's convention is that function's).
  BaseProblem p = make_base(3, 2, 6, 83u, true);
  p.z0 = -50.0 * VecD::Ones(3);
  p.cfg.denom_eps = 1e-2;
  const auto g = vla::linear_attention_backward<double>(p.S0, p.z0, p.cfg, p.Q, p.K, p.V, p.dO, &p.dS, &p.dz);
  CHECK(g.floored_steps == 6);
  CHECK(rel(g.dq, fd_of(p.Q, [&](const MatD& x) { return la_loss(p, p.S0, p.z0, x, p.K, p.V); })) <= 1e-6);
  CHECK(rel(g.dk, fd_of(p.K, [&](const MatD& x) { return la_loss(p, p.S0, p.z0, p.Q, x, p.V); })) <= 1e-6);
  CHECK(rel(g.dz0, fd_of(p.z0, [&](const VecD& x) { return la_loss(p, p.S0, x, p.Q, p.K, p.V); })) <= 1e-6);
  CHECK(rel(g.dS0, fd_of(p.S0, [&](const MatD& x) { return la_loss(p, x, p.z0, p.Q, p.K, p.V); })) <= 1e-6);
}

TEST_CASE("DeltaNet backward: every gradient and dbeta match central differences (double)", "[backward][baselines]") {
  BaseProblem p = make_base(4, 3, 17, 84u, false);
  p.K.row(6).setZero();  // a zero key writes nothing; k̂ jumps there, so that row is compared with 0
  const auto g = vla::deltanet_backward<double>(p.S0, p.Q, p.K, p.V, p.beta, p.dO, &p.dS, 5);
  MatD fdk = fd_of(p.K, [&](const MatD& x) { return dn_loss(p, p.S0, p.Q, x, p.V, p.beta); });
  CHECK(g.dk.row(6).norm() == 0.0);
  CHECK(g.dbeta[6] == 0.0);
  fdk.row(6).setZero();
  CHECK(rel(g.dq, fd_of(p.Q, [&](const MatD& x) { return dn_loss(p, p.S0, x, p.K, p.V, p.beta); })) <= 1e-6);
  CHECK(rel(g.dk, fdk) <= 1e-6);
  CHECK(rel(g.dv, fd_of(p.V, [&](const MatD& x) { return dn_loss(p, p.S0, p.Q, p.K, x, p.beta); })) <= 1e-6);
  CHECK(rel(g.dbeta, fd_of(p.beta, [&](const VecD& x) { return dn_loss(p, p.S0, p.Q, p.K, p.V, x); })) <= 1e-6);
  CHECK(rel(g.dS0, fd_of(p.S0, [&](const MatD& x) { return dn_loss(p, x, p.Q, p.K, p.V, p.beta); })) <= 1e-6);
  CHECK(g.dz0.size() == 0);
}

TEST_CASE("baselines' backward: float within 1e-4 of double over 2,000 steps; checkpoints change no bit",
          "[backward][baselines]") {
  const BaseProblem p = make_base(16, 8, 2000, 85u, true);
  auto f = [](const auto& x) { return x.template cast<float>().eval(); };
  const auto la = vla::linear_attention_backward<double>(p.S0, p.z0, p.cfg, p.Q, p.K, p.V, p.dO);
  const auto laf = vla::linear_attention_backward<float>(f(p.S0), f(p.z0), p.cfg, f(p.Q), f(p.K), f(p.V), f(p.dO));
  const auto dn = vla::deltanet_backward<double>(p.S0, p.Q, p.K, p.V, p.beta, p.dO);
  const auto dnf = vla::deltanet_backward<float>(f(p.S0), f(p.Q), f(p.K), f(p.V), f(p.beta), f(p.dO));
  for (const auto& [got, want] : {std::pair<MatD, const MatD*>{laf.dq.cast<double>(), &la.dq},
                                  {laf.dk.cast<double>(), &la.dk}, {laf.dv.cast<double>(), &la.dv},
                                  {laf.dS0.cast<double>(), &la.dS0}, {dnf.dq.cast<double>(), &dn.dq},
                                  {dnf.dk.cast<double>(), &dn.dk}, {dnf.dv.cast<double>(), &dn.dv},
                                  {dnf.dS0.cast<double>(), &dn.dS0}})
    CHECK(rel(got, *want) <= 1e-4);
  CHECK(rel(VecD(dnf.dbeta.cast<double>()), dn.dbeta) <= 1e-4);
  const auto la7 = vla::linear_attention_backward<double>(p.S0, p.z0, p.cfg, p.Q, p.K, p.V, p.dO, nullptr, nullptr, 7);
  const auto dn1 = vla::deltanet_backward<double>(p.S0, p.Q, p.K, p.V, p.beta, p.dO, nullptr, 1);
  CHECK(la7.dq == la.dq);
  CHECK(la7.dz0 == la.dz0);
  CHECK(dn1.dk == dn.dk);
  CHECK(dn1.dbeta == dn.dbeta);
}

TEST_CASE("baselines' batched backward is the single-head one for every (sequence, head), and refuses by name",
          "[backward][baselines]") {
  // Varlen batch of 3 sequences (lengths 5, 0, 8), H = 2, dk 3, dv 2, warm initial states, d_final given.
  const std::vector<std::int64_t> cu = {0, 5, 5, 13};
  const int N = 3, H = 2, dk = 3, dv = 2, tokens = 13, P = N * H;
  std::mt19937 rng(86u);
  std::normal_distribution<double> n01;
  std::uniform_real_distribution<double> u01(0.1, 1.0);
  auto rnd = [&](std::size_t n, bool feature) {
    std::vector<double> x(n);
    for (double& e : x) e = feature ? elu1(n01(rng)) : n01(rng);
    return x;
  };
  std::vector<double> q = rnd(tokens * H * dk, true), k = rnd(tokens * H * dk, true), v = rnd(tokens * H * dv, false),
                      dO = rnd(tokens * H * dv, false), S0 = rnd(P * dv * dk, false), z0 = rnd(P * dk, true),
                      dS = rnd(P * dv * dk, false), dz = rnd(P * dk, false), o(tokens * H * dv), beta(tokens * H);
  for (double& b : beta) b = u01(rng);
  vla::ForwardArgs<double> a;
  a.batch = N, a.heads = H, a.dk = dk, a.dv = dv, a.cu_seqlens = cu.data();
  a.q = q.data(), a.k = k.data(), a.v = v.data(), a.beta = beta.data(), a.o = o.data();
  a.initial_state = {nullptr, S0.data(), z0.data(), nullptr};
  const double poison = 12345.0;
  std::vector<double> gq(q.size(), poison), gk(k.size(), poison), gv(v.size(), poison), gb(beta.size(), poison),
      gS0(S0.size(), poison), gz0(z0.size(), poison);
  vla::GradArgs<double> g;
  g.d_o = dO.data();
  g.d_final_state = {nullptr, dS.data(), dz.data(), nullptr};
  g.d_q = gq.data(), g.d_k = gk.data(), g.d_v = gv.data();
  g.d_initial_state = {nullptr, gS0.data(), gz0.data(), nullptr};
  auto rows = [&](const std::vector<double>& x, int d, std::int64_t first, std::int64_t len, int h) {
    MatD m(len, d);
    for (std::int64_t t = 0; t < len; ++t)
      for (int i = 0; i < d; ++i) m(t, i) = x[std::size_t(((first + t) * H + h) * d + i)];
    return m;
  };
  vla::Config cfg;
  for (int op = 0; op < 2; ++op) {  // 0: linear attention, 1: DeltaNet
    vla::CpuOptions opt;
    opt.threads = 2;
    opt.chunk = 3;
    if (op == 0) {
      vla::backward<vla::backend::Cpu, vla::op::LinearAttention>(a, g, cfg, opt);
    } else {
      g.d_beta = gb.data();
      a.initial_state.z = nullptr, g.d_final_state.z = nullptr, g.d_initial_state.z = nullptr;
      vla::backward<vla::backend::Cpu, vla::op::DeltaNet>(a, g, cfg, opt);
    }
    for (int n = 0; n < N; ++n)
      for (int h = 0; h < H; ++h) {
        const std::int64_t first = cu[n], len = cu[n + 1] - cu[n], p = n * H + h;
        INFO("op " << op << ", sequence " << n << ", head " << h);
        const MatD s0 = Eigen::Map<const RowMatD>(S0.data() + p * dv * dk, dv, dk);
        const MatD ds = Eigen::Map<const RowMatD>(dS.data() + p * dv * dk, dv, dk);
        const VecD zz = Eigen::Map<const VecD>(z0.data() + p * dk, dk), dzz = Eigen::Map<const VecD>(dz.data() + p * dk, dk);
        VecD bt(len);
        for (std::int64_t t = 0; t < len; ++t) bt[t] = beta[std::size_t((first + t) * H + h)];
        const vla::BaselineGradients<double> r =
            op == 0 ? vla::linear_attention_backward<double>(s0, zz, cfg, rows(q, dk, first, len, h), rows(k, dk, first, len, h),
                                                             rows(v, dv, first, len, h), rows(dO, dv, first, len, h), &ds, &dzz, 3)
                    : vla::deltanet_backward<double>(s0, rows(q, dk, first, len, h), rows(k, dk, first, len, h),
                                                     rows(v, dv, first, len, h), bt, rows(dO, dv, first, len, h), &ds, 3);
        CHECK(rows(gq, dk, first, len, h) == r.dq);
        CHECK(rows(gk, dk, first, len, h) == r.dk);
        CHECK(rows(gv, dv, first, len, h) == r.dv);
        CHECK(MatD(Eigen::Map<const RowMatD>(gS0.data() + p * dv * dk, dv, dk)) == r.dS0);
        if (op == 0) CHECK(VecD(Eigen::Map<const VecD>(gz0.data() + p * dk, dk)) == r.dz0);
        if (op == 1)
          for (std::int64_t t = 0; t < len; ++t) CHECK(gb[std::size_t((first + t) * H + h)] == r.dbeta[t]);
      }
  }
  // Refused, by name, before anything is written.
  const std::vector<double> gq_before = gq;
  std::vector<double> du(q.size());
  g.d_u = du.data();
  CHECK_THROWS_WITH((vla::backward<vla::backend::Cpu, vla::op::DeltaNet>(a, g, cfg)), Catch::Contains("d_u"));
  g.d_u = nullptr;
  a.initial_state.z = z0.data(), g.d_final_state.z = dz.data(), g.d_initial_state.z = gz0.data();
  CHECK_THROWS_WITH((vla::backward<vla::backend::Cpu, vla::op::LinearAttention>(a, g, cfg)), Catch::Contains("d_beta"));
  g.d_beta = nullptr;
  beta[4] = 1.5;
  CHECK_THROWS_WITH((vla::backward<vla::backend::Cpu, vla::op::DeltaNet>(a, g, cfg)), Catch::Contains("beta must be in (0, 1]"));
  beta[4] = 0.5;
  g.d_final_state.z = nullptr;  // linear attention needs S and z of d_final_state, or neither
  CHECK_THROWS_WITH((vla::backward<vla::backend::Cpu, vla::op::LinearAttention>(a, g, cfg)),
                    Catch::Contains("d_final_state must give all of S, z or none"));
  CHECK(gq == gq_before);
}
