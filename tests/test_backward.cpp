// The backward (docs/maths.md §9, vla/backward.hpp) against central finite differences of the forward
// in double, on small streams with refresh steps, zero vectors, a warm initial state, the
// normaliser on and off, huge q; checkpoint sizes give the same bits; float against double.
#include <Eigen/QR>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>

#include "support.hpp"
#include "vla/backward.hpp"

namespace {

using MatD = Eigen::MatrixXd;
using VecD = Eigen::VectorXd;

struct Problem {
  vla::VlaSnapshot<double> init;
  vla::Config cfg;
  MatD Q, K, V, U, dO;
  vla::VlaSnapshot<double> dfin;  // the loss's weights on the final state (dA symmetric)
};

double elu1(double x) { return x > 0 ? x + 1 : std::exp(x); }

Problem make_problem(int dk, int dv, int T, unsigned seed, bool normalize) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n01;
  Problem p;
  p.cfg.refresh_period = 4;
  p.cfg.normalize_output = normalize;
  MatD g(dk, dk);
  for (int i = 0; i < dk; ++i)
    for (int j = 0; j < dk; ++j) g(i, j) = n01(rng);
  p.init.A = (g * g.transpose() / dk + MatD::Identity(dk, dk)) * 2.0;  // a warm SPD state
  p.init.S = MatD(dv, dk);
  for (int i = 0; i < dv; ++i)
    for (int j = 0; j < dk; ++j) p.init.S(i, j) = 0.3 * n01(rng);
  p.init.z = VecD(dk);
  for (int j = 0; j < dk; ++j) p.init.z[j] = elu1(n01(rng));
  p.init.steps = 2;  // the refresh phase is not at 0
  auto fill = [&](MatD& m, int cols, bool feature) {
    m = MatD(T, cols);
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < cols; ++i) m(t, i) = feature ? elu1(n01(rng)) : n01(rng);
  };
  fill(p.Q, dk, true);
  fill(p.K, dk, true);
  fill(p.V, dv, false);
  fill(p.U, dk, false);
  fill(p.dO, dv, false);
  if (T > 9) {
    p.U.row(5).setZero();  // a zero penalty direction: A is left alone (the refresh still happens)
    p.K.row(9).setZero();  // a zero key: nothing written, z unchanged by it
  }
  p.dfin.A = MatD(dk, dk);
  for (int i = 0; i < dk; ++i)
    for (int j = 0; j < dk; ++j) p.dfin.A(i, j) = n01(rng);
  p.dfin.A = (p.dfin.A + p.dfin.A.transpose()).eval() / 2;
  p.dfin.S = MatD(dv, dk);
  for (int i = 0; i < dv; ++i)
    for (int j = 0; j < dk; ++j) p.dfin.S(i, j) = n01(rng);
  p.dfin.z = VecD(dk);
  for (int j = 0; j < dk; ++j) p.dfin.z[j] = n01(rng);
  return p;
}

// The loss the backward differentiates, by the forward (VlaState::step).
double loss(const Problem& p, const vla::VlaSnapshot<double>& init, const MatD& Q, const MatD& K, const MatD& V,
            const MatD& U, bool check_positive_definite = true) {
  vla::VlaState<double> st(init, p.cfg, check_positive_definite);
  double L = 0;
  for (int t = 0; t < Q.rows(); ++t) {
    const VecD o = st.step(Q.row(t).transpose(), K.row(t).transpose(), V.row(t).transpose(), U.row(t).transpose());
    L += p.dO.row(t).dot(o.transpose());
  }
  L += (p.dfin.A.array() * st.A().array()).sum() + (p.dfin.S.array() * st.S().array()).sum() + p.dfin.z.dot(st.z());
  return L;
}

double rel(const MatD& got, const MatD& want) { return (got - want).norm() / want.norm(); }

// Every gradient of two VLA backwards, bit for bit.
void check_same_bits(const vla::VlaGradients<double>& got, const vla::VlaGradients<double>& want) {
  CHECK(got.dq == want.dq);
  CHECK(got.dk == want.dk);
  CHECK(got.dv == want.dv);
  CHECK(got.du == want.du);
  CHECK(got.d_initial.A == want.d_initial.A);
  CHECK(got.d_initial.S == want.d_initial.S);
  CHECK(got.d_initial.z == want.d_initial.z);
}

// Central differences of every entry of one input, h relative to the entry's scale.
template <class Perturb>
MatD finite_diff(int rows, int cols, Perturb&& at) {
  MatD fd(rows, cols);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) {
      const double h = 1e-6;
      fd(i, j) = (at(i, j, h) - at(i, j, -h)) / (2 * h);
    }
  return fd;
}

