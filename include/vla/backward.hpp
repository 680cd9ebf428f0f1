// vla/backward.hpp — reverse mode through one head's VLA recurrence (docs/maths.md §9, §9d) and
// through the two baselines (§9b), on the CPU.
//
// The forward is the state's own step (VlaState, LinearAttentionState, DeltaNetState); this file
// adds only the adjoint of each line of docs/maths.md §2 (§7 for the baselines), in reverse order,
// derived in §9 (the derivation beside the lines below follows it step by step). Every op's states
// come from undoing each step with what its forward pass kept (§9d; the baselines §9e), checked at
// every checkpoint, through one driver (detail::checkpointed_reverse). Float and double.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
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

/// What a CPU backward recomputes and where the output floor binds (for tests and diagnostics);
/// VLA's, linear attention's and DeltaNet's (docs/maths.md §9d, §9e).
struct BackwardStats {
  std::int64_t floored_steps = 0;  ///< steps whose output denominator floor bound: none through zᵀq
  std::int64_t checkpoints = 0;    ///< states kept by the first pass (memory: checkpoints × the state's size)
  std::int64_t rolled_back_blocks = 0;  ///< blocks walked by undoing each step (BackwardStates::roll_back)
  std::int64_t recomputed_blocks = 0;   ///< blocks run again from their checkpoint (recompute, a clamp, a redo)
  std::int64_t redone_blocks = 0;       ///< of those, blocks undone first and run again: drift above the tolerance
  double max_roll_back_drift = 0;       ///< the largest drift of an accepted roll-back (docs/maths.md §9d)
};

/// VLA's: also where its δ floor bound.
struct VlaBackwardStats : BackwardStats {
  std::int64_t clamped_steps = 0;  ///< steps whose δ floor bound: no gradient flows through δ there
};

/// Where a CPU backward gets each step's state from (docs/maths.md §9d, §9e).
enum class BackwardStates {
  roll_back,  ///< undo each step with its own vectors, checked against every checkpoint (the default)
  recompute,  ///< run each block again from its checkpoint and keep its states: the forward's bits
};

/// The largest drift accepted of a rolled-back block: max|undone − kept| over the state's largest
/// entry in the block, for A and S, at the block's checkpoint (docs/maths.md §9d). Above it, the
/// block runs again from its checkpoint.
template <class Scalar>
constexpr double kRollBackTolerance() {
  return 64 * double(std::numeric_limits<Scalar>::epsilon());
}

