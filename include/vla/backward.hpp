// vla/backward.hpp — reverse mode through one head's VLA recurrence (docs/maths.md §9) and through
// the two baselines (§9b), on the CPU.
//
// The forward is the state's own step (VlaState, LinearAttentionState, DeltaNetState), run again
// from checkpoints; this file adds only the adjoint of each line of docs/maths.md §2 (§7 for the
// baselines), in reverse order, derived in §9 (the derivation beside the lines below follows it
// step by step). Float and double.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "vla/baselines.hpp"
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

/// The adjoint of §2.6's output, o = S₂q / max(z₂ᵀq, ε_den) (o = S₂q with the normaliser off), shared
/// by VLA and linear attention (docs/maths.md §9, §9b). S₂ enters only through its products
/// (s2_times(y, out): out = S₂y; s2t_times: out = S₂ᵀy). Adds to gS (∂L/∂S₂) and gz (∂L/∂z₂), writes
/// gq; qs, gqs (dk) and gp, sq (dv) are scratch. Returns whether the floor bound (then no gradient
/// flows through z₂ᵀq).
///
/// With the normaliser on, o is homogeneous of degree 0 in q wherever the floor does not bind, so
/// the adjoint works on q̃ = q/m, m = max|q| (the forward's huge-q rule, here for every q: no product
/// of the adjoint overflows): o = S₂q̃ / d with d = max(z₂ᵀq̃, ε_den/m), and ∂L/∂q = (1/m)·∂L/∂q̃.
template <class Scalar, class S2Times, class S2tTimes>
bool output_adjoint(const Vector<Scalar>& q, const Vector<Scalar>& z2, const Vector<Scalar>& go, const Config& cfg,
                    S2Times&& s2_times, S2tTimes&& s2t_times, Vector<Scalar>& qs, Vector<Scalar>& gqs,
                    Vector<Scalar>& gp, Vector<Scalar>& sq, Matrix<Scalar>& gS, Vector<Scalar>& gz, Vector<Scalar>& gq) {
  if (!cfg.normalize_output) {
    gS.noalias() += go * q.transpose();
    s2t_times(go, gq);
    return false;
  }
  Scalar m = q.cwiseAbs().maxCoeff();
  if (!(m > Scalar(0)) || !std::isfinite(Scalar(1) / m)) m = 1;  // zero or subnormal q: no scaling
  qs = q / m;
  const Scalar zqs = z2.dot(qs);
  const Scalar eps_m = Scalar(cfg.denom_eps) / m;
  const bool floored = !(zqs > eps_m);
  const Scalar den = floored ? eps_m : zqs;
  gp = go / den;  // ∂L/∂(S₂q̃)
  gS.noalias() += gp * qs.transpose();
  s2t_times(gp, gqs);
  if (!floored) {  // where the floor binds, o = S₂q/ε_den: no gradient through z₂ᵀq
    s2_times(qs, sq);
    const Scalar gden = -(go.dot(sq) / den) / den;  // ∂L/∂d = −gᵀo/d with o = S₂q̃/d (no d² formed)
    gqs += gden * z2;
    gz += gden * qs;
  }
  gq = gqs / m;
  return floored;
}

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
  // §2.6 the output (output_adjoint, shared with linear attention).
  if (output_adjoint(q, z2, go, cfg, s2_times, s2t_times, x.qs, x.gqs, x.gp, x.sq, gS, gz, gq)) ++stats.floored_steps;
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

