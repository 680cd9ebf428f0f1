// vla/rows.hpp — the batched CPU forward from Eigen matrices with one row per token, and state
// buffers that allocate and initialise themselves. For C++ models that hold activations in Eigen.
//
//   vla::TokenRows<float> q = x * Wq, k = ..., v = ..., u = ...;   // [T, H·dk] / [T, H·dv], row per token
//   vla::HostStates<float> cache(/*sequences*/ 1, H, dk, dv, cfg);  // fresh: A = I/λ0, S = 0, z = 0
//   vla::TokenRows<float> o(T, H * dv);
//   vla::forward_rows(q, k, v, u, o, H, cfg, &cache);               // continues from, and updates, cache
//
// The layout cannot be got wrong: inputs are any Eigen expression (a column-major matrix or a block
// of a larger one is copied into the row-per-token layout; a row-major matrix with contiguous rows
// is read in place), the output must be a row-major matrix, and every extent is checked against
// the others before anything is written (docs/maths.md §2 for what is computed).
#pragma once

#include <Eigen/Core>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "vla/backend/cpu.hpp"
#include "vla/config.hpp"
#include "vla/layout.hpp"
#include "vla/state.hpp"

namespace vla {

/// Tokens as rows: row t holds token t of every head side by side ([T, H·d]), which is the layout
/// of ForwardArgs ([B = 1, T, H, d]) and what a projection x·W of row-per-token activations gives.
template <class Scalar>
using TokenRows = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// The recurrent state of N sequences × H heads in the layout of vla/layout.hpp, owned and
/// initialised fresh (docs/maths.md §2: A = I/λ0, S = 0, z = 0, steps = 0). Pass buffers() as both
/// initial_state and final_state of a forward to continue the sequences in place (decode, chunked
/// prefill); forward_rows does this itself.
template <class Scalar>
class HostStates {
 public:
  HostStates(std::int64_t sequences, std::int64_t heads, std::int64_t dk, std::int64_t dv, const Config& cfg = {})
      : n_(sequences), h_(heads), dk_(dk), dv_(dv), lambda0_(cfg.lambda0) {
    cfg.validate_for<Scalar>();
    if (sequences < 0 || heads <= 0 || dk <= 0 || dv <= 0)
      throw std::invalid_argument("vla::HostStates: sequences must be >= 0 and heads, dk, dv > 0");
    const auto count = static_cast<std::size_t>(sequences * heads);
    A_.resize(count * static_cast<std::size_t>(dk * dk));
    S_.resize(count * static_cast<std::size_t>(dv * dk));
    z_.resize(count * static_cast<std::size_t>(dk));
    steps_.resize(count);
    for (std::int64_t n = 0; n < sequences; ++n)
      for (std::int64_t h = 0; h < heads; ++h) reset(n, h);
  }

  std::int64_t sequences() const { return n_; }
  std::int64_t heads() const { return h_; }
  std::int64_t dk() const { return dk_; }
  std::int64_t dv() const { return dv_; }

  StateBuffers<Scalar> buffers() { return {A_.data(), S_.data(), z_.data(), steps_.data()}; }
  StateBuffers<const Scalar> cbuffers() const { return {A_.data(), S_.data(), z_.data(), steps_.data()}; }