namespace detail {

/// The scaled output of docs/maths.md §9 (§2.6), shared by VLA and linear attention: q̃ = q/m
/// (m = max|q|, or 1 for a zero or subnormal q), d̃ = max(z₂ᵀq̃, ε_den/m), p̄ = g/d̃; with the
/// normaliser off, q̃ = q and p̄ = g. `finish` turns S₂ᵀp̄ and S₂q̃ into q̄ and adds to z̄₂.
template <class Scalar>
struct OutputAdjoint {
  bool normalize = false, floored = false;
  Scalar m = 1, den = 1;
  template <class Q, class Go>
  OutputAdjoint(const Q& q, const Vector<Scalar>& z2, const Go& go, const Config& cfg, Vector<Scalar>& qs,
                Vector<Scalar>& gp)
      : normalize(cfg.normalize_output) {
    if (!normalize) {
      qs = q;
      gp = go;
      return;
    }
    m = q.cwiseAbs().maxCoeff();
    if (!(m > Scalar(0)) || !std::isfinite(Scalar(1) / m)) m = 1;  // zero or subnormal q: no scaling
    qs = q / m;
    const Scalar zqs = z2.dot(qs);
    const Scalar eps_m = Scalar(cfg.denom_eps) / m;
    floored = !(zqs > eps_m);
    den = floored ? eps_m : zqs;
    gp = go / den;  // ∂L/∂(S₂q̃)
  }
  /// Whether finish needs S₂q̃ (only where the floor does not bind).
  bool needs_sq() const { return normalize && !floored; }
  /// S₂q̃ (sqs) from the forward's S₂q (`kept`) where finish needs it; returns whether it must be
  /// formed from S₂ instead (the kept one overflowed: huge q).
  template <class Kept>
  bool sq_from(const Kept& kept, Vector<Scalar>& sqs) const {
    if (!needs_sq()) return false;
    if (!all_finite(kept)) return true;
    sqs = kept / m;
    return false;
  }
  /// q̄ from q̃̄ = S₂ᵀp̄ (p1) [+ d̃̄ z₂]; z̄₂ += d̃̄ q̃ (d̃̄ = −gᵀo/d̃, o = S₂q̃/d̃, no d̃² formed).
  template <class Go, class Gq>
  void finish(const Vector<Scalar>& z2, const Go& go, const Vector<Scalar>& qs, const Vector<Scalar>& sqs,
              Vector<Scalar>& p1, Vector<Scalar>& gz, Gq&& gq) const {
    if (needs_sq()) {  // where the floor binds, o = S₂q/ε_den: no gradient through z₂ᵀq
      const Scalar gden = -(go.dot(sqs) / den) / den;
      p1 += gden * z2;
      gz += gden * qs;
    }
    if (normalize)
      gq = p1 / m;
    else
      gq = p1;
  }
};

/// What the backward keeps of every forward step to undo it and differentiate it (docs/maths.md
/// §9d), one column per token: s = A û/√δ, α̂, e = v − S k̂, S₂q, and the step's factors (û = uf·u,
/// k̂ = kf·k, α̂ = af·α, δ). Columns whose factor is zero are not written (nothing uses them).
/// Memory: T·(2·dk + 2·dv + 4) numbers.
template <class Scalar>
struct VlaStepRecords {
  Matrix<Scalar> s, ah, e, sq;
  std::vector<VlaStepFactors<Scalar>> f;
  VlaStepRecords(Eigen::Index dk, Eigen::Index dv, Eigen::Index T)
      : s(dk, T), ah(dk, T), e(dv, T), sq(dv, T), f(static_cast<std::size_t>(T)) {}
  void keep(const VlaState<Scalar>& st, Eigen::Index t) {
    const VlaStepFactors<Scalar>& x = st.last_factors();
    f[static_cast<std::size_t>(t)] = x;
    if (x.uf != Scalar(0)) s.col(t) = st.last_s();
    if (x.af != Scalar(0)) {
      ah.col(t) = st.last_alpha_hat();
      e.col(t) = st.last_e();
    }
    sq.col(t) = st.last_sq();
  }
};

/// max|x|, 0 for an empty x.
template <class X>
typename X::Scalar h_max(const X& x) {
  return x.size() ? x.cwiseAbs().maxCoeff() : typename X::Scalar(0);
}

/// The drift of an undone matrix or vector from the kept one (docs/maths.md §9d): max|undone − kept|
/// over the larger of `scale` (its largest entry on entry to the block) and max|kept|; 0 when both are
/// 0 (an empty one included).
template <class U, class K, class Scalar>
Scalar relative_drift(const U& undone, const K& kept, Scalar scale) {
  const Scalar s = std::max(scale, h_max(kept));
  return s > Scalar(0) ? (undone - kept).cwiseAbs().maxCoeff() / s : Scalar(0);
}

/// The state the reverse sweep holds at a step: the state after it (A₂, S₂ᵀ, z₂). S is held
/// transposed (dk × dv) so that the two products the adjoint needs of it, S₂ᵀp̄ and S₂ᵀē, and the
/// roll-back S ← S₂ − e α̂ᵀ are all column sweeps (no reductions, detail/cpu_kernels.hpp).
template <class Scalar>
struct VlaHeldState {
  Matrix<Scalar> A, St;
  Vector<Scalar> z;
  void set(const VlaState<Scalar>& st) {
    A = st.A();
    St = st.S().transpose();
    z = st.z();
  }
  /// The state's largest entries (A, S) on entry to a block, for drift.
  std::array<Scalar, 2> scale() const { return {A.cwiseAbs().maxCoeff(), St.cwiseAbs().maxCoeff()}; }
  /// How far the undone state is from the kept one `c` (docs/maths.md §9d), for A and S.
  double drift(const VlaState<Scalar>& c, const std::array<Scalar, 2>& sc) const {
    const Scalar dA = (A - c.A()).cwiseAbs().maxCoeff() / std::max(sc[0], c.A().cwiseAbs().maxCoeff());
    return std::max(double(dA), double(relative_drift(St, c.S().transpose(), sc[1])));
  }
};

/// Scratch vectors of the adjoint step, allocated once per backward.
template <class Scalar>
struct VlaAdjointScratch {
  Vector<Scalar> uh, kh, qs, gp, sqs, ge, gah, galpha, Gs, gw, Aga, Agw, p1, t2, guh, gkh, nah, nge, h1, h2, h3, h4;
  VlaAdjointScratch(Eigen::Index dk, Eigen::Index dv) {
    for (Vector<Scalar>* x : {&uh, &kh, &qs, &gah, &galpha, &Gs, &gw, &Aga, &Agw, &p1, &t2, &guh, &gkh, &nah, &h1,
                              &h2, &h3, &h4})
      x->resize(dk);
    for (Vector<Scalar>* x : {&gp, &sqs, &ge, &nge}) x->resize(dv);
  }
};


/// What the S̄ chain of a step hands to the Ā chain of the same step (docs/maths.md §9d): ᾱ and the
/// S part of k̂̄ (−Sᵀē), one column per step of a block.
template <class Scalar>
struct VlaChainLinks {
  Matrix<Scalar> galpha, gkh;
  VlaChainLinks(Eigen::Index dk, Eigen::Index block) : galpha(dk, block), gkh(dk, block) {}
};

/// The S̄ chain of one step's adjoint (docs/maths.md §9, in the form of §9d): the lines of §2.6, §2.5
/// and §2.4's α̂, on the held S₂ᵀ and z₂ (`h`; with Roll, left holding S and z before the step) and
/// (S̄, z̄), which enter as the gradient with respect to the state after the step and leave as the
/// gradient with respect to the state before it. Writes q̄, v̄, k̄'s term through z (gk = z̄₂), and
/// into `link` ᾱ and −Sᵀē for the Ā chain. Three sweeps: S̄ (read), S₂ᵀ (read, undone), S̄ (rank 2).
template <bool Roll, class Scalar, class QV, class KV, class GoV, class GqV, class GkV, class GvV, class LV>
void vla_adjoint_s(VlaHeldState<Scalar>& h, const VlaStepRecords<Scalar>& rec, Eigen::Index t, const Config& cfg,
                   const QV& q, const KV& k, const GoV& go, Matrix<Scalar>& gS, Vector<Scalar>& gz, GqV&& gq,
                   GkV&& gk, GvV&& gv, LV&& link_galpha, LV&& link_gkh, VlaAdjointScratch<Scalar>& x,
                   VlaBackwardStats& stats) {
  const Eigen::Index n = h.St.rows(), m = h.St.cols();
  const VlaStepFactors<Scalar>& f = rec.f[static_cast<std::size_t>(t)];
  const bool wrote = f.af != Scalar(0);
  const Scalar* ah = rec.ah.col(t).data();
  const Scalar* e = rec.e.col(t).data();
  const auto S_ = [&](const Scalar* p, Eigen::Index len) { return Eigen::Map<const Vector<Scalar>>(p, len); };
  if (wrote) x.kh = k * f.kf;  // the forward's k̂, bit for bit

  // §2.6 the output: q̃, d̃, p̄ (OutputAdjoint); S₂q̃ from the forward's S₂q (rescaled; formed again
  // in the S₂ sweep only if it overflowed: huge q).
  const OutputAdjoint<Scalar> out(q, h.z, go, cfg, x.qs, x.gp);
  const bool sq_in_sweep = out.sq_from(rec.sq.col(t), x.sqs);
  if (out.floored) ++stats.floored_steps;

  // §2.5 S₂ = S + e α̂ᵀ: ē = S̄₂α̂, α̂̄ = S̄₂ᵀe with S̄₂ = S̄ + p̄ q̃ᵀ (the output's term, added below).
  if (wrote) {
    sweep<0, 1, 1>(gS.data(), m, n, {}, {}, {ah}, {x.ge.data()}, {e}, {x.gah.data()});
    x.ge += x.gp * x.qs.dot(S_(ah, n));
    x.gah += x.qs * x.gp.dot(S_(e, m));
    gv = x.ge;
    // §2.4 α̂ = α/‖α‖: ᾱ = af·(I − α̂α̂ᵀ) α̂̄
    link_galpha = f.af * (x.gah - S_(ah, n) * S_(ah, n).dot(x.gah));
  } else {
    gv.setZero();
  }

  // The S₂ sweep (S₂ᵀ held): S₂ᵀp̄, S₂ᵀē (and S₂q̃ if it must be formed), then (Roll) S ← S₂ − e α̂ᵀ.
  Scalar* St = h.St.data();
  if (wrote) {
    x.nah = -S_(ah, n);
    if (sq_in_sweep)
      sweep<Roll ? 1 : 0, 2, 1>(St, n, m, {x.nah.data()}, {e}, {x.gp.data(), x.ge.data()},
                                       {x.p1.data(), x.t2.data()}, {x.qs.data()}, {x.sqs.data()});
    else
      sweep<Roll ? 1 : 0, 2, 0>(St, n, m, {x.nah.data()}, {e}, {x.gp.data(), x.ge.data()},
                                       {x.p1.data(), x.t2.data()}, {}, {});
  } else if (sq_in_sweep) {
    sweep<0, 1, 1>(St, n, m, {}, {}, {x.gp.data()}, {x.p1.data()}, {x.qs.data()}, {x.sqs.data()});
  } else {
    sweep<0, 1, 0>(St, n, m, {}, {}, {x.gp.data()}, {x.p1.data()}, {}, {});
  }
  out.finish(h.z, go, x.qs, x.sqs, x.p1, gz, gq);

  // §2.6 z₂ = z + k: k̄ = z̄₂. §2.5: k̂̄ = −Sᵀē = −(S₂ᵀē − α̂ (eᵀē)) (the Ā chain adds A₂ᾱ).
  gk = gz;
  if (wrote) link_gkh = S_(ah, n) * S_(e, m).dot(x.ge) - x.t2;

  // S̄ (before) = S̄₂ − ē k̂ᵀ = S̄ + p̄ q̃ᵀ − ē k̂ᵀ.
  if (wrote) {
    x.nge = -x.ge;
    sweep<2, 0, 0>(gS.data(), m, n, {x.gp.data(), x.nge.data()}, {x.qs.data(), x.kh.data()}, {}, {}, {}, {});
  } else {
    sweep<1, 0, 0>(gS.data(), m, n, {x.gp.data()}, {x.qs.data()}, {}, {}, {}, {});
  }
  if (Roll) h.z -= k;
}

/// The Ā chain of one step's adjoint (docs/maths.md §9, §9d): §2.4's α = A₂k̂ and k̂, §2.3, §2.2 and
/// §2.1, on the held A₂ (`h`; with Roll, left holding A before the step: A₂ + s sᵀ − ε_r I) and
/// Ḡ = sym(Ā), which enters as the gradient with respect to A₂ and leaves as that with respect to A.
/// Takes ᾱ and −Sᵀē from the S̄ chain (`link_*`), adds k̂'s share to k̄, writes ū. Three sweeps:
/// Ḡ (read), A₂ (read, undone), Ḡ (rank 4).
template <bool Roll, class Scalar, class KV, class UV, class GkV, class GuV, class LV>
void vla_adjoint_a(VlaHeldState<Scalar>& h, const VlaStepRecords<Scalar>& rec, Eigen::Index t, Scalar eps_r,
                   const Config& cfg, const KV& k, const UV& u, Matrix<Scalar>& G, GkV&& gk, GuV&& gu,
                   const LV& link_galpha, const LV& link_gkh, VlaAdjointScratch<Scalar>& x, VlaBackwardStats& stats) {
  const Eigen::Index n = h.A.rows();
  const VlaStepFactors<Scalar>& f = rec.f[static_cast<std::size_t>(t)];
  const bool has_u = f.uf != Scalar(0), wrote = f.af != Scalar(0);
  const Scalar* s = rec.s.col(t).data();
  const auto S_ = [&](const Scalar* p, Eigen::Index len) { return Eigen::Map<const Vector<Scalar>>(p, len); };
  if (has_u) x.uh = u * f.uf;  // the forward's û and k̂, bit for bit
  if (wrote) {
    x.kh = k * f.kf;
    x.galpha = link_galpha;
  }

  // §2.2 with Ḡ_mid = Ḡ + sym(ᾱ k̂ᵀ) and w = √δ s: Ḡ_mid w = √δ (Ḡs + ½(ᾱ (k̂ᵀs) + k̂ (ᾱᵀs))),
  // δ̄ = wᵀḠ_mid w/δ² = sᵀḠ_mid s/δ, w̄ = −2 Ḡ_mid w/δ + δ̃̄ û = −2 Ḡ_mid s/√δ + δ̃̄ û.
  const Scalar rd = has_u ? std::sqrt(f.delta) : Scalar(1);
  Scalar gdtil = 0;
  if (has_u) {
    sweep<0, 1, 0>(G.data(), n, n, {}, {}, {s}, {x.Gs.data()}, {}, {});
    if (wrote) x.Gs += Scalar(0.5) * (x.galpha * x.kh.dot(S_(s, n)) + x.kh * x.galpha.dot(S_(s, n)));
    const bool clamped = !(f.delta > Scalar(cfg.stab_eps));
    if (clamped) ++stats.clamped_steps;  // the floor binds: no gradient through δ
    gdtil = clamped ? Scalar(0) : S_(s, n).dot(x.Gs) / f.delta;
    x.gw = (Scalar(-2) / rd) * x.Gs + gdtil * x.uh;
  }

  // The A₂ sweep: A₂ᾱ (k̂̄'s term of §2.4) and A₂w̄, then (Roll) A ← A₂ + s sᵀ − ε_r I.
  Scalar* A = h.A.data();
  if (wrote && has_u)
    sweep<Roll ? 1 : 0, 2, 0>(A, n, n, {s}, {s}, {x.galpha.data(), x.gw.data()}, {x.Aga.data(), x.Agw.data()},
                                     {}, {});
  else if (wrote)
    sweep<0, 1, 0>(A, n, n, {}, {}, {x.galpha.data()}, {x.Aga.data()}, {}, {});
  else if (has_u)
    sweep<Roll ? 1 : 0, 1, 0>(A, n, n, {s}, {s}, {x.gw.data()}, {x.Agw.data()}, {}, {});
  if (Roll && eps_r != Scalar(0)) h.A.diagonal().array() -= eps_r;

  // §2.4: k̂̄ = −Sᵀē + A₂ᾱ; k̂ = k/‖k‖ (kf = 1/‖k‖): k̄ += kf·(I − k̂k̂ᵀ) k̂̄.
  if (wrote) {
    x.gkh = link_gkh + x.Aga;
    gk += f.kf * (x.gkh - x.kh * x.kh.dot(x.gkh));
  }

  // §2.2 û̄ = δ̃̄ w + A w̄ with A w̄ = A₂w̄ − ε_r w̄ + s (sᵀw̄); §2.1 û = c·u/‖u‖ (uf = c/‖u‖): ū = uf·(I − n̂n̂ᵀ)û̄.
  if (has_u) {
    x.guh = x.Agw + (gdtil * rd) * S_(s, n) + S_(s, n) * S_(s, n).dot(x.gw);
    if (eps_r != Scalar(0)) x.guh -= eps_r * x.gw;
    const Scalar c2 = Scalar(1) / Scalar(n);  // c² = 1/dk
    gu = f.uf * (x.guh - x.uh * (x.uh.dot(x.guh) / c2));
  } else {
    gu.setZero();
  }

  // Ḡ (before) = Ḡ + sym(ᾱ k̂ᵀ) + sym(w̄ ûᵀ).
  if (wrote || has_u) {
    if (wrote) x.h1 = Scalar(0.5) * x.galpha, x.h2 = Scalar(0.5) * x.kh;
    if (has_u) x.h3 = Scalar(0.5) * x.gw, x.h4 = Scalar(0.5) * x.uh;
    if (wrote && has_u)
      sweep<4, 0, 0>(G.data(), n, n, {x.h1.data(), x.h2.data(), x.h3.data(), x.h4.data()},
                            {x.kh.data(), x.galpha.data(), x.uh.data(), x.gw.data()}, {}, {}, {}, {});
    else if (wrote)
      sweep<2, 0, 0>(G.data(), n, n, {x.h1.data(), x.h2.data()}, {x.kh.data(), x.galpha.data()}, {}, {}, {}, {});
    else
      sweep<2, 0, 0>(G.data(), n, n, {x.h3.data(), x.h4.data()}, {x.uh.data(), x.gw.data()}, {}, {}, {}, {});
  }
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
  need(all_finite(Q) && all_finite(K) && all_finite(V) && (!U || all_finite(*U)) && all_finite(dO),
       U ? "q, k, v, u and d_o must be finite" : "q, k, v and d_o must be finite");
}

/// The two passes of every CPU backward here (docs/maths.md §9, "States"; §9d). The forward from
/// `start`, keeping the state every `checkpoint` steps and calling `keep(state, t)` after each step
/// (the op's per-step record); then one state held (`Held`, the state after the step being
/// differentiated), and the blocks from the last: `block(roll, t0, t1, held)` differentiates steps
/// t1 − 1 … t0, where `held(t)` is the Held state after step t. With roll = std::true_type (the
/// default, BackwardStates::roll_back, where `undoable(t0, t1)`) every call returns the one held
/// state, which the block undoes step by step; at the block's first step it is compared with the
/// checkpoint (Held::drift), and above `tolerance` the block's adjoint (`adj`, and `stats`, copied
/// before) is put back and the block run again as recompute runs it: from its checkpoint, with
/// `step(state, t)` (the forward's own step: its bits), every state after a step kept, roll =
/// std::false_type. Every block then starts from the kept checkpoint, exactly.
/// Memory: (T/C) states, and C Held states where a block is recomputed.
template <class Held, class State, class Adj, class Stats, class Step, class Keep, class Undoable, class Block>
void checkpointed_reverse(const State& start, Eigen::Index T, Eigen::Index checkpoint, BackwardStates states,
                          double tolerance, Adj& adj, Stats& stats, Step&& step, Keep&& keep, Undoable&& undoable,
                          Block&& block) {
  std::vector<State> ckpt;
  State st = start;
  for (Eigen::Index t = 0; t < T; ++t) {
    if (t % checkpoint == 0) ckpt.push_back(st);
    step(st, t);
    keep(st, t);
  }
  stats.checkpoints = static_cast<std::int64_t>(ckpt.size());
  Held h;
  h.set(st);
  std::vector<Held> post;  // recompute: a block's states after each step
  Adj adj_save;
  Stats stats_save;
  for (Eigen::Index b = static_cast<Eigen::Index>(ckpt.size()) - 1; b >= 0; --b) {
    const Eigen::Index t0 = b * checkpoint, t1 = std::min<Eigen::Index>(T, t0 + checkpoint);
    const State& c = ckpt[static_cast<std::size_t>(b)];
    bool roll = states == BackwardStates::roll_back && undoable(t0, t1);
    if (roll) {
      adj_save = adj, stats_save = stats;
      const auto scale = h.scale();
      block(std::true_type{}, t0, t1, [&](Eigen::Index) -> Held& { return h; });
      // How far the undone state is from the kept one, relative to the state's size over the block.
      const double drift = h.drift(c, scale);
      if (drift <= tolerance) {
        stats.max_roll_back_drift = std::max(stats.max_roll_back_drift, drift);
        ++stats.rolled_back_blocks;
      } else {  // run the block again from its checkpoint, as recompute does
        adj = adj_save, stats = stats_save;
        ++stats.redone_blocks;
        roll = false;
      }
    }
    if (!roll) {
      if (post.empty()) post.resize(static_cast<std::size_t>(std::min<Eigen::Index>(checkpoint, T)));
      State r = c;
      for (Eigen::Index t = t0; t < t1; ++t) {
        step(r, t);
        post[static_cast<std::size_t>(t - t0)].set(r);
      }
      block(std::false_type{}, t0, t1, [&](Eigen::Index t) -> Held& { return post[static_cast<std::size_t>(t - t0)]; });
      ++stats.recomputed_blocks;
    }
    h.set(c);  // the kept state, exactly: the next block's state after its last step
  }
}

}  // namespace detail