void check_against_fd(const Problem& p, double tol) {
  const int T = static_cast<int>(p.Q.rows()), dk = static_cast<int>(p.Q.cols()), dv = static_cast<int>(p.V.cols());
  vla::VlaBackwardStats stats;
  const auto g = vla::vla_backward<double>(p.init, p.cfg, p.Q, p.K, p.V, p.U, p.dO, &p.dfin, 6, &stats);
  CHECK(stats.checkpoints == (T + 5) / 6);
  CHECK(stats.rolled_back_blocks == (T + 5) / 6);  // the default: every block undone step by step
  // The other way to the states (each block run again from its checkpoint) to within rounding.
  const auto gr = vla::vla_backward<double>(p.init, p.cfg, p.Q, p.K, p.V, p.U, p.dO, &p.dfin, 6, nullptr,
                                            vla::BackwardStates::recompute);
  CHECK(rel(gr.dq, g.dq) <= 1e-12);
  CHECK(rel(gr.dk, g.dk) <= 1e-12);
  CHECK(rel(gr.du, g.du) <= 1e-12);
  auto input_fd = [&](int which) {
    const MatD& base = which == 0 ? p.Q : which == 1 ? p.K : which == 2 ? p.V : p.U;
    return finite_diff(T, static_cast<int>(base.cols()), [&](int i, int j, double h) {
      MatD x = base;
      x(i, j) += h;
      return loss(p, p.init, which == 0 ? x : p.Q, which == 1 ? x : p.K, which == 2 ? x : p.V, which == 3 ? x : p.U);
    });
  };
  const char* names[] = {"dq", "dk", "dv", "du"};
  const MatD* got[] = {&g.dq, &g.dk, &g.dv, &g.du};
  for (int w = 0; w < 4; ++w) {
    MatD fd = input_fd(w);
    MatD gw = *got[w];
    // At a zero key the forward is discontinuous (k̂ = k/‖k‖ jumps between ±e_j), so differences
    // there measure the jump: the row is left out (the backward's convention there, stated in
    // docs/maths.md §9, is the gradient through z alone, since the step writes nothing).
    if (w == 1 && T > 9) {
      fd.row(9).setZero();
      gw.row(9).setZero();
    }
    // The zero rows: no gradient to a zero u (a skipped update), and a zero k only through z.
    if (w == 3 && T > 9) CHECK(g.du.row(5).norm() == 0.0);
    INFO(names[w] << " rel err " << rel(gw, fd));
    CHECK(rel(gw, fd) <= tol);
  }
  // The initial state: S and z entry by entry; A by symmetric perturbations E_ij + E_ji.
  const MatD fdS = finite_diff(dv, dk, [&](int i, int j, double h) {
    auto s = p.init;
    s.S(i, j) += h;
    return loss(p, s, p.Q, p.K, p.V, p.U);
  });
  const MatD fdz = finite_diff(dk, 1, [&](int i, int, double h) {
    auto s = p.init;
    s.z[i] += h;
    return loss(p, s, p.Q, p.K, p.V, p.U);
  });
  const MatD fdA = finite_diff(dk, dk, [&](int i, int j, double h) {
    auto s = p.init;
    s.A(i, j) += h;
    if (i != j) s.A(j, i) += h;
    return loss(p, s, p.Q, p.K, p.V, p.U);
  });
  MatD gA_sym = 2 * g.d_initial.A;  // ⟨dA0, E_ij + E_ji⟩ = 2·dA0(i, j) off the diagonal
  gA_sym.diagonal() = g.d_initial.A.diagonal();
  INFO("dS0 " << rel(g.d_initial.S, fdS) << "  dz0 " << rel(g.d_initial.z, fdz) << "  dA0 " << rel(gA_sym, fdA));
  CHECK(rel(g.d_initial.S, fdS) <= tol);
  CHECK(rel(g.d_initial.z, fdz) <= tol);
  CHECK(rel(gA_sym, fdA) <= tol);
  CHECK(stats.clamped_steps == 0);
}

}  // namespace

TEST_CASE("backward: double gradients equal central differences of the forward", "[backward]") {
  // Refresh every 4 steps from phase 2, a zero u and a zero k in the stream, a warm initial state.
  SECTION("normaliser on") { check_against_fd(make_problem(5, 3, 23, 11u, true), 1e-6); }
  SECTION("normaliser off") { check_against_fd(make_problem(4, 4, 17, 12u, false), 1e-6); }
  SECTION("dk = dv = 8, longer") { check_against_fd(make_problem(8, 8, 40, 13u, true), 1e-6); }
}

