// vla/time_split.hpp — one sequence split over time into spans that run in parallel, and the
// summaries that join them (docs/maths.md §4b; their accuracy: docs/experiments.md §5). Written once, on the host, in any Scalar Eigen
// supports; the GPU time split and context parallelism (several GPUs) are tested against it.
//
// A span of steps changes the state (A, S, z, t) in three ways that can be summarised without
// running the span from its true start:
//   z  by a sum:                       z_end = z_start + Σ k_t                        (KeySum)
//   A  by a linear-fractional map:     A_end = X Y⁻¹, [X; Y] = M [A_start; I]         (PenaltyTransfer)
//   S  affinely, once A_start is known: S_end = S_start·P + Q                          (MemoryTransfer)
// and t by the span's length. split_forward runs the five passes: A and z summaries of every span
// (parallel), the span starts of A and z (serial, one small solve per span), S summaries (parallel),
// the span starts of S (serial), and the rerun of every span from its start (parallel).
#pragma once

#include <Eigen/Core>
#include <Eigen/LU>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "vla/backend/cpu.hpp"  // detail::parallel_ranges
#include "vla/chunked.hpp"      // chunked::unit_rows, the same û as every other path
#include "vla/config.hpp"
#include "vla/detail/eigen_util.hpp"
#include "vla/detail/rules.hpp"
#include "vla/state.hpp"

namespace vla {

/// What a span does to A, whatever A was at its start (docs/maths.md §4b): the 2dk×2dk matrix
/// M = (product, later steps on the left) of [[I, 0], [ûûᵀ, I]] for each Sherman–Morrison step
/// and [[I, εI], [0, I]] for each refresh, kept scaled to max |M_ij| = 1 (A_end = X Y⁻¹ does not
/// see the scale). Exact while the δ floor does not bind, which it never does from an SPD A.
template <class Scalar>
struct PenaltyTransfer {
  Matrix<Scalar> M;        ///< 2dk × 2dk, blocks [[M_tl, M_tr], [M_bl, M_br]]
  Vector<Scalar> key_sum;  ///< Σ k_t over the span: z_end = z_start + key_sum
  std::int64_t steps = 0;  ///< the span's length: t_end = t_start + steps