namespace detail {
/// A head's tokens as the columns of a d × T matrix, each token's vectors contiguous and the columns
/// any distance apart: a plain matrix, or a view of the batched layout [tokens, H, d] (stride H·d).
template <class Scalar>
using TokenColumns = Eigen::Ref<const Matrix<Scalar>, 0, Eigen::OuterStride<>>;
template <class Scalar>
using GradColumns = Eigen::Ref<Matrix<Scalar>, 0, Eigen::OuterStride<>>;

/// vla_backward on token columns, with the roll-back's drift tolerance as a parameter (vla_backward
/// passes kRollBackTolerance; the tests pass 0 to run every block again). Nothing is validated here:
/// the callers have (vla_backward the rows and d_final; the batched backward every buffer, before
/// its workers start). Writes the token gradients' columns (gqc … guc: dk × T, dv × T) and returns
/// the gradient of the initial state (dA0 symmetric).
template <class Scalar>
VlaSnapshot<Scalar> vla_backward_columns(const VlaState<Scalar>& start, TokenColumns<Scalar> Qc, TokenColumns<Scalar> Kc,
                                         TokenColumns<Scalar> Vc, TokenColumns<Scalar> Uc, TokenColumns<Scalar> dOc,
                                         const VlaSnapshot<Scalar>* d_final, Eigen::Index checkpoint,
                                         VlaBackwardStats* stats_out, BackwardStates states, double tolerance,
                                         GradColumns<Scalar> gqc, GradColumns<Scalar> gkc, GradColumns<Scalar> gvc,
                                         GradColumns<Scalar> guc) {
  const Eigen::Index T = Qc.cols(), n = start.dk(), m = start.dv();
  const Config& cfg = start.config();

  Vector<Scalar> o(m);
  auto step = [&](VlaState<Scalar>& st, Eigen::Index t) { st.step_unchecked(Qc.col(t), Kc.col(t), Vc.col(t), Uc.col(t), o); };

  // The adjoint: sym(Ā) (all the adjoint uses of Ā, §9d), S̄, z̄.
  struct Adjoint {
    Matrix<Scalar> G, gS;
    Vector<Scalar> gz;
  } adj;
  adj.G = d_final ? Matrix<Scalar>((d_final->A + d_final->A.transpose()) / Scalar(2)) : Matrix<Scalar>::Zero(n, n);
  adj.gS = d_final ? d_final->S : Matrix<Scalar>::Zero(m, n);
  adj.gz = d_final ? d_final->z : Vector<Scalar>::Zero(n);
  VlaBackwardStats stats;
  detail::VlaStepRecords<Scalar> rec(n, m, T);
  detail::VlaAdjointScratch<Scalar> x(n, m);
  const Scalar stab_eps = Scalar(cfg.stab_eps);
  auto eps_r = [&](Eigen::Index t) {
    return rules::refresh_due(start.steps() + t, cfg.refresh_period) ? Scalar(cfg.refresh_eps) : Scalar(0);
  };
  // A block's adjoint as two chains (docs/maths.md §9d): the S̄ chain (S₂, S̄, z̄) over the block's
  // steps from the last, then the Ā chain (A₂, Ḡ), which takes only ᾱ and −Sᵀē of each step from
  // the first. Each chain's two d×d matrices stay in L1 through the block, where all four do not.
  detail::VlaChainLinks<Scalar> links(n, std::min<Eigen::Index>(checkpoint, std::max<Eigen::Index>(T, 1)));
  auto adjoint_block = [&](auto roll, Eigen::Index t0, Eigen::Index t1, auto&& held) {
    constexpr bool R = decltype(roll)::value;
    for (Eigen::Index t = t1 - 1; t >= t0; --t)
      detail::vla_adjoint_s<R>(held(t), rec, t, cfg, Qc.col(t), Kc.col(t), dOc.col(t), adj.gS, adj.gz, gqc.col(t),
                               gkc.col(t), gvc.col(t), links.galpha.col(t - t0), links.gkh.col(t - t0), x, stats);
    for (Eigen::Index t = t1 - 1; t >= t0; --t)
      detail::vla_adjoint_a<R>(held(t), rec, t, eps_r(t), cfg, Kc.col(t), Uc.col(t), adj.G, gkc.col(t), guc.col(t),
                               links.galpha.col(t - t0), links.gkh.col(t - t0), x, stats);
  };
  // A δ clamp in the block: A − s sᵀ cancelled, and undoing it would not give A back.
  auto undoable = [&](Eigen::Index t0, Eigen::Index t1) {
    for (Eigen::Index t = t0; t < t1; ++t) {
      const VlaStepFactors<Scalar>& f = rec.f[static_cast<std::size_t>(t)];
      if (f.uf != Scalar(0) && !(f.delta > stab_eps)) return false;
    }
    return true;
  };
  detail::checkpointed_reverse<detail::VlaHeldState<Scalar>>(
      start, T, checkpoint, states, tolerance, adj, stats, step,
      [&](const VlaState<Scalar>& s, Eigen::Index t) { rec.keep(s, t); }, undoable, adjoint_block);
  if (stats_out) *stats_out = stats;
  return VlaSnapshot<Scalar>{adj.G, adj.gS, adj.gz, start.steps()};
}

/// vla_backward's checks, then vla_backward_columns on the rows turned into columns (one transpose
/// each: every pass reads a token's vectors contiguously, where a row of a column-major T × d matrix
/// is d loads T apart) and the gradients turned back.
template <class Scalar>
VlaGradients<Scalar> vla_backward_rows(const VlaState<Scalar>& start, const Matrix<Scalar>& Q, const Matrix<Scalar>& K,
                                       const Matrix<Scalar>& V, const Matrix<Scalar>& U, const Matrix<Scalar>& dO,
                                       const VlaSnapshot<Scalar>* d_final, Eigen::Index checkpoint,
                                       VlaBackwardStats* stats_out, BackwardStates states, double tolerance) {
  const Eigen::Index T = Q.rows(), n = start.dk(), m = start.dv();
  check_backward_rows<Scalar>("vla_backward", n, m, checkpoint, Q, K, V, &U, dO);
  auto need = [](bool ok, const char* what) {
    if (!ok) throw std::invalid_argument(std::string("vla::vla_backward: ") + what);
  };
  if (d_final) {
    need(d_final->A.rows() == n && d_final->A.cols() == n && d_final->S.rows() == m && d_final->S.cols() == n &&
             d_final->z.size() == n,
         "d_final must be shaped like the state (dk × dk, dv × dk, dk)");
    need(d_final->A.allFinite() && d_final->S.allFinite() && d_final->z.allFinite(), "d_final must be finite");
  }
  const Matrix<Scalar> Qc = Q.transpose(), Kc = K.transpose(), Vc = V.transpose(), Uc = U.transpose(),
                       dOc = dO.transpose();
  Matrix<Scalar> gqc(n, T), gkc(n, T), gvc(m, T), guc(n, T);
  VlaGradients<Scalar> g;
  g.d_initial = vla_backward_columns<Scalar>(start, Qc, Kc, Vc, Uc, dOc, d_final, checkpoint, stats_out, states,
                                             tolerance, gqc, gkc, gvc, guc);
  g.dq = gqc.transpose();
  g.dk = gkc.transpose();
  g.dv = gvc.transpose();
  g.du = guc.transpose();
  return g;
}
}  // namespace detail