TEST_CASE("backward: the output floor and huge q", "[backward]") {
  // z = −q-ish makes zᵀq ≤ ε_den: the floor binds, and the gradient is that of S q / ε_den.
  Problem p = make_problem(4, 3, 9, 21u, true);
  p.init.z = -p.init.z * 50.0;
  vla::VlaBackwardStats stats;
  const auto g = vla::vla_backward<double>(p.init, p.cfg, p.Q, p.K, p.V, p.U, p.dO, &p.dfin, 4, &stats);
  CHECK(stats.floored_steps > 0);
  const MatD fdq = finite_diff(9, 4, [&](int i, int j, double h) {
    MatD x = p.Q;
    x(i, j) += h;
    return loss(p, p.init, x, p.K, p.V, p.U);
  });
  CHECK(rel(g.dq, fdq) <= 1e-6);
  // Huge finite q (1e307: S q and zᵀq overflow, the forward's huge-q rule runs): the output is
  // homogeneous of degree 0 in q, so the gradient at c·q is (the gradient at q)/c, the others equal.
  Problem h = make_problem(4, 3, 7, 22u, true);
  const auto g1 = vla::vla_backward<double>(h.init, h.cfg, h.Q, h.K, h.V, h.U, h.dO);
  Problem hh = h;
  hh.Q *= 1e307;
  const auto g2 = vla::vla_backward<double>(hh.init, hh.cfg, hh.Q, hh.K, hh.V, hh.U, hh.dO);
  REQUIRE(g2.dq.allFinite());
  CHECK(rel(g2.dq * 1e307, g1.dq) <= 1e-10);
  CHECK(rel(g2.dk, g1.dk) <= 1e-12);
  CHECK(rel(g2.d_initial.A, g1.d_initial.A) <= 1e-12);
}

TEST_CASE("backward: the checkpoint interval changes nothing (recompute) or only rounding (roll-back)", "[backward]") {
  const Problem p = make_problem(6, 5, 50, 31u, true);
  const auto recompute = vla::BackwardStates::recompute, roll_back = vla::BackwardStates::roll_back;
  vla::VlaBackwardStats st;
  const auto a = vla::vla_backward<double>(p.init, p.cfg, p.Q, p.K, p.V, p.U, p.dO, &p.dfin, 1, &st, recompute);
  CHECK(st.recomputed_blocks == 50);
  CHECK(st.rolled_back_blocks == 0);
  for (Eigen::Index c : {3, 7, 50, 64}) {
    INFO("checkpoint " << c);
    const auto b = vla::vla_backward<double>(p.init, p.cfg, p.Q, p.K, p.V, p.U, p.dO, &p.dfin, c, nullptr, recompute);
    // The same forward recomputed from any checkpoint gives the same states, hence the same bits.
    check_same_bits(b, a);
    // Undoing the steps instead (the default) rounds differently, by a few ulps of the state per
    // step undone (docs/maths.md §9d): every block rolled back here, none run again.
    const auto r = vla::vla_backward<double>(p.init, p.cfg, p.Q, p.K, p.V, p.U, p.dO, &p.dfin, c, &st, roll_back);
    CHECK(st.rolled_back_blocks == (50 + c - 1) / c);
    CHECK(st.recomputed_blocks == 0);
    CHECK(st.max_roll_back_drift <= 1e-13);
    CHECK(rel(r.dq, a.dq) <= 1e-12);
    CHECK(rel(r.dk, a.dk) <= 1e-12);
    CHECK(rel(r.dv, a.dv) <= 1e-12);
    CHECK(rel(r.du, a.du) <= 1e-12);
    CHECK(rel(r.d_initial.A, a.d_initial.A) <= 1e-12);
    CHECK(rel(r.d_initial.S, a.d_initial.S) <= 1e-12);
    CHECK(rel(r.d_initial.z, a.d_initial.z) <= 1e-12);
  }
}

TEST_CASE("backward: a roll-back that drifts too far is run again from its checkpoint", "[backward]") {
  // With a tolerance of 0 every rolled-back block is refused: the backward must restore the adjoint
  // it had before the block and run the block again, which gives recompute's bits exactly.
  const Problem p = make_problem(6, 5, 50, 33u, true);
  const vla::VlaState<double> st(p.init, p.cfg);
  vla::VlaBackwardStats sr, s0;
  const auto r = vla::vla_backward<double>(st, p.Q, p.K, p.V, p.U, p.dO, &p.dfin, 8, &sr, vla::BackwardStates::recompute);
  const auto z = vla::detail::vla_backward_rows<double>(st, p.Q, p.K, p.V, p.U, p.dO, &p.dfin, 8, &s0,
                                                        vla::BackwardStates::roll_back, 0.0);
  CHECK(s0.redone_blocks == 7);
  CHECK(s0.recomputed_blocks == 7);
  CHECK(s0.rolled_back_blocks == 0);
  CHECK(s0.floored_steps == sr.floored_steps);
  CHECK(s0.clamped_steps == sr.clamped_steps);
  check_same_bits(z, r);
}