/// Checks one head's token matrices for a backward (`fn` names the caller): T rows each, dk or dv
/// columns, finite; U may be null (the baselines have no u).
template <class Scalar>
void check_backward_rows(const char* fn, Eigen::Index dk, Eigen::Index dv, Eigen::Index checkpoint,
                         const Matrix<Scalar>& Q, const Matrix<Scalar>& K, const Matrix<Scalar>& V,
                         const Matrix<Scalar>* U, const Matrix<Scalar>& dO) {
  auto need = [fn](bool ok, const char* what) {
    if (!ok) throw std::invalid_argument(std::string("vla::") + fn + ": " + what);
  };
  const Eigen::Index T = Q.rows();
  need(checkpoint >= 1, "checkpoint must be >= 1");
  need(Q.cols() == dk && K.rows() == T && K.cols() == dk && (!U || (U->rows() == T && U->cols() == dk)),
       U ? "q, k, u must be T × dk (one row per token)" : "q, k must be T × dk (one row per token)");
  need(V.rows() == T && V.cols() == dv && dO.rows() == T && dO.cols() == dv, "v and d_o must be T × dv");
  need(Q.allFinite() && K.allFinite() && V.allFinite() && (!U || U->allFinite()) && dO.allFinite(),
       U ? "q, k, v, u and d_o must be finite" : "q, k, v and d_o must be finite");
}

/// The two passes of every backward here (docs/maths.md §9, "States"): the forward from `start`,
/// keeping the state every `checkpoint` steps; then, block by block from the last, the block run
/// again from its checkpoint keeping its pre-step states, and `adjoint(pre, t)` called for t from the
/// block's last token to its first. `step(state, t)` advances a state by token t with the forward's
/// own step, so the recomputed states are the forward's bits and any interval gives the same result.
/// Returns the number of checkpoints. Memory: (T/C + C) states.
template <class State, class Step, class Adjoint>
std::int64_t checkpointed_reverse(const State& start, Eigen::Index T, Eigen::Index checkpoint, Step&& step,
                                  Adjoint&& adjoint) {
  std::vector<State> ckpt;
  State st = start;
  for (Eigen::Index t = 0; t < T; ++t) {
    if (t % checkpoint == 0) ckpt.push_back(st);
    step(st, t);
  }
  // The block's states are copy-assigned into storage allocated once.
  std::vector<State> pre(static_cast<std::size_t>(std::min<Eigen::Index>(checkpoint, std::max<Eigen::Index>(T, 1))), start);
  for (Eigen::Index b = static_cast<Eigen::Index>(ckpt.size()) - 1; b >= 0; --b) {
    const Eigen::Index t0 = b * checkpoint, t1 = std::min<Eigen::Index>(T, t0 + checkpoint);
    st = ckpt[static_cast<std::size_t>(b)];
    for (Eigen::Index t = t0; t < t1; ++t) {
      pre[static_cast<std::size_t>(t - t0)] = st;
      step(st, t);
    }
    for (Eigen::Index t = t1 - 1; t >= t0; --t) adjoint(pre[static_cast<std::size_t>(t - t0)], t);
  }
  return static_cast<std::int64_t>(ckpt.size());
}

}  // namespace detail