/// Reverse mode through one head's forward of T steps from `start` (docs/maths.md §9, §9d):
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
/// How (docs/maths.md §9d): one forward pass keeps a checkpoint every `checkpoint` steps and each
/// step's record (VlaStepRecords); the reverse pass holds one state and, with
/// BackwardStates::roll_back (the default), undoes each step with its own vectors while it reads
/// it, checking at every checkpoint how far the undone state has drifted from the kept one and
/// running that block again from its checkpoint (as recompute does) where the drift exceeds
/// kRollBackTolerance or a δ clamp bound in the block; BackwardStates::recompute runs every block
/// again from its checkpoint and keeps its states (the forward's bits: then any interval gives the
/// same result, bit for bit).
///
/// Memory: T·(2·dk + 2·dv + 4) numbers of records, T/checkpoint states of dk² + dv·dk + dk numbers,
/// and with recompute (or a block run again) `checkpoint` states more. Time (measured, bench/RESULTS.md).
/// Inputs are validated like the forward's (sizes, finite values), before any work.
template <class Scalar>
VlaGradients<Scalar> vla_backward(const VlaState<Scalar>& start, const Matrix<Scalar>& Q, const Matrix<Scalar>& K,
                                  const Matrix<Scalar>& V, const Matrix<Scalar>& U, const Matrix<Scalar>& dO,
                                  const VlaSnapshot<Scalar>* d_final = nullptr, Eigen::Index checkpoint = 64,
                                  VlaBackwardStats* stats_out = nullptr,
                                  BackwardStates states = BackwardStates::roll_back) {
  return detail::vla_backward_rows<Scalar>(start, Q, K, V, U, dO, d_final, checkpoint, stats_out, states,
                                          kRollBackTolerance<Scalar>());
}