TEST_CASE("backward: blocks with a bound δ clamp are run again from their checkpoint, not undone", "[backward]") {
  // An indefinite A (the check off): 1 + ûᵀAû falls below ε_stab on some steps, where A − s sᵀ cancels
  // and undoing it would not give A back. Those blocks are recomputed; the others are undone.
  const int dk = 4, dv = 3, T = 200;
  std::mt19937 rng(5u);
  std::normal_distribution<double> n01;
  MatD Q(T, dk), K(T, dk), V(T, dv), U(T, dk), dO(T, dv);
  for (MatD* x : {&Q, &K, &V, &U, &dO})
    for (Eigen::Index i = 0; i < x->size(); ++i) x->data()[i] = n01(rng);
  Q = Q.array().exp();
  K = K.array().exp();
  vla::VlaSnapshot<double> snap{MatD::Identity(dk, dk), MatD::Zero(dv, dk), VecD::Zero(dk), 0};
  snap.A(0, 1) = snap.A(1, 0) = 1.2;  // eigenvalues 2.2, −0.2, 1, 1
  const vla::Config cfg;
  const vla::VlaState<double> st(snap, cfg, /*check_positive_definite=*/false);
  vla::VlaBackwardStats sb, sr;
  const auto b = vla::vla_backward<double>(st, Q, K, V, U, dO, nullptr, 16, &sb);
  const auto r = vla::vla_backward<double>(st, Q, K, V, U, dO, nullptr, 16, &sr, vla::BackwardStates::recompute);
  INFO("rolled back " << sb.rolled_back_blocks << ", recomputed " << sb.recomputed_blocks << ", clamped steps "
                      << sb.clamped_steps);
  CHECK(sb.clamped_steps > 0);
  CHECK(sb.clamped_steps == sr.clamped_steps);
  CHECK(sb.recomputed_blocks > 0);
  CHECK(sb.rolled_back_blocks > 0);
  CHECK(sb.rolled_back_blocks + sb.recomputed_blocks == 13);
  // Against the recomputed states (the forward's): q, k, v and S0 within rounding. (The forward's own
  // A turns NaN here after about 100 steps, as it does from such an A whatever the backward: the
  // caller vouched for an A that is not positive definite. So u's and A0's gradients are not finite
  // in either mode, and are not compared.)
  CHECK(rel(b.dq, r.dq) <= 1e-12);
  CHECK(rel(b.dk, r.dk) <= 1e-12);
  CHECK(rel(b.dv, r.dv) <= 1e-12);
  CHECK(rel(b.d_initial.S, r.d_initial.S) <= 1e-12);
}

TEST_CASE("backward: float against double on a 10,000-step stream, no NaN", "[backward]") {
  // Fresh state, the default configuration (refresh every 20), dk = dv = 16.
  const int dk = 16, dv = 16, T = 10000;
  std::mt19937 rng(41u);
  std::normal_distribution<double> n01;
  MatD Q(T, dk), K(T, dk), V(T, dv), U(T, dk), dO(T, dv);
  for (int t = 0; t < T; ++t) {
    for (int i = 0; i < dk; ++i) {
      Q(t, i) = elu1(n01(rng));
      K(t, i) = elu1(n01(rng));
      U(t, i) = n01(rng);
    }
    for (int i = 0; i < dv; ++i) {
      V(t, i) = n01(rng);
      dO(t, i) = n01(rng);
    }
  }
  const vla::Config cfg;
  vla::VlaSnapshot<double> init{MatD::Identity(dk, dk) / cfg.lambda0, MatD::Zero(dv, dk), VecD::Zero(dk), 0};
  const auto gd = vla::vla_backward<double>(init, cfg, Q, K, V, U, dO, nullptr, 64, nullptr, vla::BackwardStates::recompute);
  vla::VlaSnapshot<float> initf{init.A.cast<float>(), init.S.cast<float>(), init.z.cast<float>(), 0};
  for (const auto states : {vla::BackwardStates::roll_back, vla::BackwardStates::recompute}) {
    const bool roll = states == vla::BackwardStates::roll_back;
    INFO((roll ? "roll_back" : "recompute"));
    const auto gf = vla::vla_backward<float>(initf, cfg, Q.cast<float>(), K.cast<float>(), V.cast<float>(),
                                             U.cast<float>(), dO.cast<float>(), nullptr, 64, nullptr, states);
    const double eq = rel(gf.dq.cast<double>(), gd.dq), ek = rel(gf.dk.cast<double>(), gd.dk),
                 ev = rel(gf.dv.cast<double>(), gd.dv), eu = rel(gf.du.cast<double>(), gd.du);
    std::printf("backward, float (%s) vs double, T = 10000, dk = dv = 16: dq %.2e dk %.2e dv %.2e du %.2e\n",
                roll ? "roll_back" : "recompute", eq, ek, ev, eu);
    REQUIRE(gf.dq.allFinite());
    REQUIRE(gf.du.allFinite());
    // Measured (2026-12-04): recompute 3.6e-7 (dq), 3.0e-7, 1.0e-7, 2.0e-6 (du), float's rounding of
    // the forward; roll_back 4.6e-6 (dq), 1.5e-6, 1.2e-6, 1.9e-6 — S undone by up to 64 subtractions
    // per block adds its rounding to q̄ and v̄ (docs/maths.md §9d). One bound for both.
    CHECK(eq <= 1e-5);
    CHECK(ek <= 1e-5);
    CHECK(ev <= 1e-5);
    CHECK(eu <= 1e-5);
    CHECK(rel(gf.d_initial.A.cast<double>(), gd.d_initial.A) <= 1e-5);
    CHECK(rel(gf.d_initial.S.cast<double>(), gd.d_initial.S) <= 1e-5);
  }
}