/// Reverse mode through one head's forward of T steps from `start` (docs/maths.md §9):
/// L = Σ_t ⟨d_o[t], o_t⟩ + ⟨d_final.A, A_T⟩ + ⟨d_final.S, S_T⟩ + ⟨d_final.z, z_T⟩ (d_final optional:
/// null = zero), returning ∂L/∂(q, k, v, u) and ∂L/∂(initial state). The configuration is the state's.
///
/// `start` is a VlaState, so it has been validated already, by its constructor, with whatever
/// check_positive_definite its maker chose; this overload checks only the token rows, d_final and the
/// checkpoint interval, and never re-validates the state. (The batched vla::backward passes the states
/// its checks loaded, so the state check runs once, up front, with the caller's CpuOptions — see
/// BackendTraits<backend::Cpu>::backward.) With the check skipped and an A that is not positive
/// definite, the result is the gradient of what the forward computes from that A (the forward too
/// runs on it without a word): the same rules (δ floor, output floor) in both directions.
///
/// Memory: the first pass keeps a state every `checkpoint` steps (T/checkpoint states of
/// dk² + dv·dk + dk numbers), and the reverse pass keeps one block's `checkpoint` pre-step states
/// at a time; total O(T·d + (T/C + C)·d²). Time: two forwards plus the adjoint (measured: 9.5× the
/// forward at dk = 64, bench/RESULTS.md).
/// Inputs are validated like the forward's (sizes, finite values), before any work.
template <class Scalar>
VlaGradients<Scalar> vla_backward(const VlaState<Scalar>& start, const Matrix<Scalar>& Q, const Matrix<Scalar>& K,
                                  const Matrix<Scalar>& V, const Matrix<Scalar>& U, const Matrix<Scalar>& dO,
                                  const VlaSnapshot<Scalar>* d_final = nullptr, Eigen::Index checkpoint = 64,
                                  VlaBackwardStats* stats_out = nullptr) {
  const Eigen::Index T = Q.rows(), n = start.dk(), m = start.dv();
  detail::check_backward_rows<Scalar>("vla_backward", n, m, checkpoint, Q, K, V, &U, dO);
  auto need = [](bool ok, const char* what) {
    if (!ok) throw std::invalid_argument(std::string("vla::vla_backward: ") + what);
  };
  if (d_final) {
    need(d_final->A.rows() == n && d_final->A.cols() == n && d_final->S.rows() == m && d_final->S.cols() == n &&
             d_final->z.size() == n,
         "d_final must be shaped like the state (dk × dk, dv × dk, dk)");
    need(d_final->A.allFinite() && d_final->S.allFinite() && d_final->z.allFinite(), "d_final must be finite");
  }

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

  VlaGradients<Scalar> g;
  Matrix<Scalar> gqc(n, T), gkc(n, T), gvc(m, T), guc(n, T);  // token columns, transposed at the end
  Matrix<Scalar> gA = d_final ? d_final->A : Matrix<Scalar>::Zero(n, n);
  Matrix<Scalar> gS = d_final ? d_final->S : Matrix<Scalar>::Zero(m, n);
  Vector<Scalar> gz = d_final ? d_final->z : Vector<Scalar>::Zero(n);
  Vector<Scalar> gq(n), gk(n), gv(m), gu(n), go(m);
  detail::VlaAdjointScratch<Scalar> scratch(n, m);
  VlaBackwardStats stats;
  stats.checkpoints = detail::checkpointed_reverse(
      start, T, checkpoint,
      [&](VlaState<Scalar>& st, Eigen::Index t) {
        load(t);
        st.step_unchecked(q, k, v, u, o);
      },
      [&](const VlaState<Scalar>& pre, Eigen::Index t) {
        load(t);
        go = dOc.col(t);
        detail::vla_step_adjoint(pre, q, k, v, u, go, gA, gS, gz, gq, gk, gv, gu, scratch, stats);
        gqc.col(t) = gq;
        gkc.col(t) = gk;
        gvc.col(t) = gv;
        guc.col(t) = gu;
      });
  g.dq = gqc.transpose();
  g.dk = gkc.transpose();
  g.dv = gvc.transpose();
  g.du = guc.transpose();
  g.d_initial.A = (gA + gA.transpose()) / Scalar(2);
  g.d_initial.S = gS;
  g.d_initial.z = gz;
  g.d_initial.steps = start.steps();
  if (stats_out) *stats_out = stats;
  return g;
}

/// The same from a snapshot: validates it as a VlaState does (symmetric, positive diagonal, and
/// positive definite by a Cholesky factorisation), then runs the overload above. To skip the O(dk³)
/// factorisation, as CpuOptions::check_positive_definite = false does, pass
/// VlaState<Scalar>(initial, cfg, /*check_positive_definite=*/false) instead.
template <class Scalar>
VlaGradients<Scalar> vla_backward(const VlaSnapshot<Scalar>& initial, const Config& cfg, const Matrix<Scalar>& Q,
                                  const Matrix<Scalar>& K, const Matrix<Scalar>& V, const Matrix<Scalar>& U,
                                  const Matrix<Scalar>& dO, const VlaSnapshot<Scalar>* d_final = nullptr,
                                  Eigen::Index checkpoint = 64, VlaBackwardStats* stats_out = nullptr) {
  return vla_backward<Scalar>(VlaState<Scalar>(initial, cfg), Q, K, V, U, dO, d_final, checkpoint, stats_out);
}