/// The same from a snapshot: validates it as a VlaState does (symmetric, positive diagonal, and
/// positive definite by a Cholesky factorisation), then runs the overload above. To skip the O(dk³)
/// factorisation, as CpuOptions::check_positive_definite = false does, pass
/// VlaState<Scalar>(initial, cfg, /*check_positive_definite=*/false) instead.
template <class Scalar>
VlaGradients<Scalar> vla_backward(const VlaSnapshot<Scalar>& initial, const Config& cfg, const Matrix<Scalar>& Q,
                                  const Matrix<Scalar>& K, const Matrix<Scalar>& V, const Matrix<Scalar>& U,
                                  const Matrix<Scalar>& dO, const VlaSnapshot<Scalar>* d_final = nullptr,
                                  Eigen::Index checkpoint = 64, VlaBackwardStats* stats_out = nullptr,
                                  BackwardStates states = BackwardStates::roll_back) {
  return vla_backward<Scalar>(VlaState<Scalar>(initial, cfg), Q, K, V, U, dO, d_final, checkpoint, stats_out, states);
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

/// What the baselines' backward keeps of every forward step (docs/maths.md §9e), one column per token:
/// linear attention S₂q (its output's numerator: T·dv numbers); DeltaNet the vector it wrote,
/// w = β(v − S k̂), and k̂ = kf·k's factor (T·(dv + 1); a zero key, kf = 0, writes no column).
template <class Scalar>
struct BaselineStepRecords {
  Matrix<Scalar> w;
  std::vector<Scalar> kf;
  BaselineStepRecords(Eigen::Index dv, Eigen::Index T, bool keys) : w(dv, T), kf(keys ? std::size_t(T) : 0) {}
  void keep(const LinearAttentionState<Scalar>& st, Eigen::Index t) { w.col(t) = st.last_sq(); }
  void keep(const DeltaNetState<Scalar>& st, Eigen::Index t) {
    kf[static_cast<std::size_t>(t)] = st.last_key_factor();
    if (st.last_key_factor() != Scalar(0)) w.col(t) = st.last_write();
  }
};

/// The state the baselines' reverse sweep holds: the state after the step, S₂ held transposed
/// (dk × dv: S₂ᵀp̄, S₂ᵀē and the roll-back are column sweeps), and linear attention's z₂.
template <class Scalar>
struct BaselineHeldState {
  Matrix<Scalar> St;
  Vector<Scalar> z;  ///< linear attention's z₂ (empty for DeltaNet)
  void set(const LinearAttentionState<Scalar>& st) {
    St = st.S().transpose();
    z = st.z();
  }
  void set(const DeltaNetState<Scalar>& st) { St = st.S().transpose(); }
  std::array<Scalar, 2> scale() const { return {h_max(St), h_max(z)}; }
  /// How far the undone state is from the kept one (docs/maths.md §9d), for S and z.
  double drift(const LinearAttentionState<Scalar>& c, const std::array<Scalar, 2>& sc) const {
    return std::max(double(relative_drift(St, c.S().transpose(), sc[0])), double(relative_drift(z, c.z(), sc[1])));
  }
  double drift(const DeltaNetState<Scalar>& c, const std::array<Scalar, 2>& sc) const {
    return double(relative_drift(St, c.S().transpose(), sc[0]));
  }
};

/// Scratch of the baselines' adjoint steps, allocated once per backward.
template <class Scalar>
struct BaselineScratch {
  Vector<Scalar> qs, gkh, p1, nk, t2, gp, sqs, ge, nge;
  BaselineScratch(Eigen::Index dk, Eigen::Index dv) {
    for (Vector<Scalar>* x : {&qs, &gkh, &p1, &nk, &t2}) x->resize(dk);
    for (Vector<Scalar>* x : {&gp, &sqs, &ge, &nge}) x->resize(dv);
  }
};

/// The adjoint of one linear-attention step (docs/maths.md §9b, in the form of §9e): S₂ = S + v kᵀ,
/// z₂ = z + k, o = S₂q / max(z₂ᵀq, ε_den), on the held S₂ᵀ and z₂ (`h`; with Roll, left holding S
/// and z before the step) and (S̄, z̄), which enter as the gradient with respect to the state after the
/// step and leave as that with respect to the state before it. Two sweeps: S̄ (read, rank 1), S₂ᵀ
/// (read, undone).
template <bool Roll, class Scalar, class QV, class KV, class VV, class GoV, class GqV, class GkV, class GvV>
void linear_attention_adjoint(BaselineHeldState<Scalar>& h, const BaselineStepRecords<Scalar>& rec, Eigen::Index t,
                              const Config& cfg, const QV& q, const KV& k, const VV& v, const GoV& go,
                              Matrix<Scalar>& gS, Vector<Scalar>& gz, GqV&& gq, GkV&& gk, GvV&& gv,
                              BaselineScratch<Scalar>& x, BackwardStats& stats) {
  const Eigen::Index n = h.St.rows(), m = h.St.cols();
  // §2.6's output (OutputAdjoint, as VLA's): q̃, d̃, p̄; S₂q̃ from the forward's S₂q (formed in the S₂
  // sweep only if it overflowed: huge q).
  const OutputAdjoint<Scalar> out(q, h.z, go, cfg, x.qs, x.gp);
  const bool sq_in_sweep = out.sq_from(rec.w.col(t), x.sqs);
  if (out.floored) ++stats.floored_steps;

  // S₂ = S + v kᵀ with S̄₂ = S̄ + p̄ q̃ᵀ: v̄ = S̄₂k = S̄k + p̄ (q̃ᵀk), S̄₂ᵀv = S̄ᵀv + q̃ (p̄ᵀv), and
  // S̄ (before) = S̄₂: the products of S̄ on entry, then the output's term.
  sweep<1, 1, 1>(gS.data(), m, n, {x.gp.data()}, {x.qs.data()}, {k.data()}, {gv.data()}, {v.data()}, {x.gkh.data()});
  gv += x.gp * x.qs.dot(k);
  x.gkh += x.qs * x.gp.dot(v);

  // The S₂ sweep (S₂ᵀ held): S₂ᵀp̄ (and S₂q̃ if it must be formed), then (Roll) S ← S₂ − v kᵀ.
  Scalar* St = h.St.data();
  x.nk = -k;
  if (sq_in_sweep)
    sweep<Roll ? 1 : 0, 1, 1>(St, n, m, {x.nk.data()}, {v.data()}, {x.gp.data()}, {x.p1.data()}, {x.qs.data()},
                              {x.sqs.data()});
  else
    sweep<Roll ? 1 : 0, 1, 0>(St, n, m, {x.nk.data()}, {v.data()}, {x.gp.data()}, {x.p1.data()}, {}, {});
  out.finish(h.z, go, x.qs, x.sqs, x.p1, gz, gq);

  // z₂ = z + k: k̄ = z̄₂ (+ S̄₂ᵀv), z̄ (before) = z̄₂.
  gk = gz + x.gkh;
  if (Roll) h.z -= k;
}

/// The adjoint of one DeltaNet step (docs/maths.md §9b, in the form of §9e): k̂ = kf·k, e = v − S k̂,
/// S₂ = S + w k̂ᵀ with the kept w = β e, o = S₂q, on the held S₂ᵀ (`h`; with Roll, left holding S
/// before the step) and S̄ (∂L/∂S₂ on entry, ∂L/∂S on exit). A zero (or subnormal) key writes
/// nothing: its k̄ and β̄ are 0 (the step is then o = S q, constant in k and β). Three sweeps:
/// S̄ (read), S₂ᵀ (read, undone), S̄ (rank 2).
template <bool Roll, class Scalar, class QV, class KV, class GoV, class GqV, class GkV, class GvV>
void deltanet_adjoint(BaselineHeldState<Scalar>& h, const BaselineStepRecords<Scalar>& rec, Eigen::Index t, Scalar beta,
                      const QV& q, const KV& k, const GoV& go, Matrix<Scalar>& gS, GqV&& gq, GkV&& gk, GvV&& gv,
                      Scalar& gbeta, BaselineScratch<Scalar>& x) {
  const Eigen::Index n = h.St.rows(), m = h.St.cols();
  const Scalar kf = rec.kf[static_cast<std::size_t>(t)];
  Scalar* St = h.St.data();
  if (kf == Scalar(0)) {  // o = S q: q̄ = Sᵀg, S̄ += g qᵀ
    sweep<0, 1, 0>(St, n, m, {}, {}, {go.data()}, {gq.data()}, {}, {});
    sweep<1, 0, 0>(gS.data(), m, n, {go.data()}, {q.data()}, {}, {}, {}, {});
    gk.setZero();
    gv.setZero();
    gbeta = Scalar(0);
    return;
  }
  const Scalar* w = rec.w.col(t).data();
  const auto W = Eigen::Map<const Vector<Scalar>>(w, m);
  x.p1 = k * kf;  // the forward's k̂, bit for bit

  // With S̄₂ = S̄ + g qᵀ (o = S₂q): S̄₂k̂ = S̄k̂ + g (qᵀk̂) and S̄₂ᵀw = S̄ᵀw + q (gᵀw) = β S̄₂ᵀe.
  sweep<0, 1, 1>(gS.data(), m, n, {}, {}, {x.p1.data()}, {x.gp.data()}, {w}, {x.gkh.data()});
  x.gp += go * q.dot(x.p1);
  x.gkh += q * go.dot(W);
  // S₂ = S + β e k̂ᵀ: ē = β S̄₂k̂, β̄ = eᵀS̄₂k̂ = wᵀS̄₂k̂ / β, v̄ = ē.
  gbeta = W.dot(x.gp) / beta;
  x.ge = beta * x.gp;
  gv = x.ge;

  // The S₂ sweep (S₂ᵀ held): q̄ = S₂ᵀg and S₂ᵀē, then (Roll) S ← S₂ − w k̂ᵀ.
  x.nk = -x.p1;
  sweep<Roll ? 1 : 0, 2, 0>(St, n, m, {x.nk.data()}, {w}, {go.data(), x.ge.data()}, {gq.data(), x.t2.data()}, {},
                            {});
  // k̂̄ = β S̄₂ᵀe − Sᵀē with Sᵀē = S₂ᵀē − k̂ (wᵀē); k̂ = k/‖k‖ (kf = 1/‖k‖): k̄ = kf·(I − k̂k̂ᵀ) k̂̄.
  x.gkh += x.p1 * W.dot(x.ge) - x.t2;
  gk = kf * (x.gkh - x.p1 * x.p1.dot(x.gkh));

  // S̄ (before) = S̄₂ − ē k̂ᵀ = S̄ + g qᵀ − ē k̂ᵀ.
  x.nge = -x.ge;
  sweep<2, 0, 0>(gS.data(), m, n, {go.data(), x.nge.data()}, {q.data(), x.p1.data()}, {}, {}, {}, {});
}

/// A token's step sizes β (DeltaNet), any distance apart (H in the batched layout); and their gradients.
template <class Scalar>
using TokenScalars = Eigen::Ref<const Vector<Scalar>, 0, Eigen::InnerStride<>>;
template <class Scalar>
using GradScalars = Eigen::Ref<Vector<Scalar>, 0, Eigen::InnerStride<>>;

/// The baselines' adjoint accumulators: S̄ and (linear attention) z̄.
template <class Scalar>
struct BaselineAdjoint {
  Matrix<Scalar> gS;
  Vector<Scalar> gz;
};

/// linear_attention_backward on token columns, with the roll-back's drift tolerance as a parameter
/// (as vla_backward_columns; nothing validated here). Writes the token gradients' columns and dS0, dz0.
template <class Scalar>
void linear_attention_backward_columns(const LinearAttentionState<Scalar>& start, TokenColumns<Scalar> Qc,
                                       TokenColumns<Scalar> Kc, TokenColumns<Scalar> Vc, TokenColumns<Scalar> dOc,
                                       const Matrix<Scalar>* dS_final, const Vector<Scalar>* dz_final,
                                       Eigen::Index checkpoint, BackwardStats* stats_out, BackwardStates states,
                                       double tolerance, GradColumns<Scalar> gqc, GradColumns<Scalar> gkc,
                                       GradColumns<Scalar> gvc, Matrix<Scalar>& dS0, Vector<Scalar>& dz0) {
  const Eigen::Index T = Qc.cols(), n = start.dk(), m = start.dv();
  const Config& cfg = start.config();
  Vector<Scalar> o(m);
  BaselineAdjoint<Scalar> adj{dS_final ? *dS_final : Matrix<Scalar>::Zero(m, n),
                              dz_final ? *dz_final : Vector<Scalar>::Zero(n)};
  BackwardStats stats;
  BaselineStepRecords<Scalar> rec(m, T, false);
  BaselineScratch<Scalar> x(n, m);
  checkpointed_reverse<BaselineHeldState<Scalar>>(
      start, T, checkpoint, states, tolerance, adj, stats,
      [&](LinearAttentionState<Scalar>& st, Eigen::Index t) { st.step_unchecked(Qc.col(t), Kc.col(t), Vc.col(t), o); },
      [&](const LinearAttentionState<Scalar>& st, Eigen::Index t) { rec.keep(st, t); },
      [](Eigen::Index, Eigen::Index) { return true; },
      [&](auto roll, Eigen::Index t0, Eigen::Index t1, auto&& held) {
        for (Eigen::Index t = t1 - 1; t >= t0; --t)
          linear_attention_adjoint<decltype(roll)::value>(held(t), rec, t, cfg, Qc.col(t), Kc.col(t), Vc.col(t),
                                                          dOc.col(t), adj.gS, adj.gz, gqc.col(t), gkc.col(t),
                                                          gvc.col(t), x, stats);
      });
  if (stats_out) *stats_out = stats;
  dS0 = std::move(adj.gS);
  dz0 = std::move(adj.gz);
}

/// deltanet_backward on token columns and step sizes (as linear_attention_backward_columns).
template <class Scalar>
void deltanet_backward_columns(const DeltaNetState<Scalar>& start, TokenColumns<Scalar> Qc, TokenColumns<Scalar> Kc,
                               TokenColumns<Scalar> Vc, TokenScalars<Scalar> beta, TokenColumns<Scalar> dOc,
                               const Matrix<Scalar>* dS_final, Eigen::Index checkpoint, BackwardStats* stats_out,
                               BackwardStates states, double tolerance, GradColumns<Scalar> gqc,
                               GradColumns<Scalar> gkc, GradColumns<Scalar> gvc, GradScalars<Scalar> gbeta,
                               Matrix<Scalar>& dS0) {
  const Eigen::Index T = Qc.cols(), n = start.dk(), m = start.dv();
  Vector<Scalar> o(m);
  BaselineAdjoint<Scalar> adj{dS_final ? *dS_final : Matrix<Scalar>::Zero(m, n), Vector<Scalar>()};
  BackwardStats stats;
  BaselineStepRecords<Scalar> rec(m, T, true);
  BaselineScratch<Scalar> x(n, m);
  checkpointed_reverse<BaselineHeldState<Scalar>>(
      start, T, checkpoint, states, tolerance, adj, stats,
      [&](DeltaNetState<Scalar>& st, Eigen::Index t) { st.step_unchecked(Qc.col(t), Kc.col(t), Vc.col(t), beta[t], o); },
      [&](const DeltaNetState<Scalar>& st, Eigen::Index t) { rec.keep(st, t); },
      [](Eigen::Index, Eigen::Index) { return true; },
      [&](auto roll, Eigen::Index t0, Eigen::Index t1, auto&& held) {
        for (Eigen::Index t = t1 - 1; t >= t0; --t)
          deltanet_adjoint<decltype(roll)::value>(held(t), rec, t, beta[t], Qc.col(t), Kc.col(t), dOc.col(t), adj.gS,
                                                  gqc.col(t), gkc.col(t), gvc.col(t), gbeta[t], x);
      });
  if (stats_out) *stats_out = stats;
  dS0 = std::move(adj.gS);
}

/// linear_attention_backward's checks, then linear_attention_backward_columns on the rows turned into
/// columns (as vla_backward_rows) and the gradients turned back.
template <class Scalar>
BaselineGradients<Scalar> linear_attention_backward_rows(const LinearAttentionState<Scalar>& start,
                                                         const Matrix<Scalar>& Q, const Matrix<Scalar>& K,
                                                         const Matrix<Scalar>& V, const Matrix<Scalar>& dO,
                                                         const Matrix<Scalar>* dS_final, const Vector<Scalar>* dz_final,
                                                         Eigen::Index checkpoint, BackwardStats* stats_out,
                                                         BackwardStates states, double tolerance) {
  const Eigen::Index T = Q.rows(), n = start.dk(), m = start.dv();
  check_backward_rows<Scalar>("linear_attention_backward", n, m, checkpoint, Q, K, V, nullptr, dO);
  auto need = [](bool ok, const char* what) {
    if (!ok) throw std::invalid_argument(std::string("vla::linear_attention_backward: ") + what);
  };
  if (dS_final) need(dS_final->rows() == m && dS_final->cols() == n && dS_final->allFinite(), "dS_final must be finite, dv × dk");
  if (dz_final) need(dz_final->size() == n && dz_final->allFinite(), "dz_final must be finite, of size dk");
  const Matrix<Scalar> Qc = Q.transpose(), Kc = K.transpose(), Vc = V.transpose(), dOc = dO.transpose();
  Matrix<Scalar> gqc(n, T), gkc(n, T), gvc(m, T);
  BackwardStats stats;
  BaselineGradients<Scalar> g;
  linear_attention_backward_columns<Scalar>(start, Qc, Kc, Vc, dOc, dS_final, dz_final, checkpoint, &stats, states,
                                            tolerance, gqc, gkc, gvc, g.dS0, g.dz0);
  g.dq = gqc.transpose();
  g.dk = gkc.transpose();
  g.dv = gvc.transpose();
  g.floored_steps = stats.floored_steps;
  if (stats_out) *stats_out = stats;
  return g;
}

/// deltanet_backward's checks, then deltanet_backward_columns (as linear_attention_backward_rows).
template <class Scalar>
BaselineGradients<Scalar> deltanet_backward_rows(const DeltaNetState<Scalar>& start, const Matrix<Scalar>& Q,
                                                 const Matrix<Scalar>& K, const Matrix<Scalar>& V,
                                                 const Vector<Scalar>& beta, const Matrix<Scalar>& dO,
                                                 const Matrix<Scalar>* dS_final, Eigen::Index checkpoint,
                                                 BackwardStats* stats_out, BackwardStates states, double tolerance) {
  const Eigen::Index T = Q.rows(), n = start.dk(), m = start.dv();
  check_backward_rows<Scalar>("deltanet_backward", n, m, checkpoint, Q, K, V, nullptr, dO);
  auto need = [](bool ok, const char* what) {
    if (!ok) throw std::invalid_argument(std::string("vla::deltanet_backward: ") + what);
  };
  need(beta.size() == T, "beta must have one entry per token");
  for (Eigen::Index t = 0; t < T; ++t) need(beta[t] > Scalar(0) && beta[t] <= Scalar(1), "beta must be in (0, 1]");
  if (dS_final) need(dS_final->rows() == m && dS_final->cols() == n && dS_final->allFinite(), "dS_final must be finite, dv × dk");
  const Matrix<Scalar> Qc = Q.transpose(), Kc = K.transpose(), Vc = V.transpose(), dOc = dO.transpose();
  Matrix<Scalar> gqc(n, T), gkc(n, T), gvc(m, T);
  BaselineGradients<Scalar> g;
  g.dbeta.resize(T);
  deltanet_backward_columns<Scalar>(start, Qc, Kc, Vc, beta, dOc, dS_final, checkpoint, stats_out, states, tolerance,
                                    gqc, gkc, gvc, g.dbeta, g.dS0);
  g.dq = gqc.transpose();
  g.dk = gkc.transpose();
  g.dv = gvc.transpose();
  return g;
}

}  // namespace detail