TEST_CASE("backward: bad input is refused before any work", "[backward]") {
  const Problem p = make_problem(4, 3, 8, 51u, true);
  MatD badq = p.Q;
  badq(2, 1) = std::nan("");
  CHECK_THROWS_WITH(vla::vla_backward<double>(p.init, p.cfg, badq, p.K, p.V, p.U, p.dO),
                    Catch::Contains("finite"));
  CHECK_THROWS_WITH(vla::vla_backward<double>(p.init, p.cfg, p.Q, p.K, p.V, p.U, p.dO.leftCols(2)),
                    Catch::Contains("d_o"));
  CHECK_THROWS_WITH(vla::vla_backward<double>(p.init, p.cfg, p.Q, p.K, p.V, p.U, p.dO, nullptr, 0),
                    Catch::Contains("checkpoint"));
}

namespace {

// A batch in the forward's layout, [tokens, H, d], with warm initial states and final-state weights.
struct Batch {
  int N = 0, H = 0, dk = 0, dv = 0;
  std::vector<std::int64_t> cu;  // empty: fixed length T
  std::int64_t T = 0, tokens = 0;
  std::vector<double> q, k, v, u, o, dO, A0, S0, z0, dA, dS, dz;
  std::vector<std::int64_t> steps0;
  vla::Config cfg;
};

Batch make_batch(int N, int H, int dk, int dv, std::vector<std::int64_t> cu, std::int64_t T, unsigned seed) {
  Batch b;
  b.N = N;
  b.H = H;
  b.dk = dk;
  b.dv = dv;
  b.cu = std::move(cu);
  b.T = T;
  b.tokens = b.cu.empty() ? N * T : b.cu.back();
  b.cfg.refresh_period = 5;
  std::mt19937 rng(seed);
  std::normal_distribution<double> n01;
  auto fill = [&](std::vector<double>& x, std::size_t n, bool feature) {
    x.resize(n);
    for (auto& e : x) e = feature ? elu1(n01(rng)) : n01(rng);
  };
  const std::size_t tk = std::size_t(b.tokens) * H * dk, tv = std::size_t(b.tokens) * H * dv, P = std::size_t(N) * H;
  fill(b.q, tk, true);
  fill(b.k, tk, true);
  fill(b.u, tk, false);
  fill(b.v, tv, false);
  fill(b.dO, tv, false);
  b.o.assign(tv, 0.0);
  fill(b.S0, P * dv * dk, false);
  fill(b.z0, P * dk, true);
  fill(b.dA, P * dk * dk, false);
  fill(b.dS, P * dv * dk, false);
  fill(b.dz, P * dk, false);
  b.A0.assign(P * dk * dk, 0.0);
  for (std::size_t p = 0; p < P; ++p) {
    MatD g(dk, dk);
    for (int i = 0; i < dk; ++i)
      for (int j = 0; j < dk; ++j) g(i, j) = n01(rng);
    const MatD a = g * g.transpose() / dk + MatD::Identity(dk, dk);
    for (int i = 0; i < dk; ++i)
      for (int j = 0; j < dk; ++j) b.A0[p * dk * dk + i * dk + j] = a(i, j);
  }
  b.steps0.resize(P);
  for (std::size_t p = 0; p < P; ++p) b.steps0[p] = std::int64_t(p % 7);
  return b;
}

vla::ForwardArgs<double> fwd_args(Batch& b, bool with_init) {
  vla::ForwardArgs<double> a;
  a.batch = b.N;
  a.seq_len = b.T;
  a.heads = b.H;
  a.dk = b.dk;
  a.dv = b.dv;
  a.cu_seqlens = b.cu.empty() ? nullptr : b.cu.data();
  a.q = b.q.data();
  a.k = b.k.data();
  a.v = b.v.data();
  a.u = b.u.data();
  a.o = b.o.data();
  if (with_init) a.initial_state = {b.A0.data(), b.S0.data(), b.z0.data(), b.steps0.data()};
  return a;
}

struct GradBuffers {
  std::vector<double> dq, dk, dv, du, dA0, dS0, dz0;
  vla::GradArgs<double> args(const Batch& b, bool with_final) {
    const double poison = 12345.0;
    dq.assign(b.q.size(), poison);
    dk.assign(b.k.size(), poison);
    dv.assign(b.v.size(), poison);
    du.assign(b.u.size(), poison);
    dA0.assign(b.A0.size(), poison);
    dS0.assign(b.S0.size(), poison);
    dz0.assign(b.z0.size(), poison);
    vla::GradArgs<double> g;
    g.d_o = b.dO.data();
    if (with_final) g.d_final_state = {b.dA.data(), b.dS.data(), b.dz.data(), nullptr};
    g.d_q = dq.data();
    g.d_k = dk.data();
    g.d_v = dv.data();
    g.d_u = du.data();
    g.d_initial_state = {dA0.data(), dS0.data(), dz0.data(), nullptr};
    return g;
  }
};

// One (sequence, head) through vla_backward on gathered rows, compared bit for bit with the batch.
void check_pair_equal(const Batch& b, const GradBuffers& gb, int n, int h, bool with_init, bool with_final) {
  const std::int64_t first = b.cu.empty() ? n * b.T : b.cu[n], len = b.cu.empty() ? b.T : b.cu[n + 1] - b.cu[n];
  auto rows = [&](const std::vector<double>& x, int d) {
    MatD m(len, d);
    for (std::int64_t t = 0; t < len; ++t)
      for (int i = 0; i < d; ++i) m(t, i) = x[std::size_t(((first + t) * b.H + h) * d + i)];
    return m;
  };
  const std::size_t p = std::size_t(n) * b.H + h;
  vla::VlaSnapshot<double> init;
  if (with_init) {
    init.A = Eigen::Map<const Eigen::Matrix<double, -1, -1, Eigen::RowMajor>>(b.A0.data() + p * b.dk * b.dk, b.dk, b.dk);
    init.S = Eigen::Map<const Eigen::Matrix<double, -1, -1, Eigen::RowMajor>>(b.S0.data() + p * b.dv * b.dk, b.dv, b.dk);
    init.z = Eigen::Map<const VecD>(b.z0.data() + p * b.dk, b.dk);
    init.steps = b.steps0[p];
  } else {
    init = vla::VlaState<double>(b.dk, b.dv, b.cfg).save();
  }
  vla::VlaSnapshot<double> dfin;
  if (with_final) {
    dfin.A = Eigen::Map<const Eigen::Matrix<double, -1, -1, Eigen::RowMajor>>(b.dA.data() + p * b.dk * b.dk, b.dk, b.dk);
    dfin.S = Eigen::Map<const Eigen::Matrix<double, -1, -1, Eigen::RowMajor>>(b.dS.data() + p * b.dv * b.dk, b.dv, b.dk);
    dfin.z = Eigen::Map<const VecD>(b.dz.data() + p * b.dk, b.dk);
  }
  const auto r = vla::vla_backward<double>(init, b.cfg, rows(b.q, b.dk), rows(b.k, b.dk), rows(b.v, b.dv),
                                           rows(b.u, b.dk), rows(b.dO, b.dv), with_final ? &dfin : nullptr, 4);
  CHECK(rows(gb.dq, b.dk) == r.dq);
  CHECK(rows(gb.dk, b.dk) == r.dk);
  CHECK(rows(gb.dv, b.dv) == r.dv);
  CHECK(rows(gb.du, b.dk) == r.du);
  const MatD dA0 = Eigen::Map<const Eigen::Matrix<double, -1, -1, Eigen::RowMajor>>(gb.dA0.data() + p * b.dk * b.dk, b.dk, b.dk);
  CHECK(dA0 == r.d_initial.A);
  CHECK(Eigen::Map<const VecD>(gb.dz0.data() + p * b.dk, b.dk) == r.d_initial.z);
}

}  // namespace

