// The baselines' backward (docs/maths.md §9b, vla/backward.hpp): linear attention and DeltaNet
// against central finite differences of their own forwards in double (every input, β and the
// initial state; normaliser on and off, the output floor binding, a zero key), float against
// double, the states undone (the default) against recomputed (docs/maths.md §9e), and the batched
// vla::backward against the single-head routines bit for bit.
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

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

// Central differences of f over every entry of x (a matrix or a vector), step h (1e-6 unless told).
template <class X, class F>
X fd_of(const X& x, F&& f, double h = 1e-6) {
  X g(x.rows(), x.cols());
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    X a = x, b = x;
    a.data()[i] += h;
    b.data()[i] -= h;
    g.data()[i] = (f(a) - f(b)) / (2 * h);
  }
  return g;
}

// zᵀq of each step's output (z₂ = z0 + k_0 + … + k_t), as the forward forms it.
std::vector<double> step_zq(const VecD& z0, const MatD& Q, const MatD& K) {
  std::vector<double> out;
  VecD z = z0;
  for (Eigen::Index t = 0; t < Q.rows(); ++t) {
    z += K.row(t).transpose();
    out.push_back(z.dot(Q.row(t).transpose()));
  }
  return out;
}

// Every gradient the same, bit for bit.
void check_same_bits(const vla::BaselineGradients<double>& got, const vla::BaselineGradients<double>& want) {
  CHECK(got.dq == want.dq);
  CHECK(got.dk == want.dk);
  CHECK(got.dv == want.dv);
  CHECK(got.dbeta == want.dbeta);
  CHECK(got.dS0 == want.dS0);
  CHECK(got.dz0 == want.dz0);
  CHECK(got.floored_steps == want.floored_steps);
}

// stableNorm: the huge-q gradients (~1e-306 and ~1e299) would under- or overflow a plain sum of squares.
template <class X>
double rel(const X& got, const X& want) {
  return (got - want).stableNorm() / want.stableNorm();
}

// Undoing the steps (the default) against running every block again (the forward's states): within
// rounding, every gradient (docs/maths.md §9e).
void check_close(const vla::BaselineGradients<double>& got, const vla::BaselineGradients<double>& want, double tol) {
  CHECK(rel(got.dq, want.dq) <= tol);
  CHECK(rel(got.dk, want.dk) <= tol);
  CHECK(rel(got.dv, want.dv) <= tol);
  CHECK(rel(got.dS0, want.dS0) <= tol);
  if (want.dbeta.size()) CHECK(rel(got.dbeta, want.dbeta) <= tol);
  if (want.dz0.size()) CHECK(rel(got.dz0, want.dz0) <= tol);
  CHECK(got.floored_steps == want.floored_steps);
}

}  // namespace