/// Reverse mode through one head's linear-attention forward of T steps from (S0, z0) (docs/maths.md
/// §9b, §9e): L = Σ_t ⟨d_o[t], o_t⟩ + ⟨dS_final, S_T⟩ + ⟨dz_final, z_T⟩ (either final term optional).
/// As vla_backward: one forward pass keeps a checkpoint every `checkpoint` steps and each step's S₂q;
/// the reverse holds one state and, with BackwardStates::roll_back (the default), undoes each step
/// (S ← S₂ − v kᵀ, z ← z₂ − k), checked against every checkpoint (S and z, kRollBackTolerance) and the
/// block run again from it above that; BackwardStates::recompute runs every block again (the forward's
/// states: any interval gives the same bits). Memory: T·dv numbers of records, T/checkpoint states.
/// Validates everything first.
template <class Scalar>
BaselineGradients<Scalar> linear_attention_backward(const Matrix<Scalar>& S0, const Vector<Scalar>& z0,
                                                    const Config& cfg, const Matrix<Scalar>& Q,
                                                    const Matrix<Scalar>& K, const Matrix<Scalar>& V,
                                                    const Matrix<Scalar>& dO, const Matrix<Scalar>* dS_final = nullptr,
                                                    const Vector<Scalar>* dz_final = nullptr,
                                                    Eigen::Index checkpoint = 64, BackwardStats* stats_out = nullptr,
                                                    BackwardStates states = BackwardStates::roll_back) {
  const LinearAttentionState<Scalar> start(S0, z0, cfg);  // validates the config and the state
  return detail::linear_attention_backward_rows<Scalar>(start, Q, K, V, dO, dS_final, dz_final, checkpoint, stats_out,
                                                        states, kRollBackTolerance<Scalar>());
}