TEST_CASE("backward: the batched vla::backward is the single-head one for every (sequence, head)", "[backward]") {
  for (int threads : {1, 2}) {
    for (bool varlen : {false, true}) {
      Batch b = varlen ? make_batch(3, 2, 4, 3, {0, 9, 9, 20}, 0, 61u) : make_batch(2, 3, 4, 3, {}, 11, 62u);
      const bool with_init = varlen, with_final = !varlen;
      GradBuffers gb;
      const auto g = gb.args(b, with_final);
      vla::CpuOptions opt;
      opt.threads = threads;
      opt.chunk = 4;  // the checkpoint interval
      vla::backward<vla::backend::Cpu>(fwd_args(b, with_init), g, b.cfg, opt);
      for (int n = 0; n < b.N; ++n)
        for (int h = 0; h < b.H; ++h) check_pair_equal(b, gb, n, h, with_init, with_final);
    }
  }
}

TEST_CASE("backward: the batched backward refuses bad input before writing anything", "[backward]") {
  Batch b = make_batch(2, 2, 4, 3, {}, 6, 71u);
  GradBuffers gb;
  auto g = gb.args(b, true);
  const std::vector<double> dq_before = gb.dq;
  b.dO[7] = std::nan("");
  CHECK_THROWS_WITH(vla::backward<vla::backend::Cpu>(fwd_args(b, true), g, b.cfg), Catch::Contains("d_o has a non-finite"));
  b.dO[7] = 0.5;
  b.dS[3] = INFINITY;
  CHECK_THROWS_WITH(vla::backward<vla::backend::Cpu>(fwd_args(b, true), g, b.cfg), Catch::Contains("d_final_state.S"));
  b.dS[3] = 0.5;
  const double a01 = b.A0[1];
  b.A0[1] = -b.A0[1] + 3.0;  // no longer symmetric
  CHECK_THROWS_WITH(vla::backward<vla::backend::Cpu>(fwd_args(b, true), g, b.cfg),
                    Catch::Contains("initial_state of sequence 0, head 0"));
  b.A0[1] = a01;
  // One fault per call: which fault a call with several names is not part of the contract.
  g.d_o = nullptr;
  CHECK_THROWS_WITH(vla::backward<vla::backend::Cpu>(fwd_args(b, true), g, b.cfg), Catch::Contains("d_o is required"));
  g.d_o = b.dO.data();
  vla::CpuOptions opt;
  opt.chunk = -1;  // the backward's chunk is its checkpoint interval, and the message says so
  CHECK_THROWS_WITH(vla::backward<vla::backend::Cpu>(fwd_args(b, true), g, b.cfg, opt),
                    Catch::Contains("CpuOptions::chunk (the checkpoint interval) must be >= 0"));
  CHECK(gb.dq == dq_before);  // untouched by every refused call
  CHECK(gb.dA0 == std::vector<double>(b.A0.size(), 12345.0));
}