/// Gradients of a scalar loss with respect to one head's baseline forward (docs/maths.md §9b). Rows
/// are tokens, as in the inputs.
template <class Scalar>
struct BaselineGradients {
  Matrix<Scalar> dq, dk, dv;  ///< T×dk, T×dk, T×dv
  Vector<Scalar> dbeta;       ///< T: DeltaNet's step sizes (empty for linear attention)
  Matrix<Scalar> dS0;         ///< dv×dk
  Vector<Scalar> dz0;         ///< dk: linear attention's normaliser sum (empty for DeltaNet)
  std::int64_t floored_steps = 0;  ///< linear attention: steps whose output floor bound
};

namespace detail {

/// Scratch of the baselines' adjoint steps, allocated once per backward.
template <class Scalar>
struct BaselineScratch {
  Vector<Scalar> z2, qs, gqs, kh, gkh, gp, sq, e, ge;
  BaselineScratch(Eigen::Index dk, Eigen::Index dv) {
    for (Vector<Scalar>* x : {&z2, &qs, &gqs, &kh, &gkh}) x->resize(dk);
    for (Vector<Scalar>* x : {&gp, &sq, &e, &ge}) x->resize(dv);
  }
};

/// The adjoint of one linear-attention step (docs/maths.md §9b): S₂ = S + v kᵀ, z₂ = z + k,
/// o = S₂q / max(z₂ᵀq, ε_den). (gS, gz) enter as ∂L/∂(state after) and leave as ∂L/∂(state before).
/// Returns whether the output floor bound.
template <class Scalar>
bool linear_attention_step_adjoint(const LinearAttentionState<Scalar>& pre, const Config& cfg, const Vector<Scalar>& q,
                                   const Vector<Scalar>& k, const Vector<Scalar>& v, const Vector<Scalar>& go,
                                   Matrix<Scalar>& gS, Vector<Scalar>& gz, Vector<Scalar>& gq, Vector<Scalar>& gk,
                                   Vector<Scalar>& gv, BaselineScratch<Scalar>& x) {
  const Matrix<Scalar>& S = pre.S();
  x.z2 = pre.z() + k;
  auto s2_times = [&](const Vector<Scalar>& y, Vector<Scalar>& out) {  // out = S₂y = Sy + v(kᵀy)
    out.noalias() = S * y;
    out += v * k.dot(y);
  };
  auto s2t_times = [&](const Vector<Scalar>& y, Vector<Scalar>& out) {  // out = S₂ᵀy = Sᵀy + k(vᵀy)
    out.noalias() = S.transpose() * y;
    out += k * v.dot(y);
  };
  const bool floored = output_adjoint(q, x.z2, go, cfg, s2_times, s2t_times, x.qs, x.gqs, x.gp, x.sq, gS, gz, gq);
  // z₂ = z + k: k̄ = z̄₂, z̄ = z̄₂.  S₂ = S + v kᵀ: v̄ = S̄₂k, k̄ += S̄₂ᵀv, S̄ = S̄₂.
  gk = gz;
  gk.noalias() += gS.transpose() * v;
  gv.noalias() = gS * k;
  return floored;
}

/// The adjoint of one DeltaNet step (docs/maths.md §9b): k̂ = k/‖k‖, e = v − S k̂,
/// S₂ = S + β e k̂ᵀ, o = S₂q. gS enters as ∂L/∂S₂ and leaves as ∂L/∂S. A zero (or subnormal) key
/// writes nothing: its k̄ and β̄ are 0 (the step is then o = S q, constant in k and β).
template <class Scalar>
void deltanet_step_adjoint(const DeltaNetState<Scalar>& pre, const Vector<Scalar>& q, const Vector<Scalar>& k,
                           const Vector<Scalar>& v, Scalar beta, const Vector<Scalar>& go, Matrix<Scalar>& gS,
                           Vector<Scalar>& gq, Vector<Scalar>& gk, Vector<Scalar>& gv, Scalar& gbeta,
                           BaselineScratch<Scalar>& x) {
  const Matrix<Scalar>& S = pre.S();
  const Scalar kf = unit_factor<Scalar>(k);
  // o = S₂q: S̄₂ += g qᵀ, q̄ = S₂ᵀg = Sᵀg + β k̂ (eᵀg).
  gS.noalias() += go * q.transpose();
  gq.noalias() = S.transpose() * go;
  if (kf == Scalar(0)) {
    gk.setZero();
    gv.setZero();
    gbeta = Scalar(0);
    return;
  }
  x.kh = k * kf;
  x.e = v;
  x.e.noalias() -= S * x.kh;
  gq += (beta * x.e.dot(go)) * x.kh;
  // S₂ = S + β e k̂ᵀ: ē = β S̄₂k̂, β̄ = eᵀS̄₂k̂, k̂̄ = β S̄₂ᵀe − Sᵀē, v̄ = ē, S̄ = S̄₂ − ē k̂ᵀ.
  x.gp.noalias() = gS * x.kh;
  gbeta = x.e.dot(x.gp);
  x.ge = beta * x.gp;
  x.gkh.noalias() = gS.transpose() * x.e;
  x.gkh *= beta;
  x.gkh.noalias() -= S.transpose() * x.ge;
  gv = x.ge;
  gS.noalias() -= x.ge * x.kh.transpose();
  // k̂ = k/‖k‖: k̄ = (I − k̂k̂ᵀ) k̂̄ / ‖k‖.
  gk = kf * (x.gkh - x.kh * x.kh.dot(x.gkh));
}

/// One baseline head's token rows as columns (each token's vectors contiguous, one transpose per
/// input) with the step vectors they are loaded into, and the gradient columns the adjoint fills;
/// `finish` turns the columns back into T-row gradients.
template <class Scalar>
struct BaselineColumns {
  Matrix<Scalar> Qc, Kc, Vc, dOc, gqc, gkc, gvc;
  Vector<Scalar> q, k, v, go, gq, gk, gv;
  BaselineColumns(const Matrix<Scalar>& Q, const Matrix<Scalar>& K, const Matrix<Scalar>& V, const Matrix<Scalar>& dO)
      : Qc(Q.transpose()), Kc(K.transpose()), Vc(V.transpose()), dOc(dO.transpose()), gqc(Q.cols(), Q.rows()),
        gkc(K.cols(), K.rows()), gvc(V.cols(), V.rows()), gq(Q.cols()), gk(K.cols()), gv(V.cols()) {}
  void load(Eigen::Index t) {
    q = Qc.col(t);
    k = Kc.col(t);
    v = Vc.col(t);
  }
  void load_adjoint(Eigen::Index t) {
    load(t);
    go = dOc.col(t);
  }
  void store(Eigen::Index t) {
    gqc.col(t) = gq;
    gkc.col(t) = gk;
    gvc.col(t) = gv;
  }
  void finish(BaselineGradients<Scalar>& g) const {
    g.dq = gqc.transpose();
    g.dk = gkc.transpose();
    g.dv = gvc.transpose();
  }
};

}  // namespace detail