/// Reverse mode through one head's DeltaNet forward of T steps from S0 with step sizes beta (T, each
/// in (0, 1]) (docs/maths.md §9b, §9e): L = Σ_t ⟨d_o[t], o_t⟩ + ⟨dS_final, S_T⟩ (optional). As
/// linear_attention_backward, with each step's written vector β(v − S k̂) and key factor kept and
/// the steps undone by S ← S₂ − β e k̂ᵀ (checked on S). Memory: T·(dv + 1) numbers, T/checkpoint states.
template <class Scalar>
BaselineGradients<Scalar> deltanet_backward(const Matrix<Scalar>& S0, const Matrix<Scalar>& Q, const Matrix<Scalar>& K,
                                            const Matrix<Scalar>& V, const Vector<Scalar>& beta,
                                            const Matrix<Scalar>& dO, const Matrix<Scalar>* dS_final = nullptr,
                                            Eigen::Index checkpoint = 64, BackwardStats* stats_out = nullptr,
                                            BackwardStates states = BackwardStates::roll_back) {
  const DeltaNetState<Scalar> start(S0);  // validates the state
  return detail::deltanet_backward_rows<Scalar>(start, Q, K, V, beta, dO, dS_final, checkpoint, stats_out, states,
                                                kRollBackTolerance<Scalar>());
}

}  // namespace vla