  /// Sequence n, head h back to the fresh state.
  void reset(std::int64_t n, std::int64_t h) {
    const std::int64_t p = index(n, h);
    Eigen::Map<Matrix<Scalar>>(A_.data() + p * dk_ * dk_, dk_, dk_) =
        Matrix<Scalar>::Identity(dk_, dk_) / static_cast<Scalar>(lambda0_);
    Eigen::Map<Matrix<Scalar>>(S_.data() + p * dv_ * dk_, dv_, dk_).setZero();
    Eigen::Map<Vector<Scalar>>(z_.data() + p * dk_, dk_).setZero();
    steps_[static_cast<std::size_t>(p)] = 0;
  }
  /// A copy of sequence n, head h (save it to roll a sequence back later).
  VlaSnapshot<Scalar> get(std::int64_t n, std::int64_t h) const {
    const std::int64_t p = index(n, h);
    using RowMap = Eigen::Map<const TokenRows<Scalar>>;
    return {RowMap(A_.data() + p * dk_ * dk_, dk_, dk_), RowMap(S_.data() + p * dv_ * dk_, dv_, dk_),
            Eigen::Map<const Vector<Scalar>>(z_.data() + p * dk_, dk_), steps_[static_cast<std::size_t>(p)]};
  }
  /// Sequence n, head h from a snapshot, validated first (A symmetric positive definite, sizes,
  /// finite): a throw leaves the states as they were.
  void set(std::int64_t n, std::int64_t h, const VlaSnapshot<Scalar>& s) {
    const std::int64_t p = index(n, h);
    if (s.A.rows() != dk_ || s.S.rows() != dv_ || s.S.cols() != dk_ || s.z.size() != dk_)
      throw std::invalid_argument("vla::HostStates::set: the snapshot's sizes do not match dk, dv");
    PenaltyInverse<Scalar>::check_spd(s.A);
    detail::require_finite(s.S, "S");
    detail::require_finite(s.z, "z");
    if (s.steps < 0) throw std::invalid_argument("vla::HostStates::set: steps must be >= 0");
    using RowMap = Eigen::Map<TokenRows<Scalar>>;
    RowMap(A_.data() + p * dk_ * dk_, dk_, dk_) = s.A;
    RowMap(S_.data() + p * dv_ * dk_, dv_, dk_) = s.S;
    Eigen::Map<Vector<Scalar>>(z_.data() + p * dk_, dk_) = s.z;
    steps_[static_cast<std::size_t>(p)] = s.steps;
  }