/// Reverse mode through one head's linear-attention forward of T steps from (S0, z0) (docs/maths.md
/// §9b): L = Σ_t ⟨d_o[t], o_t⟩ + ⟨dS_final, S_T⟩ + ⟨dz_final, z_T⟩ (either final term optional).
/// Checkpoints every `checkpoint` steps as vla_backward does. Validates everything first.
template <class Scalar>
BaselineGradients<Scalar> linear_attention_backward(const Matrix<Scalar>& S0, const Vector<Scalar>& z0,
                                                    const Config& cfg, const Matrix<Scalar>& Q,
                                                    const Matrix<Scalar>& K, const Matrix<Scalar>& V,
                                                    const Matrix<Scalar>& dO, const Matrix<Scalar>* dS_final = nullptr,
                                                    const Vector<Scalar>* dz_final = nullptr,
                                                    Eigen::Index checkpoint = 64) {
  const LinearAttentionState<Scalar> start(S0, z0, cfg);  // validates the config and the state
  const Eigen::Index T = Q.rows(), n = start.dk(), m = start.dv();
  detail::check_backward_rows<Scalar>("linear_attention_backward", n, m, checkpoint, Q, K, V, nullptr, dO);
  auto need = [](bool ok, const char* what) {
    if (!ok) throw std::invalid_argument(std::string("vla::linear_attention_backward: ") + what);
  };
  if (dS_final) need(dS_final->rows() == m && dS_final->cols() == n && dS_final->allFinite(), "dS_final must be finite, dv × dk");
  if (dz_final) need(dz_final->size() == n && dz_final->allFinite(), "dz_final must be finite, of size dk");

  detail::BaselineColumns<Scalar> c(Q, K, V, dO);
  Vector<Scalar> o(m);
  Matrix<Scalar> gS = dS_final ? *dS_final : Matrix<Scalar>::Zero(m, n);
  Vector<Scalar> gz = dz_final ? *dz_final : Vector<Scalar>::Zero(n);
  detail::BaselineScratch<Scalar> scratch(n, m);
  BaselineGradients<Scalar> g;
  detail::checkpointed_reverse(
      start, T, checkpoint,
      [&](LinearAttentionState<Scalar>& st, Eigen::Index t) {
        c.load(t);
        st.step_unchecked(c.q, c.k, c.v, o);
      },
      [&](const LinearAttentionState<Scalar>& pre, Eigen::Index t) {
        c.load_adjoint(t);
        g.floored_steps +=
            detail::linear_attention_step_adjoint(pre, cfg, c.q, c.k, c.v, c.go, gS, gz, c.gq, c.gk, c.gv, scratch);
        c.store(t);
      });
  c.finish(g);
  g.dS0 = gS;
  g.dz0 = gz;
  return g;
}