TEST_CASE("linear attention backward: every gradient matches central differences (double)", "[backward][baselines]") {
  for (bool normalize : {true, false}) {
    BaseProblem p = make_base(4, 3, 17, normalize ? 81u : 82u, normalize);
    p.K.row(6).setZero();  // a zero key: linear attention writes v 0ᵀ = 0 and is smooth there
    INFO("normalize_output " << normalize);
    vla::BackwardStats stats;
    const auto g = vla::linear_attention_backward<double>(p.S0, p.z0, p.cfg, p.Q, p.K, p.V, p.dO, &p.dS, &p.dz, 5, &stats);
    CHECK(g.floored_steps == 0);
    CHECK(stats.checkpoints == 4);
    CHECK(stats.rolled_back_blocks == 4);  // the default: every block undone step by step
    CHECK(stats.recomputed_blocks == 0);
    check_close(g, vla::linear_attention_backward<double>(p.S0, p.z0, p.cfg, p.Q, p.K, p.V, p.dO, &p.dS, &p.dz, 5,
                                                          nullptr, vla::BackwardStates::recompute),
                1e-12);
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
  check_close(g, vla::linear_attention_backward<double>(p.S0, p.z0, p.cfg, p.Q, p.K, p.V, p.dO, &p.dS, &p.dz, 64,
                                                        nullptr, vla::BackwardStates::recompute),
              1e-12);
  CHECK(rel(g.dq, fd_of(p.Q, [&](const MatD& x) { return la_loss(p, p.S0, p.z0, x, p.K, p.V); })) <= 1e-6);
  CHECK(rel(g.dk, fd_of(p.K, [&](const MatD& x) { return la_loss(p, p.S0, p.z0, p.Q, x, p.V); })) <= 1e-6);
  CHECK(rel(g.dz0, fd_of(p.z0, [&](const VecD& x) { return la_loss(p, p.S0, x, p.Q, p.K, p.V); })) <= 1e-6);
  CHECK(rel(g.dS0, fd_of(p.S0, [&](const MatD& x) { return la_loss(p, x, p.z0, p.Q, p.K, p.V); })) <= 1e-6);
}

TEST_CASE("DeltaNet backward: every gradient and dbeta match central differences (double)", "[backward][baselines]") {
  BaseProblem p = make_base(4, 3, 17, 84u, false);
  p.K.row(6).setZero();  // a zero key writes nothing; k̂ jumps there, so that row is compared with 0
  vla::BackwardStats stats;
  const auto g = vla::deltanet_backward<double>(p.S0, p.Q, p.K, p.V, p.beta, p.dO, &p.dS, 5, &stats);
  CHECK(stats.checkpoints == 4);
  CHECK(stats.rolled_back_blocks == 4);  // the default: every block undone step by step
  CHECK(stats.recomputed_blocks == 0);
  check_close(g, vla::deltanet_backward<double>(p.S0, p.Q, p.K, p.V, p.beta, p.dO, &p.dS, 5, nullptr,
                                                vla::BackwardStates::recompute),
              1e-12);
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

TEST_CASE("baselines' backward: float within 1e-4 of double over 2,000 steps, undone or recomputed",
          "[backward][baselines]") {
  const BaseProblem p = make_base(16, 8, 2000, 85u, true);
  auto f = [](const auto& x) { return x.template cast<float>().eval(); };
  const auto recompute = vla::BackwardStates::recompute;
  const auto la = vla::linear_attention_backward<double>(p.S0, p.z0, p.cfg, p.Q, p.K, p.V, p.dO, nullptr, nullptr, 64,
                                                         nullptr, recompute);
  const auto dn = vla::deltanet_backward<double>(p.S0, p.Q, p.K, p.V, p.beta, p.dO, nullptr, 64, nullptr, recompute);
  for (const auto states : {vla::BackwardStates::roll_back, recompute}) {
    const bool roll = states == vla::BackwardStates::roll_back;
    INFO((roll ? "roll_back" : "recompute"));
    vla::BackwardStats sl, sd;
    const auto laf = vla::linear_attention_backward<float>(f(p.S0), f(p.z0), p.cfg, f(p.Q), f(p.K), f(p.V), f(p.dO),
                                                           nullptr, nullptr, 64, &sl, states);
    const auto dnf = vla::deltanet_backward<float>(f(p.S0), f(p.Q), f(p.K), f(p.V), f(p.beta), f(p.dO), nullptr, 64,
                                                   &sd, states);
    // Every block undone (none run again) in roll-back mode.
    CHECK(sl.rolled_back_blocks == (roll ? 32 : 0));
    CHECK(sd.rolled_back_blocks == (roll ? 32 : 0));
    CHECK(sl.max_roll_back_drift <= vla::kRollBackTolerance<float>());
    CHECK(sd.max_roll_back_drift <= vla::kRollBackTolerance<float>());
    std::printf("baselines' backward, float (%s) vs double, T = 2000, dk 16, dv 8: linear attention dq %.2e dk %.2e "
                "dv %.2e dS0 %.2e; DeltaNet dq %.2e dk %.2e dv %.2e dbeta %.2e dS0 %.2e; drift %.1e, %.1e\n",
                roll ? "roll_back" : "recompute", rel(MatD(laf.dq.cast<double>()), la.dq),
                rel(MatD(laf.dk.cast<double>()), la.dk), rel(MatD(laf.dv.cast<double>()), la.dv),
                rel(MatD(laf.dS0.cast<double>()), la.dS0), rel(MatD(dnf.dq.cast<double>()), dn.dq),
                rel(MatD(dnf.dk.cast<double>()), dn.dk), rel(MatD(dnf.dv.cast<double>()), dn.dv),
                rel(VecD(dnf.dbeta.cast<double>()), dn.dbeta), rel(MatD(dnf.dS0.cast<double>()), dn.dS0),
                sl.max_roll_back_drift, sd.max_roll_back_drift);
    for (const auto& [got, want] : {std::pair<MatD, const MatD*>{laf.dq.cast<double>(), &la.dq},
                                    {laf.dk.cast<double>(), &la.dk}, {laf.dv.cast<double>(), &la.dv},
                                    {laf.dS0.cast<double>(), &la.dS0}, {dnf.dq.cast<double>(), &dn.dq},
                                    {dnf.dk.cast<double>(), &dn.dk}, {dnf.dv.cast<double>(), &dn.dv},
                                    {dnf.dS0.cast<double>(), &dn.dS0}})
      CHECK(rel(got, *want) <= 1e-4);
    CHECK(rel(VecD(laf.dz0.cast<double>()), la.dz0) <= 1e-4);
    CHECK(rel(VecD(dnf.dbeta.cast<double>()), dn.dbeta) <= 1e-4);
  }
  // Recomputed, the checkpoint interval changes no bit.
  check_same_bits(vla::linear_attention_backward<double>(p.S0, p.z0, p.cfg, p.Q, p.K, p.V, p.dO, nullptr, nullptr, 7,
                                                         nullptr, recompute),
                  la);
  check_same_bits(vla::deltanet_backward<double>(p.S0, p.Q, p.K, p.V, p.beta, p.dO, nullptr, 1, nullptr, recompute), dn);
}

TEST_CASE("baselines' backward: the checkpoint interval changes nothing (recompute) or only rounding (roll-back)",
          "[backward][baselines]") {
  const BaseProblem p = make_base(6, 5, 300, 96u, true);
  const auto recompute = vla::BackwardStates::recompute, roll_back = vla::BackwardStates::roll_back;
  vla::BackwardStats st;
  const auto la = vla::linear_attention_backward<double>(p.S0, p.z0, p.cfg, p.Q, p.K, p.V, p.dO, &p.dS, &p.dz, 1, &st,
                                                         recompute);
  CHECK(st.recomputed_blocks == 300);
  CHECK(st.rolled_back_blocks == 0);
  const auto dn = vla::deltanet_backward<double>(p.S0, p.Q, p.K, p.V, p.beta, p.dO, &p.dS, 1, &st, recompute);
  CHECK(st.recomputed_blocks == 300);
  for (Eigen::Index c : {3, 7, 64, 300, 512}) {
    INFO("checkpoint " << c);
    const std::int64_t blocks = (300 + c - 1) / c;
    // The same forward recomputed from any checkpoint gives the same states, hence the same bits.
    const auto lb =
        vla::linear_attention_backward<double>(p.S0, p.z0, p.cfg, p.Q, p.K, p.V, p.dO, &p.dS, &p.dz, c, &st, recompute);
    CHECK(st.checkpoints == blocks);
    CHECK(st.recomputed_blocks == blocks);
    check_same_bits(lb, la);
    const auto db = vla::deltanet_backward<double>(p.S0, p.Q, p.K, p.V, p.beta, p.dO, &p.dS, c, &st, recompute);
    check_same_bits(db, dn);
    // Undoing the steps instead (the default) rounds differently, by a few ulps of the state per step
    // undone (docs/maths.md §9e): every block rolled back here, none run again.
    const auto lr =
        vla::linear_attention_backward<double>(p.S0, p.z0, p.cfg, p.Q, p.K, p.V, p.dO, &p.dS, &p.dz, c, &st, roll_back);
    CHECK(st.rolled_back_blocks == blocks);
    CHECK(st.recomputed_blocks == 0);
    CHECK(st.max_roll_back_drift <= 1e-13);
    check_close(lr, la, 1e-12);
    const auto dr = vla::deltanet_backward<double>(p.S0, p.Q, p.K, p.V, p.beta, p.dO, &p.dS, c, &st, roll_back);
    CHECK(st.rolled_back_blocks == blocks);
    CHECK(st.recomputed_blocks == 0);
    CHECK(st.max_roll_back_drift <= 1e-13);
    check_close(dr, dn, 1e-12);
  }
}

TEST_CASE("baselines' backward: a roll-back that drifts too far is run again from its checkpoint",
          "[backward][baselines]") {
  // With a tolerance of 0 every rolled-back block is refused: the backward must restore the adjoint
  // it had before the block and run the block again, which gives recompute's bits exactly.
  BaseProblem p = make_base(5, 4, 50, 97u, true);
  p.K.row(17).setZero();  // DeltaNet: a zero key in a redone block
  p.z0 = -6.0 * VecD::Ones(5);  // linear attention: the floor binds on the first steps
  p.cfg.denom_eps = 1e-2;
  const auto recompute = vla::BackwardStates::recompute, roll_back = vla::BackwardStates::roll_back;
  const vla::LinearAttentionState<double> ls(p.S0, p.z0, p.cfg);
  const vla::DeltaNetState<double> ds(p.S0);
  vla::BackwardStats sr, s0;
  const auto lr = vla::detail::linear_attention_backward_rows<double>(ls, p.Q, p.K, p.V, p.dO, &p.dS, &p.dz, 8, &sr,
                                                                      recompute, vla::kRollBackTolerance<double>());
  const auto l0 = vla::detail::linear_attention_backward_rows<double>(ls, p.Q, p.K, p.V, p.dO, &p.dS, &p.dz, 8, &s0,
                                                                      roll_back, 0.0);
  CHECK(s0.redone_blocks == 7);
  CHECK(s0.recomputed_blocks == 7);
  CHECK(s0.rolled_back_blocks == 0);
  CHECK(s0.floored_steps == sr.floored_steps);
  CHECK(sr.floored_steps > 0);
  check_same_bits(l0, lr);
  const auto dr = vla::detail::deltanet_backward_rows<double>(ds, p.Q, p.K, p.V, p.beta, p.dO, &p.dS, 8, &sr,
                                                              recompute, vla::kRollBackTolerance<double>());
  const auto d0 =
      vla::detail::deltanet_backward_rows<double>(ds, p.Q, p.K, p.V, p.beta, p.dO, &p.dS, 8, &s0, roll_back, 0.0);
  CHECK(s0.redone_blocks == 7);
  CHECK(s0.recomputed_blocks == 7);
  CHECK(s0.rolled_back_blocks == 0);
  CHECK(d0.dk.row(17).norm() == 0.0);
  check_same_bits(d0, dr);
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

TEST_CASE("linear attention backward: huge q takes the forward's rescaled output, and the gradient is its derivative",
          "[backward][baselines][magnitude]") {
  // q ~ 1e306 and z ~ 1e3: every zᵀq overflows, so the forward computes o from q̃ = q/max|q| through
  // rules::rescaled_output (detail::finish_output) on every step. Both branches of that rule: zᵀq̃·m
  // above ε_den (o = S q̃ / zᵀq̃) and, with z negative, below it (o = S q̃ · m/ε_den, the floor).
  // Central differences in double, the step relative to each input's scale (1e300 for q).
  for (bool floored : {false, true}) {
    INFO((floored ? "floor branch" : "ratio branch"));
    BaseProblem p = make_base(4, 3, 6, floored ? 92u : 91u, true);
    p.Q *= 1e306;
    p.z0 = (floored ? -1e3 : 1e3) * p.z0.cwiseMax(0.5);
    if (floored) p.cfg.denom_eps = 1e6;  // keeps o = S q / ε_den finite (~1e300)
    for (double zq : step_zq(p.z0, p.Q, p.K)) REQUIRE_FALSE(std::isfinite(zq));  // the rescaled path, every step
    const auto g = vla::linear_attention_backward<double>(p.S0, p.z0, p.cfg, p.Q, p.K, p.V, p.dO, &p.dS, &p.dz, 4);
    CHECK(g.floored_steps == (floored ? 6 : 0));
    REQUIRE(g.dq.allFinite());
    // dq ~ 1e-309 on the ratio branch (o has degree 0 in q, and z ~ 1e3), so the loss's moves are
    // ~1e-9: its final-state terms (~1e3, constant in q) are left out of the differences, or their
    // rounding would swamp them (5e-4 measured with them in).
    BaseProblem pq = p;
    pq.dS.setZero(), pq.dz.setZero();
    CHECK(rel(g.dq, fd_of(p.Q, [&](const MatD& x) { return la_loss(pq, p.S0, p.z0, x, p.K, p.V); }, 1e300)) <= 1e-6);
    // The others at their own scales (L ~ 1e300 on the floor branch: the step grows with it).
    const double h = floored ? 1e-2 : 1e-6;
    CHECK(rel(g.dk, fd_of(p.K, [&](const MatD& x) { return la_loss(p, p.S0, p.z0, p.Q, x, p.V); }, h)) <= 1e-6);
    CHECK(rel(g.dv, fd_of(p.V, [&](const MatD& x) { return la_loss(p, p.S0, p.z0, p.Q, p.K, x); }, h)) <= 1e-6);
    CHECK(rel(g.dS0, fd_of(p.S0, [&](const MatD& x) { return la_loss(p, x, p.z0, p.Q, p.K, p.V); }, h)) <= 1e-6);
    if (floored) {
      // No gradient through zᵀq where the floor binds: only the final-state weight, exactly. (Differences
      // cannot see it: the O(1) term dzᵀz_T is below the rounding of L ~ 1e301.)
      CHECK(g.dz0 == p.dz);
    } else {
      CHECK(rel(g.dz0, fd_of(p.z0, [&](const VecD& x) { return la_loss(p, p.S0, x, p.Q, p.K, p.V); }, 1e-3)) <= 1e-6);
    }
  }
}

TEST_CASE("linear attention backward: a stream where the output floor binds on some steps and not others",
          "[backward][baselines]") {
  // z0 negative, keys positive: z₂ᵀq starts below ε_den and climbs past it, so the first steps are
  // floored (o = S q / ε_den, nothing through z) and the later ones are not. Every step is kept 1e-3
  // from the kink, so the differences (step 1e-6) see one branch per step.
  BaseProblem p = make_base(3, 2, 12, 93u, true);
  p.z0 = VecD::Constant(3, -8.0);
  p.cfg.denom_eps = 1e-2;
  int below = 0;
  for (double zq : step_zq(p.z0, p.Q, p.K)) {
    REQUIRE(std::abs(zq - p.cfg.denom_eps) > 1e-3);
    below += zq <= p.cfg.denom_eps;
  }
  const auto g = vla::linear_attention_backward<double>(p.S0, p.z0, p.cfg, p.Q, p.K, p.V, p.dO, &p.dS, &p.dz, 5);
  CHECK(g.floored_steps == below);
  REQUIRE(below > 0);
  REQUIRE(below < 12);
  CHECK(rel(g.dq, fd_of(p.Q, [&](const MatD& x) { return la_loss(p, p.S0, p.z0, x, p.K, p.V); })) <= 1e-6);
  CHECK(rel(g.dk, fd_of(p.K, [&](const MatD& x) { return la_loss(p, p.S0, p.z0, p.Q, x, p.V); })) <= 1e-6);
  CHECK(rel(g.dv, fd_of(p.V, [&](const MatD& x) { return la_loss(p, p.S0, p.z0, p.Q, p.K, x); })) <= 1e-6);
  CHECK(rel(g.dS0, fd_of(p.S0, [&](const MatD& x) { return la_loss(p, x, p.z0, p.Q, p.K, p.V); })) <= 1e-6);
  CHECK(rel(g.dz0, fd_of(p.z0, [&](const VecD& x) { return la_loss(p, p.S0, x, p.Q, p.K, p.V); })) <= 1e-6);
}

namespace {

// A varlen batch in [tokens, H, d] (double), with warm initial states and final-state weights.
struct BaseBatch {
  std::vector<std::int64_t> cu;
  int N = 0, H = 0, dk = 0, dv = 0;
  std::vector<double> q, k, v, dO, beta, S0, z0, dS, dz;
  MatD rows(const std::vector<double>& x, int d, int n, int h) const {
    const std::int64_t first = cu[n], len = cu[n + 1] - cu[n];
    MatD m(len, d);
    for (std::int64_t t = 0; t < len; ++t)
      for (int i = 0; i < d; ++i) m(t, i) = x[std::size_t(((first + t) * H + h) * d + i)];
    return m;
  }
  VecD betas(int n, int h) const {
    VecD b(cu[n + 1] - cu[n]);
    for (Eigen::Index t = 0; t < b.size(); ++t) b[t] = beta[std::size_t((cu[n] + t) * H + h)];
    return b;
  }
};

BaseBatch make_base_batch(std::vector<std::int64_t> cu, int H, int dk, int dv, unsigned seed) {
  BaseBatch b;
  b.cu = std::move(cu);
  b.N = int(b.cu.size()) - 1, b.H = H, b.dk = dk, b.dv = dv;
  const std::size_t tokens = std::size_t(b.cu.back()), P = std::size_t(b.N * H);
  std::mt19937 rng(seed);
  std::normal_distribution<double> n01;
  std::uniform_real_distribution<double> u01(0.1, 1.0);
  auto rnd = [&](std::vector<double>& x, std::size_t n, bool feature, double scale = 1) {
    x.resize(n);
    for (double& e : x) e = feature ? elu1(n01(rng)) : scale * n01(rng);
  };
  rnd(b.q, tokens * H * dk, true), rnd(b.k, tokens * H * dk, true), rnd(b.v, tokens * H * dv, false);
  rnd(b.dO, tokens * H * dv, false), rnd(b.S0, P * dv * dk, false, 0.3), rnd(b.z0, P * dk, true);
  rnd(b.dS, P * dv * dk, false), rnd(b.dz, P * dk, false);
  b.beta.resize(tokens * H);
  for (double& e : b.beta) e = u01(rng);
  return b;
}

template <class To>
std::vector<To> cast_all(const std::vector<double>& x) {
  return std::vector<To>(x.begin(), x.end());
}

}  // namespace

TEST_CASE("baselines' batched backward in float is within 1e-4 of the double single-head one (varlen)",
          "[backward][baselines]") {
  // Lengths 150, 0, 300, 1; H = 2, dk 8, dv 4; warm states, d_final given; two threads, checkpoint 16.
  const BaseBatch b = make_base_batch({0, 150, 150, 450, 451}, 2, 8, 4, 94u);
  const int dk = b.dk, dv = b.dv, H = b.H;
  std::vector<float> q = cast_all<float>(b.q), k = cast_all<float>(b.k), v = cast_all<float>(b.v),
                     dO = cast_all<float>(b.dO), beta = cast_all<float>(b.beta), S0 = cast_all<float>(b.S0),
                     z0 = cast_all<float>(b.z0), dS = cast_all<float>(b.dS), dz = cast_all<float>(b.dz),
                     o(b.v.size()), gq(q.size()), gk(k.size()), gv(v.size()), gb(beta.size()), gS0(S0.size()),
                     gz0(z0.size());
  vla::ForwardArgs<float> a;
  a.batch = b.N, a.heads = H, a.dk = dk, a.dv = dv, a.cu_seqlens = b.cu.data();
  a.q = q.data(), a.k = k.data(), a.v = v.data(), a.beta = beta.data(), a.o = o.data();
  vla::GradArgs<float> g;
  g.d_o = dO.data();
  g.d_q = gq.data(), g.d_k = gk.data(), g.d_v = gv.data();
  vla::CpuOptions opt;
  opt.threads = 2;
  opt.chunk = 16;
  const vla::Config cfg;
  auto frows = [&](const std::vector<float>& x, int d, int n, int h) {
    return b.rows(std::vector<double>(x.begin(), x.end()), d, n, h);
  };
  auto close = [](const MatD& got, const MatD& want, const char* what) {
    INFO(what << " rel " << rel(got, want));
    if (want.size() == 0) return;
    CHECK(rel(got, want) <= 1e-4);
  };
  for (int op = 0; op < 2; ++op) {  // 0: linear attention, 1: DeltaNet
    if (op == 0) {
      a.initial_state = {nullptr, S0.data(), z0.data(), nullptr};
      g.d_final_state = {nullptr, dS.data(), dz.data(), nullptr};
      g.d_initial_state = {nullptr, gS0.data(), gz0.data(), nullptr};
      vla::backward<vla::backend::Cpu, vla::op::LinearAttention>(a, g, cfg, opt);
    } else {
      a.initial_state = {nullptr, S0.data(), nullptr, nullptr};
      g.d_final_state = {nullptr, dS.data(), nullptr, nullptr};
      g.d_initial_state = {nullptr, gS0.data(), nullptr, nullptr};
      g.d_beta = gb.data();
      vla::backward<vla::backend::Cpu, vla::op::DeltaNet>(a, g, cfg, opt);
    }
    for (int n = 0; n < b.N; ++n)
      for (int h = 0; h < H; ++h) {
        const int p = n * H + h;
        INFO("op " << op << ", sequence " << n << ", head " << h);
        const MatD s0 = Eigen::Map<const RowMatD>(b.S0.data() + p * dv * dk, dv, dk);
        const MatD ds = Eigen::Map<const RowMatD>(b.dS.data() + p * dv * dk, dv, dk);
        const VecD zz = Eigen::Map<const VecD>(b.z0.data() + p * dk, dk), dzz = Eigen::Map<const VecD>(b.dz.data() + p * dk, dk);
        const MatD Q = b.rows(b.q, dk, n, h), K = b.rows(b.k, dk, n, h), V = b.rows(b.v, dv, n, h),
                   D = b.rows(b.dO, dv, n, h);
        const vla::BaselineGradients<double> r =
            op == 0 ? vla::linear_attention_backward<double>(s0, zz, cfg, Q, K, V, D, &ds, &dzz)
                    : vla::deltanet_backward<double>(s0, Q, K, V, b.betas(n, h), D, &ds);
        close(frows(gq, dk, n, h), r.dq, "dq");
        close(frows(gk, dk, n, h), r.dk, "dk");
        close(frows(gv, dv, n, h), r.dv, "dv");
        close(Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(gS0.data() + p * dv * dk, dv, dk).cast<double>(),
              r.dS0, "dS0");
        if (op == 0) close(Eigen::Map<const Eigen::VectorXf>(gz0.data() + p * dk, dk).cast<double>(), r.dz0, "dz0");
        if (op == 1) {
          VecD db(r.dbeta.size());
          for (Eigen::Index t = 0; t < db.size(); ++t) db[t] = gb[std::size_t((b.cu[n] + t) * H + h)];
          close(db, r.dbeta, "dbeta");
        }
      }
  }
}

TEST_CASE("baselines' batched backward ignores the state parts its op lacks: not read, not checked, not written",
          "[backward][baselines]") {
  // Linear attention has no A and no steps; DeltaNet has no A, z or steps. Those pointers are given
  // with NaN inputs and poisoned outputs: the gradients equal the call without them, the poison stays.
  const BaseBatch b = make_base_batch({0, 7, 12}, 2, 3, 2, 95u);
  const std::size_t P = 4, dk = 3, dv = 2;
  std::vector<double> o(b.v.size()), nanA(P * dk * dk, std::nan("")), nanz(P * dk, std::nan(""));
  const std::vector<std::int64_t> steps_in(P, -5);
  auto run = [&](int op, bool extra, std::vector<double>& gq, std::vector<double>& gS0, std::vector<double>& gz0,
                 std::vector<double>& gA0, std::vector<std::int64_t>& gsteps) {
    vla::ForwardArgs<double> a;
    a.batch = b.N, a.heads = b.H, a.dk = int(dk), a.dv = int(dv), a.cu_seqlens = b.cu.data();
    a.q = b.q.data(), a.k = b.k.data(), a.v = b.v.data(), a.beta = b.beta.data(), a.o = o.data();
    const bool z = op == 0;
    a.initial_state = {extra ? nanA.data() : nullptr, b.S0.data(), z ? b.z0.data() : extra ? nanz.data() : nullptr,
                       extra ? steps_in.data() : nullptr};
    vla::GradArgs<double> g;
    g.d_o = b.dO.data();
    g.d_q = gq.data();
    g.d_final_state = {extra ? nanA.data() : nullptr, b.dS.data(), z ? b.dz.data() : extra ? nanz.data() : nullptr,
                       extra ? steps_in.data() : nullptr};
    g.d_initial_state = {extra ? gA0.data() : nullptr, gS0.data(), (z || extra) ? gz0.data() : nullptr,
                         extra ? gsteps.data() : nullptr};
    if (op == 0) vla::backward<vla::backend::Cpu, vla::op::LinearAttention>(a, g, vla::Config{});
    else vla::backward<vla::backend::Cpu, vla::op::DeltaNet>(a, g, vla::Config{});
  };
  for (int op = 0; op < 2; ++op) {
    INFO("op " << op);
    std::vector<double> gq1(b.q.size()), gS1(b.S0.size()), gz1(b.z0.size(), 777.0), gA1;
    std::vector<double> gq2(b.q.size()), gS2(b.S0.size()), gz2(b.z0.size(), 777.0), gA2(P * dk * dk, 777.0);
    std::vector<std::int64_t> st1, st2(P, 777);
    run(op, false, gq1, gS1, gz1, gA1, st1);
    REQUIRE_NOTHROW(run(op, true, gq2, gS2, gz2, gA2, st2));
    CHECK(gq2 == gq1);
    CHECK(gS2 == gS1);
    CHECK(gz2 == gz1);  // linear attention: its dz0, the same; DeltaNet: 777 untouched in both
    CHECK(gA2 == std::vector<double>(P * dk * dk, 777.0));
    CHECK(st2 == std::vector<std::int64_t>(P, 777));
  }
}