 private:
  std::int64_t index(std::int64_t n, std::int64_t h) const {
    if (n < 0 || n >= n_ || h < 0 || h >= h_)
      throw std::invalid_argument("vla::HostStates: sequence " + std::to_string(n) + ", head " + std::to_string(h) +
                                  " is out of range (" + std::to_string(n_) + " × " + std::to_string(h_) + ")");
    return n * h_ + h;
  }
  std::int64_t n_, h_, dk_, dv_;
  double lambda0_;
  std::vector<Scalar> A_, S_, z_;
  std::vector<std::int64_t> steps_;
};

namespace detail {

/// The rows of x in the forward's layout: x itself when its rows are contiguous, else a copy.
template <class Scalar>
const Scalar* contiguous_rows(const Eigen::Ref<const TokenRows<Scalar>>& x, TokenRows<Scalar>& copy) {
  if (x.size() == 0 || x.outerStride() == x.cols()) return x.data();
  copy = x;
  return copy.data();
}

}  // namespace detail

namespace detail {
template <class Op, class Scalar>
void forward_rows_impl(const Eigen::Ref<const TokenRows<Scalar>>& q, const Eigen::Ref<const TokenRows<Scalar>>& k,
                       const Eigen::Ref<const TokenRows<Scalar>>& v, const Eigen::Ref<const TokenRows<Scalar>>& u,
                       Eigen::Ref<TokenRows<Scalar>> o, std::int64_t heads, const Config& cfg, HostStates<Scalar>* state,
                       const CpuOptions& opt, const std::vector<std::int64_t>& cu_seqlens) {  static_assert(!Op::uses_beta, "vla::forward_rows: DeltaNet needs beta; use vla::forward with ForwardArgs");
  auto fail = [](const std::string& what) { detail::bad_arg(what, Op::name); };
  if (heads <= 0) fail("heads must be > 0");
  const std::int64_t T = q.rows();
  if (q.cols() % heads != 0) fail("q has " + std::to_string(q.cols()) + " columns, not a multiple of heads = " +
                                  std::to_string(heads));
  if (v.cols() % heads != 0) fail("v has " + std::to_string(v.cols()) + " columns, not a multiple of heads = " +
                                  std::to_string(heads));
  const std::int64_t dk = q.cols() / heads, dv = v.cols() / heads;
  auto same = [&](const auto& x, const char* name, std::int64_t cols) {
    if (x.rows() != T || x.cols() != cols)
      fail(std::string(name) + " is " + std::to_string(x.rows()) + " × " + std::to_string(x.cols()) + ", expected " +
           std::to_string(T) + " × " + std::to_string(cols) + " (rows: tokens, like q)");
  };
  same(k, "k", heads * dk);
  same(v, "v", heads * dv);
  same(o, "o", heads * dv);
  if (Op::uses_u || u.size() != 0) same(u, "u", heads * dk);
  const std::int64_t sequences = cu_seqlens.empty() ? 1 : static_cast<std::int64_t>(cu_seqlens.size()) - 1;
  if (!cu_seqlens.empty() && (sequences < 1 || cu_seqlens.back() != T))
    fail("cu_seqlens must have N + 1 >= 2 entries ending at the number of rows (" + std::to_string(T) + ")");
  if (state && (state->sequences() != sequences || state->heads() != heads || state->dk() != dk || state->dv() != dv))
    fail("state holds " + std::to_string(state->sequences()) + " sequences × " + std::to_string(state->heads()) +
         " heads of (dk, dv) = (" + std::to_string(state->dk()) + ", " + std::to_string(state->dv()) + "), the tokens need " +
         std::to_string(sequences) + " × " + std::to_string(heads) + " of (" + std::to_string(dk) + ", " +
         std::to_string(dv) + ")");

  TokenRows<Scalar> cq, ck, cv, cu, co;
  ForwardArgs<Scalar> a;
  a.batch = sequences, a.seq_len = T, a.heads = heads, a.dk = dk, a.dv = dv;
  a.cu_seqlens = cu_seqlens.empty() ? nullptr : cu_seqlens.data();
  Scalar dummy[1] = {Scalar(0)};  // non-null pointers for zero tokens
  auto nonnull = [&](const Scalar* p) { return p ? p : dummy; };
  a.q = nonnull(detail::contiguous_rows<Scalar>(q, cq));
  a.k = nonnull(detail::contiguous_rows<Scalar>(k, ck));
  a.v = nonnull(detail::contiguous_rows<Scalar>(v, cv));
  a.u = u.size() ? detail::contiguous_rows<Scalar>(u, cu) : (Op::uses_u ? dummy : nullptr);
  const bool direct = o.size() == 0 || o.outerStride() == o.cols();
  if (!direct) co.resize(o.rows(), o.cols());
  a.o = direct ? (o.size() ? o.data() : dummy) : co.data();
  if (state) {
    a.initial_state = state->cbuffers();
    a.final_state = state->buffers();
  }
  forward<backend::Cpu, Op>(a, cfg, opt);
  if (!direct) o = co;
}

}  // namespace detail

/// The CPU forward of op `Op` over row-per-token Eigen matrices: q, k (feature-mapped) and u with
/// H·dk columns, v and o with H·dv columns, one row per token. Inputs are any Eigen expressions
/// (copied into the row-per-token layout when theirs differs); o must be a row-major matrix or a
/// block of one (a column-major o does not compile). The tokens are one sequence, or the sequences
/// cut by `cu_seqlens` (N + 1 offsets into the rows). With `state` (N sequences × H heads) the
/// forward starts from it and writes the final state back into it; without, it starts fresh and
/// keeps no state. u may be empty for linear attention (DeltaNet needs β: use ForwardArgs). Throws
/// std::invalid_argument naming the mismatch before anything is written.
template <class Op = op::Vla, class Q, class K, class V, class U, class O>
void forward_rows(const Eigen::MatrixBase<Q>& q, const Eigen::MatrixBase<K>& k, const Eigen::MatrixBase<V>& v,
                  const Eigen::MatrixBase<U>& u, O&& o, std::int64_t heads, const Config& cfg,
                  HostStates<typename Q::Scalar>* state = nullptr, const CpuOptions& opt = {},
                  const std::vector<std::int64_t>& cu_seqlens = {}) {
  using Scalar = typename Q::Scalar;
  detail::forward_rows_impl<Op, Scalar>(q, k, v, u, Eigen::Ref<TokenRows<Scalar>>(o), heads, cfg, state, opt,
                                        cu_seqlens);
}

}  // namespace vla
