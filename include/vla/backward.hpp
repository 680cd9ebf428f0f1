// vla/backward.hpp — reverse mode through one head's VLA recurrence (docs/maths.md §9), on the CPU.
//
// The forward is VlaState::step, run again from checkpoints; this file adds only the adjoint of
// each line of docs/maths.md §2, in reverse order, derived in §9 (the derivation beside the lines
// below follows it step by step). Float and double.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "vla/config.hpp"
#include "vla/detail/eigen_util.hpp"
#include "vla/state.hpp"

namespace vla {

/// Gradients of a scalar loss with respect to one head's forward (docs/maths.md §9). Rows are tokens,
/// as in the inputs. The state parts are gradients with respect to the *symmetric* A (for every
/// symmetric perturbation H of A0, ⟨dA0, H⟩ is the directional derivative), S and z.
template <class Scalar>
struct VlaGradients {
  Matrix<Scalar> dq, dk, dv, du;  ///< T×dk, T×dk, T×dv, T×dk
  VlaSnapshot<Scalar> d_initial;  ///< dA0 (symmetric), dS0, dz0 (steps: the initial step count, unchanged)
};

/// What the backward recomputes and where the rules bind (for tests and diagnostics).
struct VlaBackwardStats {
  std::int64_t clamped_steps = 0;  ///< steps whose δ floor bound: no gradient flows through δ there
  std::int64_t floored_steps = 0;  ///< steps whose output denominator floor bound: none through zᵀq
  std::int64_t checkpoints = 0;    ///< states kept by the first pass (memory: checkpoints × (dk² + dv·dk + dk))
};

namespace detail {

/// Scratch vectors of the adjoint step, allocated once per backward.
template <class Scalar>
struct VlaAdjointScratch {
  Vector<Scalar> uh, w, kh, alpha, ah, e, qs, sq, gp, gqs, ge, gah, galpha, gkh, gw, gAw, gAtw, guh;
  VlaAdjointScratch(Eigen::Index dk, Eigen::Index dv) {
    for (Vector<Scalar>* x : {&uh, &w, &kh, &alpha, &ah, &qs, &gqs, &gah, &galpha, &gkh, &gw, &gAw, &gAtw, &guh})
      x->resize(dk);
    for (Vector<Scalar>* x : {&e, &sq, &gp, &ge}) x->resize(dv);
  }
};

/// The adjoint of one step (docs/maths.md §9). `pre` is the state before the step; (gA, gS, gz) enter as
/// the loss's gradient with respect to the state after the step and leave as the gradient with
/// respect to the state before it (gA general: its symmetric part is what counts, §9); gq … gu
/// receive the step's input gradients. A₂ (A after the update and refresh) and S₂ are never formed:
/// their products come from A, S and the step's vectors (A₂x = Ax − w(wᵀx)/δ + ε_refresh·x,
/// S₂x = Sx + e(α̂ᵀx)), so one step costs about 16 matrix–vector-sized passes and allocates nothing.
template <class Scalar>
void vla_step_adjoint(const VlaState<Scalar>& pre, const Vector<Scalar>& q, const Vector<Scalar>& k,
                      const Vector<Scalar>& v, const Vector<Scalar>& u, const Vector<Scalar>& go, Matrix<Scalar>& gA,
                      Matrix<Scalar>& gS, Vector<Scalar>& gz, Vector<Scalar>& gq, Vector<Scalar>& gk,
                      Vector<Scalar>& gv, Vector<Scalar>& gu, VlaAdjointScratch<Scalar>& x, VlaBackwardStats& stats) {
  const Config& cfg = pre.config();
  const Eigen::Index n = pre.dk();
  const Scalar c = Scalar(1) / std::sqrt(Scalar(n));
  const Matrix<Scalar>& A = pre.A();  // symmetric
  const Matrix<Scalar>& S = pre.S();
  const Scalar eps_r = rules::refresh_due(pre.steps(), cfg.refresh_period) ? Scalar(cfg.refresh_eps) : Scalar(0);

  // ---- the step again, keeping what the adjoint needs (§2)
  const Scalar uf = unit_factor<Scalar>(u, c);  // û = uf·u, ‖u‖ = c/uf
  Scalar dtil = 1, del = 1;
  if (uf != Scalar(0)) {
    x.uh = u * uf;
    x.w.noalias() = A * x.uh;
    dtil = Scalar(1) + x.uh.dot(x.w);
    del = rules::sm_denominator<Scalar>(dtil, Scalar(cfg.stab_eps));
  } else {
    x.uh.setZero();
    x.w.setZero();
  }
  auto a2_times = [&](const Vector<Scalar>& y, Vector<Scalar>& out) {  // out = A₂ y (A₂ symmetric)
    out.noalias() = A * y;
    if (uf != Scalar(0)) out -= x.w * (x.w.dot(y) / del);
    if (eps_r != Scalar(0)) out += eps_r * y;
  };
  const Scalar kf = unit_factor<Scalar>(k);
  x.kh = k * kf;
  Scalar af = 0;
  if (kf != Scalar(0)) {
    a2_times(x.kh, x.alpha);
    af = unit_factor<Scalar>(x.alpha);
  }
  x.ah = x.alpha * af;
  const bool wrote = af != Scalar(0);
  if (wrote) {
    x.e = v;
    x.e.noalias() -= S * x.kh;
  }
  auto s2_times = [&](const Vector<Scalar>& y, Vector<Scalar>& out) {  // out = S₂ y
    out.noalias() = S * y;
    if (wrote) out += x.e * x.ah.dot(y);
  };
  auto s2t_times = [&](const Vector<Scalar>& y, Vector<Scalar>& out) {  // out = S₂ᵀ y
    out.noalias() = S.transpose() * y;
    if (wrote) out += x.ah * x.e.dot(y);
  };
  const Vector<Scalar> z2 = pre.z() + k;

  // ---- adjoints, last line first
  // §2.6 o = S₂q / max(z₂ᵀq, ε_den). With the normaliser on, o is homogeneous of degree 0 in q
  // wherever the floor does not bind, so the adjoint works on q̃ = q/m, m = max|q| (the forward's
  // huge-q rule, here for every q: no product of the adjoint overflows): o = S₂q̃ / d with
  // d = max(z₂ᵀq̃, ε_den/m), and ∂L/∂q = (1/m)·∂L/∂q̃.
  if (cfg.normalize_output) {
    Scalar m = q.cwiseAbs().maxCoeff();
    if (!(m > Scalar(0)) || !std::isfinite(Scalar(1) / m)) m = 1;  // zero or subnormal q: no scaling
    x.qs = q / m;
    const Scalar zqs = z2.dot(x.qs);
    const Scalar eps_m = Scalar(cfg.denom_eps) / m;
    const bool floored = !(zqs > eps_m);
    const Scalar den = floored ? eps_m : zqs;
    x.gp = go / den;  // ∂L/∂(S₂q̃)
    gS.noalias() += x.gp * x.qs.transpose();
    s2t_times(x.gp, x.gqs);
    if (floored) {
      ++stats.floored_steps;  // the floor binds: o = S₂q/ε_den, no gradient through z₂ᵀq
    } else {
      s2_times(x.qs, x.sq);
      const Scalar gden = -(go.dot(x.sq) / den) / den;  // ∂L/∂d = −gᵀo/d with o = S₂q̃/d (no d² formed)
      x.gqs += gden * z2;
      gz += gden * x.qs;
    }
    gq = x.gqs / m;
  } else {
    gS.noalias() += go * q.transpose();
    s2t_times(go, gq);
  }
  // §2.6 z₂ = z + k
  gk = gz;
  // §2.5 S₂ = S + e α̂ᵀ, e = v − S k̂ (nothing written when α̂ = 0)
  x.gkh.setZero();
  gv.setZero();
  if (wrote) {
    x.ge.noalias() = gS * x.ah;                  // ∂L/∂e
    x.gah.noalias() = gS.transpose() * x.e;      // ∂L/∂α̂
    gv = x.ge;
    x.gkh.noalias() -= S.transpose() * x.ge;
    gS.noalias() -= x.ge * x.kh.transpose();     // S₂ = S + (v − S k̂) α̂ᵀ: ∂/∂S adds −ē k̂ᵀ
    // §2.4 α̂ = α/‖α‖ (af = 1/‖α‖): ᾱ = af·(I − α̂α̂ᵀ)·ḡ
    x.galpha = af * (x.gah - x.ah * x.ah.dot(x.gah));
    // α = A₂ k̂: ∂/∂k̂ = A₂ᵀᾱ = A₂ᾱ, ∂/∂A₂ = ᾱ k̂ᵀ
    a2_times(x.galpha, x.gw);
    x.gkh += x.gw;
    gA.noalias() += x.galpha * x.kh.transpose();
  }
  // k̂ = k/‖k‖ (kf = 1/‖k‖)
  if (kf != Scalar(0)) gk += kf * (x.gkh - x.kh * x.kh.dot(x.gkh));
  // §2.3 A₂ = A₁ + ε_refresh·I: the gradient passes unchanged.
  // §2.2 A₁ = A − w wᵀ/δ, δ = max(1 + ûᵀw, ε_stab), w = A û
  gu.setZero();
  if (uf != Scalar(0)) {
    x.gAw.noalias() = gA * x.w;
    x.gAtw.noalias() = gA.transpose() * x.w;
    const Scalar gdel = x.w.dot(x.gAw) / (del * del);
    const bool clamped = !(dtil > Scalar(cfg.stab_eps));
    if (clamped) ++stats.clamped_steps;        // the floor binds: no gradient through δ
    const Scalar gdtil = clamped ? Scalar(0) : gdel;
    x.gw = -(x.gAw + x.gAtw) / del + gdtil * x.uh;  // ∂L/∂w, δ̃ = 1 + ûᵀw included
    x.guh = gdtil * x.w;
    x.guh.noalias() += A * x.gw;               // w = A û: ∂/∂û = Aᵀw̄ = A w̄
    gA.noalias() += x.gw * x.uh.transpose();   //           ∂/∂A = w̄ ûᵀ
    // §2.1 û = c·u/‖u‖ (uf = c/‖u‖, n̂ = û/c): ū = uf·(I − n̂n̂ᵀ)·ḡ
    const Scalar nd = x.uh.dot(x.guh) / (c * c);
    gu = uf * (x.guh - x.uh * nd);
  }
  // gA now holds ∂L/∂A before the step: A₁'s gradient plus the two direct terms above.
}

}  // namespace detail

/// Reverse mode through one head's forward of T steps from `initial` (docs/maths.md §9):
/// L = Σ_t ⟨d_o[t], o_t⟩ + ⟨d_final.A, A_T⟩ + ⟨d_final.S, S_T⟩ + ⟨d_final.z, z_T⟩ (d_final optional:
/// null = zero), returning ∂L/∂(q, k, v, u) and ∂L/∂(initial state).
///
/// Memory: the first pass keeps a state every `checkpoint` steps (T/checkpoint states of
/// dk² + dv·dk + dk numbers), and the reverse pass keeps one block's `checkpoint` pre-step states
/// at a time; total O(T·d + (T/C + C)·d²). Time: two forwards plus the adjoint (measured: 9.5× the
/// forward at dk = 64, bench/RESULTS.md).
/// Inputs are validated like the forward's (sizes, finite values), before any work.
template <class Scalar>
VlaGradients<Scalar> vla_backward(const VlaSnapshot<Scalar>& initial, const Config& cfg, const Matrix<Scalar>& Q,
                                  const Matrix<Scalar>& K, const Matrix<Scalar>& V, const Matrix<Scalar>& U,
                                  const Matrix<Scalar>& dO, const VlaSnapshot<Scalar>* d_final = nullptr,
                                  Eigen::Index checkpoint = 64, VlaBackwardStats* stats_out = nullptr) {
  const VlaState<Scalar> start(initial, cfg);  // validates the config and the state
  const Eigen::Index T = Q.rows(), n = start.dk(), m = start.dv();
  auto need = [](bool ok, const char* what) {
    if (!ok) throw std::invalid_argument(std::string("vla::vla_backward: ") + what);
  };
  need(checkpoint >= 1, "checkpoint must be >= 1");
  need(Q.cols() == n && K.rows() == T && K.cols() == n && U.rows() == T && U.cols() == n,
       "q, k, u must be T × dk (one row per token)");
  need(V.rows() == T && V.cols() == m && dO.rows() == T && dO.cols() == m, "v and d_o must be T × dv");
  need(Q.allFinite() && K.allFinite() && V.allFinite() && U.allFinite() && dO.allFinite(),
       "q, k, v, u and d_o must be finite");
  if (d_final) {
    need(d_final->A.rows() == n && d_final->A.cols() == n && d_final->S.rows() == m && d_final->S.cols() == n &&
             d_final->z.size() == n,
         "d_final must be shaped like the state (dk × dk, dv × dk, dk)");
    need(d_final->A.allFinite() && d_final->S.allFinite() && d_final->z.allFinite(), "d_final must be finite");
  }

  // First pass: the forward, a checkpoint at every block start.
  std::vector<VlaState<Scalar>> ckpt;
  VlaState<Scalar> st = start;
  Vector<Scalar> o(m), q(n), k(n), v(m), u(n);
  // Tokens as columns (one transpose each): every pass reads a token's vectors contiguously, where a
  // row of a column-major T×d matrix is d loads T apart.
  const Matrix<Scalar> Qc = Q.transpose(), Kc = K.transpose(), Vc = V.transpose(), Uc = U.transpose(),
                       dOc = dO.transpose();
  auto load = [&](Eigen::Index t) {
    q = Qc.col(t);
    k = Kc.col(t);
    v = Vc.col(t);
    u = Uc.col(t);
  };
  for (Eigen::Index t = 0; t < T; ++t) {
    if (t % checkpoint == 0) ckpt.push_back(st);
    load(t);
    st.step_unchecked(q, k, v, u, o);
  }

  VlaGradients<Scalar> g;
  Matrix<Scalar> gqc(n, T), gkc(n, T), gvc(m, T), guc(n, T);  // token columns, transposed at the end
  Matrix<Scalar> gA = d_final ? d_final->A : Matrix<Scalar>::Zero(n, n);
  Matrix<Scalar> gS = d_final ? d_final->S : Matrix<Scalar>::Zero(m, n);
  Vector<Scalar> gz = d_final ? d_final->z : Vector<Scalar>::Zero(n);
  Vector<Scalar> gq(n), gk(n), gv(m), gu(n), go(m);
  detail::VlaAdjointScratch<Scalar> scratch(n, m);
  VlaBackwardStats stats;
  stats.checkpoints = static_cast<std::int64_t>(ckpt.size());

  // Reverse pass, block by block: recompute the block's pre-step states, then the adjoints backwards.
  // (The block's states are copy-assigned into storage allocated once.)
  std::vector<VlaState<Scalar>> pre(static_cast<std::size_t>(std::min<Eigen::Index>(checkpoint, std::max<Eigen::Index>(T, 1))), start);
  for (Eigen::Index b = static_cast<Eigen::Index>(ckpt.size()) - 1; b >= 0; --b) {
    const Eigen::Index t0 = b * checkpoint, t1 = std::min<Eigen::Index>(T, t0 + checkpoint);
    st = ckpt[static_cast<std::size_t>(b)];
    for (Eigen::Index t = t0; t < t1; ++t) {
      pre[static_cast<std::size_t>(t - t0)] = st;
      load(t);
      st.step_unchecked(q, k, v, u, o);
    }
    for (Eigen::Index t = t1 - 1; t >= t0; --t) {
      load(t);
      go = dOc.col(t);
      detail::vla_step_adjoint(pre[static_cast<std::size_t>(t - t0)], q, k, v, u, go, gA, gS, gz, gq, gk, gv, gu, scratch,
                               stats);
      gqc.col(t) = gq;
      gkc.col(t) = gk;
      gvc.col(t) = gv;
      guc.col(t) = gu;
    }
  }
  g.dq = gqc.transpose();
  g.dk = gkc.transpose();
  g.dv = gvc.transpose();
  g.du = guc.transpose();
  g.d_initial.A = (gA + gA.transpose()) / Scalar(2);
  g.d_initial.S = gS;
  g.d_initial.z = gz;
  g.d_initial.steps = initial.steps;
  if (stats_out) *stats_out = stats;
  return g;
}

}  // namespace vla