  /// The identity transfer of an empty span.
  static PenaltyTransfer identity(Eigen::Index dk) {
    return {Matrix<Scalar>::Identity(2 * dk, 2 * dk), Vector<Scalar>::Zero(dk), 0};
  }
  Eigen::Index dk() const { return key_sum.size(); }
};

/// What a span does to S once its A_start is known: S_end = S_start·P + Q, P = Π (I − k̂ α̂ᵀ) in
/// step order (dk × dk), Q the span's S from S_start = 0 (dv × dk). Also A at the span's end as
/// the span's own steps computed it, which the driver compares with the PenaltyTransfer's.
template <class Scalar>
struct MemoryTransfer {
  Matrix<Scalar> P, Q, A_end;
};

namespace split_detail {

inline void bad(const std::string& what) { throw std::invalid_argument("vla::split_forward: " + what); }

template <class Scalar>
void rescale(Matrix<Scalar>& M) {
  const Scalar m = M.cwiseAbs().maxCoeff();
  if (m > Scalar(0) && std::isfinite(m)) M /= m;
}

}  // namespace split_detail

/// The PenaltyTransfer of the n steps whose raw rows are u and k (n × dk), the first of which has
/// 0-based index t0 (the refresh phase). Sherman–Morrison steps between two refreshes multiply
/// into one block [[I, 0], [B, I]], B = Σ ûûᵀ, applied as M_bot += Ûᵀ(Û M_top) in blocks of at
/// most 64 rows: 8·dk² flops per step; a refresh is M_top += ε M_bot.
template <class Scalar, class URows, class KRows>
PenaltyTransfer<Scalar> penalty_transfer(const Config& cfg, std::int64_t t0, const URows& u, const KRows& k) {
  const Eigen::Index n = u.rows(), dk = u.cols();
  PenaltyTransfer<Scalar> tr = PenaltyTransfer<Scalar>::identity(dk);
  tr.steps = n;
  if (n == 0) return tr;
  tr.key_sum = k.colwise().sum().transpose();
  const chunked::Constants<Scalar> c(cfg, dk);
  constexpr Eigen::Index kBlock = 64;
  Matrix<Scalar> uh(std::min<Eigen::Index>(n, kBlock), dk), proj(uh.rows(), 2 * dk);
  auto top = tr.M.topRows(dk);
  auto bot = tr.M.bottomRows(dk);
  for (Eigen::Index first = 0; first < n;) {
    // The next block ends at a refresh step (inclusive), at kBlock rows, or at the span's end.
    Eigen::Index last = first;
    while (last + 1 < n && last + 1 - first < kBlock && !rules::refresh_due(t0 + last, c.refresh_period)) ++last;
    const Eigen::Index m = last - first + 1;
    chunked::unit_rows<Scalar>(u.middleRows(first, m), c.inv_sqrt_dk, uh);  // zero û: a zero row, no update
    proj.topRows(m).noalias() = uh.topRows(m) * top;
    bot.noalias() += uh.topRows(m).transpose() * proj.topRows(m);
    if (rules::refresh_due(t0 + last, c.refresh_period)) top += c.refresh_eps * bot;
    split_detail::rescale(tr.M);
    first = last + 1;
  }
  return tr;
}

/// A at the end of a span from A at its start: X Y⁻¹ with [X; Y] = M [A_start; I], solved by LU
/// with partial pivoting, then symmetrised (the exact result is symmetric).
template <class Scalar>
Matrix<Scalar> apply_transfer(const PenaltyTransfer<Scalar>& tr, const Matrix<Scalar>& A_start) {
  const Eigen::Index d = tr.dk();
  if (tr.steps == 0) return A_start;
  const Matrix<Scalar> X = tr.M.topLeftCorner(d, d) * A_start + tr.M.topRightCorner(d, d);
  const Matrix<Scalar> Y = tr.M.bottomLeftCorner(d, d) * A_start + tr.M.bottomRightCorner(d, d);
  // A Y = X  ⇔  Yᵀ Aᵀ = Xᵀ.
  const Matrix<Scalar> At = Y.transpose().partialPivLu().solve(X.transpose());
  return (At + At.transpose()) * Scalar(0.5);
}

/// The transfer of `first` followed by `second` (their spans adjacent, `first` earlier):
/// M = M_second · M_first, rescaled. Only for short stretches: a product over many thousand steps
/// loses the directions A still needs to rounding (docs/maths.md §4b, measured: the product of a
/// 32,768-step stream with u = k is O(1) wrong in float32, 1e-6 in float64). To join many spans,
/// apply their summaries one after another with apply_transfer, as split_forward does.
template <class Scalar>
PenaltyTransfer<Scalar> compose(const PenaltyTransfer<Scalar>& first, const PenaltyTransfer<Scalar>& second) {
  PenaltyTransfer<Scalar> r;
  r.M.noalias() = second.M * first.M;
  split_detail::rescale(r.M);
  r.key_sum = first.key_sum + second.key_sum;
  r.steps = first.steps + second.steps;
  return r;
}

/// The MemoryTransfer of a span from its true A_start (phase t0): the span's own steps, run by
/// VlaState::step on an augmented memory of dv + dk rows that starts at [0; I] and is fed the
/// values [v_t; 0]. Rows of S evolve independently (s ← s (I − k̂α̂ᵀ) + v_i α̂ᵀ), so the first dv
/// rows end as Q and the last dk as P, with no second implementation of the step.
template <class Scalar, class KRows, class VRows, class URows>
MemoryTransfer<Scalar> memory_transfer(const Config& cfg, const Matrix<Scalar>& A_start, std::int64_t t0,
                                       const KRows& k, const VRows& v, const URows& u) {
  const Eigen::Index n = k.rows(), dk = k.cols(), dv = v.cols();
  VlaSnapshot<Scalar> snap;
  snap.A = A_start;
  snap.S = Matrix<Scalar>::Zero(dv + dk, dk);
  snap.S.bottomRows(dk).setIdentity();
  snap.z = Vector<Scalar>::Zero(dk);
  snap.steps = t0;
  VlaState<Scalar> st(snap, cfg, /*check_positive_definite=*/false);
  Vector<Scalar> vv = Vector<Scalar>::Zero(dv + dk), o(dv + dk);
  const Vector<Scalar> q = Vector<Scalar>::Zero(dk);  // the output is not needed (zero q: no work)
  for (Eigen::Index t = 0; t < n; ++t) {
    vv.head(dv) = v.row(t).transpose();
    st.step_unchecked(q, k.row(t).transpose(), vv, u.row(t).transpose(), o);
  }
  return {st.S().bottomRows(dk), st.S().topRows(dv), st.A()};
}

/// How split_forward divides a sequence and how many threads run the spans.
struct SplitOptions {
  int spans = 2;    ///< spans (simulated ranks); span r holds tokens [r·T/spans, (r+1)·T/spans)
  int threads = 1;  ///< worker threads over spans; 0 = all hardware threads
};

/// What the split cost in accuracy, measured on the way (no extra passes).
struct SplitStats {
  /// max over spans of ‖A_end(transfer) − A_end(span's own steps)‖_F / ‖A_end(own steps)‖_F:
  /// how far the linear-fractional summary drifts from the steps it summarises.
  double max_transfer_mismatch = 0;
  std::vector<std::int64_t> span_first;  ///< first token of each span
};

/// One head's forward over T tokens (rows of q, k, u: T × dk; v, o: T × dv) from `initial`, split
/// into opt.spans spans run in parallel; returns the final state. Equal, within rounding, to
/// VlaState stepped through all T tokens from `initial` (tests/test_time_split.cpp measures how
/// equal). Validates sizes, finiteness, the config and the initial state (A symmetric positive
/// definite) before any work; o is written only when everything has succeeded up to the rerun.
template <class Scalar, class QRows, class KRows, class VRows, class URows, class ORows>
VlaSnapshot<Scalar> split_forward(const Config& cfg, const VlaSnapshot<Scalar>& initial, const QRows& q, const KRows& k,
                                  const VRows& v, const URows& u, ORows&& o, const SplitOptions& opt = {},
                                  SplitStats* stats = nullptr) {
  const VlaState<Scalar> start(initial, cfg);  // validates the config and the state (SPD A)
  const Eigen::Index dk = start.dk(), dv = start.dv(), T = q.rows();
  if (opt.spans < 1) split_detail::bad("SplitOptions::spans must be >= 1");
  if (opt.threads < 0) split_detail::bad("SplitOptions::threads must be >= 0");
  auto check = [&](const auto& x, Eigen::Index cols, const char* what) {
    if (x.rows() != T || x.cols() != cols)
      split_detail::bad(std::string(what) + " must be " + std::to_string(T) + " × " + std::to_string(cols));
    if (!x.allFinite()) split_detail::bad(std::string(what) + " has a non-finite entry");
  };
  check(q, dk, "q");
  check(k, dk, "k");
  check(u, dk, "u");
  check(v, dv, "v");
  if (o.rows() != T || o.cols() != dv) split_detail::bad("o must be " + std::to_string(T) + " × " + std::to_string(dv));

  const int R = opt.spans;
  std::vector<Eigen::Index> first(R + 1);
  for (int r = 0; r <= R; ++r) first[r] = static_cast<Eigen::Index>(static_cast<std::int64_t>(T) * r / R);
  auto len = [&](int r) { return first[r + 1] - first[r]; };

  // Pass 1 (parallel): what each span does to A and z, from any start.
  std::vector<PenaltyTransfer<Scalar>> pen(R);
  detail::parallel_ranges(R, opt.threads, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t r = b; r < e; ++r)
      pen[r] = penalty_transfer<Scalar>(cfg, initial.steps + first[r], u.middleRows(first[r], len(r)),
                                        k.middleRows(first[r], len(r)));
  });
  // Pass 2 (serial): every span's starting A, z and phase.
  std::vector<VlaSnapshot<Scalar>> st(R + 1);
  st[0] = initial;
  for (int r = 0; r < R; ++r) {
    st[r + 1].A = apply_transfer(pen[r], st[r].A);
    st[r + 1].z = st[r].z + pen[r].key_sum;
    st[r + 1].steps = st[r].steps + pen[r].steps;
  }
  // Pass 3 (parallel): what each span does to S, from its true A_start.
  std::vector<MemoryTransfer<Scalar>> mem(R);
  detail::parallel_ranges(R, opt.threads, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t r = b; r < e; ++r)
      mem[r] = memory_transfer<Scalar>(cfg, st[r].A, st[r].steps, k.middleRows(first[r], len(r)),
                                       v.middleRows(first[r], len(r)), u.middleRows(first[r], len(r)));
  });
  // Pass 4 (serial): every span's starting S.
  st[0].S = initial.S;
  for (int r = 0; r < R; ++r) st[r + 1].S = st[r].S * mem[r].P + mem[r].Q;
  if (stats) {
    stats->max_transfer_mismatch = 0;
    for (int r = 0; r < R; ++r) {
      const double ref = double(mem[r].A_end.norm());
      if (len(r) > 0 && ref > 0)
        stats->max_transfer_mismatch =
            std::max(stats->max_transfer_mismatch, double((st[r + 1].A - mem[r].A_end).norm()) / ref);
    }
    stats->span_first.assign(first.begin(), first.end() - 1);
  }
  // Pass 5 (parallel): every span rerun from its start by the recurrence itself; the last span's
  // end is the final state.
  std::vector<VlaSnapshot<Scalar>> end(R);
  detail::parallel_ranges(R, opt.threads, [&](std::int64_t b, std::int64_t e) {
    Vector<Scalar> out(dv);
    for (std::int64_t r = b; r < e; ++r) {
      VlaState<Scalar> s(st[r], cfg, /*check_positive_definite=*/false);
      for (Eigen::Index t = first[r]; t < first[r + 1]; ++t) {
        s.step_unchecked(q.row(t).transpose(), k.row(t).transpose(), v.row(t).transpose(), u.row(t).transpose(), out);
        o.row(t) = out.transpose();
      }
      end[r] = s.save();
    }
  });
  return end[R - 1];
}

}  // namespace vla
