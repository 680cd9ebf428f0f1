// vla/chunked.hpp — the chunked form of the recurrence (docs/maths.md §4), written once, in Eigen.
//
// A chunk of n tokens turns the per-step matrix–vector work of §2 into matrix–matrix products:
//   A part  (penalty_chunk):  α̂ for every token and the chunk's end A, from one LDLᵀ factorisation
//                              of the n×n Gram matrix Ĝ that absorbs the refreshes (§4, "A part");
//   S part  (delta_rule_chunk): the WY/UT form of the delta rule, erase keys k̂, write directions
//                              d (α̂ for VLA, k̂ for DeltaNet), step sizes β (1 for VLA) (§4, "S part").
// The CPU backend's chunked path runs these (vla/backend/cpu.hpp); the GPU tests run them in double
// to check a kernel's per-chunk α̂, A and S. Every function works on any Scalar Eigen supports and
// allocates nothing once its Workspace has been sized.
#pragma once

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <vector>

#include "vla/config.hpp"
#include "vla/detail/eigen_util.hpp"
#include "vla/detail/rules.hpp"

namespace vla {
namespace chunked {

template <class Scalar>
using RowMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// n consecutive token rows of one head in a [tokens, H, D] buffer: row stride H·D.
template <class Scalar>
using TokenRows = Eigen::Map<const RowMatrix<Scalar>, 0, Eigen::OuterStride<>>;

/// The same, writable (the output rows).
template <class Scalar>
using TokenRowsOut = Eigen::Map<RowMatrix<Scalar>, 0, Eigen::OuterStride<>>;

template <class Scalar>
TokenRows<Scalar> token_rows(const Scalar* first, Eigen::Index n, Eigen::Index d, Eigen::Index stride) {
  return TokenRows<Scalar>(first, n, d, Eigen::OuterStride<>(stride));
}

/// The config's constants in Scalar, rounded once (as the recurrent step rounds them).
template <class Scalar>
struct Constants {
  Scalar stab_eps, refresh_eps, denom_eps, inv_sqrt_dk;
  int refresh_period;
  bool normalize;
  Constants(const Config& cfg, Eigen::Index dk)
      : stab_eps(Scalar(cfg.stab_eps)), refresh_eps(Scalar(cfg.refresh_eps)), denom_eps(Scalar(cfg.denom_eps)),
        inv_sqrt_dk(Scalar(1) / std::sqrt(Scalar(dk))), refresh_period(cfg.refresh_period),
        normalize(cfg.normalize_output) {}
};

/// Scratch of one chunk of at most `chunk` tokens. Every intermediate of §4 is kept after a call,
/// for inspection: after penalty_chunk, `uhat`, `khat`, `z_rows` (the g_s), `pivots` (D), `dir`
/// (the α̂ rows) and `refreshes` (r′_t); after delta_rule_chunk, `e` and `num` (S_t q_t).
template <class Scalar>
struct Workspace {
  Matrix<Scalar> uhat, khat, dir, z_rows, gram, proj, e, num, tmp, s_start;
  Vector<Scalar> pivots, ld, beta;
  std::vector<int> before;     ///< r_t: refreshes at steps < t of the chunk
  std::vector<int> refreshes;  ///< r′_t: refreshes at steps ≤ t of the chunk
  Workspace(Eigen::Index chunk, Eigen::Index dk, Eigen::Index dv)
      : uhat(chunk, dk), khat(chunk, dk), dir(chunk, dk), z_rows(chunk, dk), gram(chunk, chunk), proj(chunk, chunk),
        e(chunk, dv), num(chunk, dv), tmp(2 * chunk, dk), s_start(dv, dk), pivots(chunk), ld(chunk), beta(chunk),
        before(static_cast<std::size_t>(chunk)), refreshes(static_cast<std::size_t>(chunk)) {}
};

/// Row t of `out` = x_t · unit_factor(x_t, extra), a zero row where x_t counts as zero (§2).
template <class Scalar, class In>
void unit_rows(const In& x, Scalar extra, Matrix<Scalar>& out) {
  const Eigen::Index n = x.rows();
  for (Eigen::Index t = 0; t < n; ++t) {
    const Scalar f = detail::unit_factor<Scalar>(x.row(t), extra);
    if (f != Scalar(0))
      out.row(t).noalias() = x.row(t) * f;
    else
      out.row(t).setZero();
  }
}

/// The A part of one chunk (docs/maths.md §4): from the SPD A at the chunk's start, whose first
/// step has 0-based index t0 (the refresh phase), and the chunk's raw u and k rows (n × dk),
/// writes ws.khat (k̂), ws.dir (α̂; zero rows where k̂ or α is zero, which write nothing) and
/// replaces A by the A after the chunk's last step. A stays exactly symmetric.
///
///   W̃ = Û A + ε diag(r) Û;  Ĝ = I + tril(Û W̃ᵀ) = L D Lᵀ;  Z = L⁻¹ W̃;
///   Alpha = K̂ A + ε diag(r′) K̂ − (tril(K̂ Zᵀ) D⁻¹) Z;  A ← A + ε r′_{n−1} I − Zᵀ D⁻¹ Z.
template <class Scalar, class URows, class KRows>
void penalty_chunk(Matrix<Scalar>& A, std::int64_t t0, const Constants<Scalar>& c, const URows& u, const KRows& k,
                   Workspace<Scalar>& ws) {
  const Eigen::Index n = u.rows();
  auto uh = ws.uhat.topRows(n);
  auto kh = ws.khat.topRows(n);
  unit_rows<Scalar>(u, c.inv_sqrt_dk, ws.uhat);
  unit_rows<Scalar>(k, Scalar(1), ws.khat);
  // r_t (before step t) and r′_t (after step t): refreshes counted from the chunk's start.
  int r = 0;
  for (Eigen::Index t = 0; t < n; ++t) {
    ws.before[static_cast<std::size_t>(t)] = r;
    r += rules::refresh_due(t0 + t, c.refresh_period) ? 1 : 0;
    ws.refreshes[static_cast<std::size_t>(t)] = r;
  }
  // [Û; K̂] A in one product (A is symmetric: row s of Û A is (A û_s)ᵀ).
  auto both = ws.tmp.topRows(2 * n);
  both.topRows(n) = uh;
  both.bottomRows(n) = kh;
  ws.tmp.topRows(2 * n) = both * A;  // aliasing-safe: Eigen evaluates the product into a temporary
  auto z = ws.z_rows.topRows(n);
  z = ws.tmp.topRows(n);  // W̃ = Û A + ε diag(r) Û
  for (Eigen::Index s = 0; s < n; ++s)
    if (const int rs = ws.before[static_cast<std::size_t>(s)]) z.row(s) += (c.refresh_eps * Scalar(rs)) * uh.row(s);
  // Ĝ's lower triangle, then L D Lᵀ in place (L strictly below the diagonal, D in pivots).
  auto g = ws.gram.topLeftCorner(n, n);
  g.noalias() = uh * z.transpose();
  for (Eigen::Index j = 0; j < n; ++j) {
    g(j, j) += Scalar(1);
    Scalar d = g(j, j);
    for (Eigen::Index m = 0; m < j; ++m) d -= g(j, m) * g(j, m) * ws.pivots[m];
    d = rules::sm_denominator<Scalar>(d, c.stab_eps);  // δ_j ≥ 1 for SPD A; the floor guards rounding
    ws.pivots[j] = d;
    if (j + 1 < n && j > 0) {
      // column j below the diagonal: (G(i, j) − Σ_m L(i, m) D_m L(j, m)) / D_j
      ws.ld.head(j) = g.row(j).head(j).transpose().cwiseProduct(ws.pivots.head(j));
      g.col(j).tail(n - j - 1).noalias() -= g.bottomLeftCorner(n - j - 1, j) * ws.ld.head(j);
    }
    if (j + 1 < n) g.col(j).tail(n - j - 1) /= d;
  }
  // Z = L⁻¹ W̃: row s is g_s = A_{s−1} û_s.
  g.template triangularView<Eigen::UnitLower>().solveInPlace(z);
  // Alpha = K̂ A + ε diag(r′) K̂ − (tril(K̂ Zᵀ) D⁻¹) Z, into dir.
  auto p = ws.proj.topLeftCorner(n, n);
  p.noalias() = kh * z.transpose();
  p = p.template triangularView<Eigen::Lower>();
  for (Eigen::Index s = 0; s < n; ++s) p.col(s) /= ws.pivots[s];
  auto alpha = ws.dir.topRows(n);
  alpha = ws.tmp.middleRows(n, n);
  for (Eigen::Index t = 0; t < n; ++t) {
    const int rt = ws.refreshes[static_cast<std::size_t>(t)];
    if (rt != 0) alpha.row(t) += (c.refresh_eps * Scalar(rt)) * kh.row(t);
  }
  alpha.noalias() -= p * z;
  // α̂ = α/‖α‖; a zero k̂ or a zero α writes nothing (a zero row).
  for (Eigen::Index t = 0; t < n; ++t) {
    const Scalar f = kh.row(t).isZero(0) ? Scalar(0) : detail::unit_factor<Scalar>(alpha.row(t));
    if (f != Scalar(0))
      alpha.row(t) *= f;
    else
      alpha.row(t).setZero();
  }
  // A ← A − Zᵀ D⁻¹ Z + ε r′ I, the product on the lower triangle only, then mirrored: exactly symmetric.
  auto y = ws.tmp.topRows(n);
  for (Eigen::Index s = 0; s < n; ++s) y.row(s) = z.row(s) / std::sqrt(ws.pivots[s]);
  A.template selfadjointView<Eigen::Lower>().rankUpdate(y.transpose(), Scalar(-1));
  A.template triangularView<Eigen::StrictlyUpper>() = A.transpose();
  if (r != 0) A.diagonal().array() += c.refresh_eps * Scalar(r);
}

/// The S part of one chunk (docs/maths.md §4), shared by VLA (erase keys k̂, write directions α̂,
/// β = 1) and DeltaNet (write directions k̂, step sizes β): with S (dv × dk) at the chunk's start,
/// erase keys `kh` and write directions `dir` (n × dk, zero rows write nothing), values v and
/// queries q (n rows), and β (n entries, or null for 1), computes
///   (I + diag(β) tril₋(K̂ Dirᵀ)) E = diag(β) (V − K̂ Sᵀ)           (ws.e: the writes e_t)
///   Num = Q Sᵀ + tril(Q Dirᵀ) E                                  (ws.num: row t is S_t q_t)
/// and then S ← S + Eᵀ Dir.
template <class Scalar, class VRows, class QRows>
void delta_rule_chunk(Matrix<Scalar>& S, const Eigen::Ref<const Matrix<Scalar>>& kh,
                      const Eigen::Ref<const Matrix<Scalar>>& dir, const VRows& v, const QRows& q, const Scalar* beta,
                      Workspace<Scalar>& ws) {
  const Eigen::Index n = v.rows();
  auto e = ws.e.topRows(n);
  auto num = ws.num.topRows(n);
  auto l = ws.gram.topLeftCorner(n, n);
  e.noalias() = v - kh * S.transpose();
  l.noalias() = kh * dir.transpose();
  if (beta)
    for (Eigen::Index t = 0; t < n; ++t) {
      e.row(t) *= beta[t];
      l.row(t) *= beta[t];
    }
  l.template triangularView<Eigen::UnitLower>().solveInPlace(e);
  auto p = ws.proj.topLeftCorner(n, n);
  p.noalias() = q * dir.transpose();
  num.noalias() = q * S.transpose();
  num.noalias() += p.template triangularView<Eigen::Lower>() * e;
  S.noalias() += e.transpose() * dir;
}

/// Row t of the output from num_t = S_t q_t (docs/maths.md §2.6): z ← z + k_t, then
/// o_t = num_t / max(zᵀq_t, ε_den) (or num_t with the normaliser off). When num_t or zᵀq_t is
/// not finite for a finite q_t (huge q), o_t is recomputed from q̃ = q_t/max|q_t| through
/// S_t q̃ = S_c q̃ + Σ_{s≤t} e_s (d_sᵀ q̃), with rules::rescaled_output, as the recurrent path does.
/// `s_start` is S at the chunk's start (S_c).
template <class Scalar, class KRows, class QRows, class ORows>
void finish_outputs(Vector<Scalar>& zsum, const Matrix<Scalar>& s_start, const Eigen::Ref<const Matrix<Scalar>>& dir,
                    const KRows& k, const QRows& q, const Constants<Scalar>& c, const Workspace<Scalar>& ws, ORows&& o) {
  const Eigen::Index n = q.rows();
  for (Eigen::Index t = 0; t < n; ++t) {
    zsum.noalias() += k.row(t).transpose();
    if (!c.normalize) {
      o.row(t) = ws.num.row(t);
      continue;
    }
    const Scalar zq = q.row(t).dot(zsum);
    if (std::isfinite(zq) && ws.num.row(t).allFinite()) {
      o.row(t) = ws.num.row(t) / rules::output_denominator<Scalar>(zq, c.denom_eps);
      continue;
    }
    const Scalar m = q.row(t).cwiseAbs().maxCoeff();
    const Vector<Scalar> qs = q.row(t).transpose() / m;
    const Scalar zqs = zsum.dot(qs);
    const Vector<Scalar> sqs =
        s_start * qs + ws.e.topRows(t + 1).transpose() * (dir.topRows(t + 1) * qs);
    o.row(t) = sqs.unaryExpr([&](Scalar x) { return rules::rescaled_output<Scalar>(x, zqs, m, c.denom_eps); }).transpose();
  }
}

/// One VLA head over n tokens as one chunk (docs/maths.md §4 in §2's order): (A, S, z, steps) is
/// updated in place; q, k, u are n × dk rows, v and o n × dv rows (n ≤ the workspace's chunk).
template <class Scalar, class QRows, class KRows, class VRows, class URows, class ORows>
void vla_chunk(Matrix<Scalar>& A, Matrix<Scalar>& S, Vector<Scalar>& z, std::int64_t& steps,
               const Constants<Scalar>& c, const QRows& q, const KRows& k, const VRows& v, const URows& u,
               Workspace<Scalar>& ws, ORows&& o) {
  const Eigen::Index n = q.rows();
  penalty_chunk(A, steps, c, u, k, ws);
  ws.s_start = S;  // S_c, read only by the rare huge-q rows (dv·dk copies per chunk)
  delta_rule_chunk<Scalar>(S, ws.khat.topRows(n), ws.dir.topRows(n), v, q, nullptr, ws);
  finish_outputs<Scalar>(z, ws.s_start, ws.dir.topRows(n), k, q, c, ws, o);
  steps += n;
}

}  // namespace chunked
}  // namespace vla