namespace {

// A NaN with a payload no computation produces: a buffer still holding it, bit for bit, was not written.
double poison_nan() {
  const std::uint64_t bits = 0x7ff8dead0000beefull;
  double x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}
bool all_poison(const std::vector<double>& x) {
  const double p = poison_nan();
  for (const double& e : x)
    if (std::memcmp(&e, &p, sizeof p) != 0) return false;
  return true;
}

}  // namespace

TEST_CASE("backward: check_positive_definite = false takes an indefinite initial A as the forward does",
          "[backward]") {
  // One sequence, two heads, dk = dv = 2; head 1's A = [[1, 2], [2, 1]]: symmetric, positive diagonal,
  // eigenvalues 3 and −1. The always-on checks pass; only the Cholesky (check_positive_definite) sees it.
  Batch b = make_batch(1, 2, 2, 2, {}, 6, 81u);
  const std::size_t a1 = 4;  // head 1's A in [N, H, dk, dk]
  b.A0[a1 + 0] = 1, b.A0[a1 + 1] = 2, b.A0[a1 + 2] = 2, b.A0[a1 + 3] = 1;
  // From this A, δ̃ = 1 + ûᵀAû is no longer >= 1 and A_T is not bounded as an SPD state's is: with a
  // weight on A_T, du reached ~1e12 and the outputs' share of the loss was lost in its rounding (the
  // differences in q came out 0). So the final-state weight on A is 0 here.
  std::fill(b.dA.begin(), b.dA.end(), 0.0);
  GradBuffers gb;
  const auto g = gb.args(b, true);
  for (auto* x : {&gb.dq, &gb.dk, &gb.dv, &gb.du, &gb.dA0, &gb.dS0, &gb.dz0}) std::fill(x->begin(), x->end(), poison_nan());
  auto all_grads_poison = [&] {
    for (auto* x : {&gb.dq, &gb.dk, &gb.dv, &gb.du, &gb.dA0, &gb.dS0, &gb.dz0})
      if (!all_poison(*x)) return false;
    return true;
  };
  vla::CpuOptions on, off;
  on.threads = off.threads = 1;  // head 0 first: a throw at head 1 would come after head 0's writes
  off.check_positive_definite = false;

  // The check on: the forward and the backward both refuse head 1 before writing anything.
  std::fill(b.o.begin(), b.o.end(), poison_nan());
  CHECK_THROWS_WITH(vla::forward<vla::backend::Cpu>(fwd_args(b, true), b.cfg, on),
                    Catch::Contains("initial_state of sequence 0, head 1") && Catch::Contains("positive definite"));
  CHECK(all_poison(b.o));
  CHECK_THROWS_WITH(vla::backward<vla::backend::Cpu>(fwd_args(b, true), g, b.cfg, on),
                    Catch::Contains("initial_state of sequence 0, head 1") && Catch::Contains("positive definite"));
  CHECK(all_grads_poison());

  // The check off: the caller vouches for A and vla does not look. The forward runs on the A it was
  // given, and the backward is the gradient of that same computation: no throw, every head written.
  REQUIRE_NOTHROW(vla::forward<vla::backend::Cpu>(fwd_args(b, true), b.cfg, off));
  for (double x : b.o) CHECK(std::isfinite(x));
  try {
    vla::backward<vla::backend::Cpu>(fwd_args(b, true), g, b.cfg, off);
  } catch (const std::exception& e) {
    // Before the fix: thrown from the worker at head 1, after head 0's gradients were written.
    CHECK(all_grads_poison());
    FAIL("the backward threw with the check off: " << e.what());
  }
  for (auto* x : {&gb.dq, &gb.dk, &gb.dv, &gb.du, &gb.dA0, &gb.dS0, &gb.dz0})
    for (double e : *x) CHECK(std::isfinite(e));

  // Head 1's dq and du against central differences of the forward with the check off.
  const std::int64_t T = b.T;
  auto rows = [&](const std::vector<double>& x, int d, int h) {
    MatD m(T, d);
    for (std::int64_t t = 0; t < T; ++t)
      for (int i = 0; i < d; ++i) m(t, i) = x[std::size_t((t * b.H + h) * d + i)];
    return m;
  };
  using RowMatD = Eigen::Matrix<double, -1, -1, Eigen::RowMajor>;
  Problem p;
  p.cfg = b.cfg;
  p.init.A = Eigen::Map<const RowMatD>(b.A0.data() + a1, 2, 2);
  p.init.S = Eigen::Map<const RowMatD>(b.S0.data() + 4, 2, 2);
  p.init.z = Eigen::Map<const VecD>(b.z0.data() + 2, 2);
  p.init.steps = b.steps0[1];
  p.Q = rows(b.q, 2, 1), p.K = rows(b.k, 2, 1), p.V = rows(b.v, 2, 1), p.U = rows(b.u, 2, 1), p.dO = rows(b.dO, 2, 1);
  p.dfin.A = Eigen::Map<const RowMatD>(b.dA.data() + a1, 2, 2);
  p.dfin.S = Eigen::Map<const RowMatD>(b.dS.data() + 4, 2, 2);
  p.dfin.z = Eigen::Map<const VecD>(b.dz.data() + 2, 2);
  const MatD fdq = finite_diff(int(T), 2, [&](int i, int j, double h) {
    MatD x = p.Q;
    x(i, j) += h;
    return loss(p, p.init, x, p.K, p.V, p.U, /*check_positive_definite=*/false);
  });
  const MatD fdu = finite_diff(int(T), 2, [&](int i, int j, double h) {
    MatD x = p.U;
    x(i, j) += h;
    return loss(p, p.init, p.Q, p.K, p.V, x, /*check_positive_definite=*/false);
  });
  INFO("dq\n" << rows(gb.dq, 2, 1) << "\nfd\n" << fdq << "\ndu\n" << rows(gb.du, 2, 1) << "\nfd\n" << fdu);
  CHECK(rel(rows(gb.dq, 2, 1), fdq) <= 1e-6);
  CHECK(rel(rows(gb.du, 2, 1), fdu) <= 1e-6);

  // Every head bit for bit the single-head backward from the state the caller vouched for.
  for (int h = 0; h < 2; ++h) {
    INFO("head " << h);
    vla::VlaSnapshot<double> init{Eigen::Map<const RowMatD>(b.A0.data() + 4 * h, 2, 2),
                                  Eigen::Map<const RowMatD>(b.S0.data() + 4 * h, 2, 2),
                                  Eigen::Map<const VecD>(b.z0.data() + 2 * h, 2), b.steps0[std::size_t(h)]};
    vla::VlaSnapshot<double> dfin{Eigen::Map<const RowMatD>(b.dA.data() + 4 * h, 2, 2),
                                  Eigen::Map<const RowMatD>(b.dS.data() + 4 * h, 2, 2),
                                  Eigen::Map<const VecD>(b.dz.data() + 2 * h, 2), 0};
    const auto r = vla::vla_backward<double>(vla::VlaState<double>(init, b.cfg, /*check_positive_definite=*/false),
                                             rows(b.q, 2, h), rows(b.k, 2, h), rows(b.v, 2, h), rows(b.u, 2, h),
                                             rows(b.dO, 2, h), &dfin);
    CHECK(rows(gb.dq, 2, h) == r.dq);
    CHECK(rows(gb.dk, 2, h) == r.dk);
    CHECK(rows(gb.dv, 2, h) == r.dv);
    CHECK(rows(gb.du, 2, h) == r.du);
    CHECK(MatD(Eigen::Map<const RowMatD>(gb.dA0.data() + 4 * h, 2, 2)) == r.d_initial.A);
    CHECK(MatD(Eigen::Map<const RowMatD>(gb.dS0.data() + 4 * h, 2, 2)) == r.d_initial.S);
    CHECK(VecD(Eigen::Map<const VecD>(gb.dz0.data() + 2 * h, 2)) == r.d_initial.z);
  }
  // The snapshot overload checks the state itself, positive definiteness included.
  CHECK_THROWS_WITH(vla::vla_backward<double>(p.init, p.cfg, p.Q, p.K, p.V, p.U, p.dO), Catch::Contains("positive definite"));
}