/// Reverse mode through one head's DeltaNet forward of T steps from S0 with step sizes beta (T, each
/// in (0, 1]) (docs/maths.md §9b): L = Σ_t ⟨d_o[t], o_t⟩ + ⟨dS_final, S_T⟩ (optional).
template <class Scalar>
BaselineGradients<Scalar> deltanet_backward(const Matrix<Scalar>& S0, const Matrix<Scalar>& Q, const Matrix<Scalar>& K,
                                            const Matrix<Scalar>& V, const Vector<Scalar>& beta,
                                            const Matrix<Scalar>& dO, const Matrix<Scalar>* dS_final = nullptr,
                                            Eigen::Index checkpoint = 64) {
  const DeltaNetState<Scalar> start(S0);  // validates the state
  const Eigen::Index T = Q.rows(), n = start.dk(), m = start.dv();
  detail::check_backward_rows<Scalar>("deltanet_backward", n, m, checkpoint, Q, K, V, nullptr, dO);
  auto need = [](bool ok, const char* what) {
    if (!ok) throw std::invalid_argument(std::string("vla::deltanet_backward: ") + what);
  };
  need(beta.size() == T, "beta must have one entry per token");
  for (Eigen::Index t = 0; t < T; ++t) need(beta[t] > Scalar(0) && beta[t] <= Scalar(1), "beta must be in (0, 1]");
  if (dS_final) need(dS_final->rows() == m && dS_final->cols() == n && dS_final->allFinite(), "dS_final must be finite, dv × dk");

  detail::BaselineColumns<Scalar> c(Q, K, V, dO);
  Vector<Scalar> o(m);
  Matrix<Scalar> gS = dS_final ? *dS_final : Matrix<Scalar>::Zero(m, n);
  detail::BaselineScratch<Scalar> scratch(n, m);
  BaselineGradients<Scalar> g;
  g.dbeta.resize(T);
  detail::checkpointed_reverse(
      start, T, checkpoint,
      [&](DeltaNetState<Scalar>& st, Eigen::Index t) {
        c.load(t);
        st.step_unchecked(c.q, c.k, c.v, beta[t], o);
      },
      [&](const DeltaNetState<Scalar>& pre, Eigen::Index t) {
        c.load_adjoint(t);
        detail::deltanet_step_adjoint(pre, c.q, c.k, c.v, beta[t], c.go, gS, c.gq, c.gk, c.gv, g.dbeta[t], scratch);
        c.store(t);
      });
  c.finish(g);
  g.dS0 = gS;
  return g;
}

}  // namespace vla
