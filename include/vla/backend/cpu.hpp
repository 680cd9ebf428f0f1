// vla/backend/cpu.hpp — the Eigen CPU backend: BackendTraits<backend::Cpu>.
//
// It maps the [tokens, H, D] buffers with Eigen::Map, runs each (sequence, head) through the
// op's single-head state class (the one source of the maths), and spreads the independent
// (sequence, head) pairs over threads. Results do not depend on the thread count: each pair is
// computed by one thread, in order.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "vla/backend/backend.hpp"
#include "vla/backward.hpp"
#include "vla/baselines.hpp"
#include "vla/chunked.hpp"
#include "vla/state.hpp"

namespace vla {

/// Execution options of the CPU backend.
struct CpuOptions {
  int threads = 1;  ///< worker threads over (sequence, head) pairs; 0 = all hardware threads
  /// Verify that every initial A is positive definite (a Cholesky factorisation per head, O(dk³)).
  /// Finiteness, symmetry and a positive diagonal are always checked. A decode loop feeding back
  /// states that vla itself produced may turn this off: the factorisation costs more than a step.
  bool check_positive_definite = true;
  /// Recurrent (§2 token by token) or chunked (§4; VLA and DeltaNet). `automatic` takes the chunked
  /// path for sequences of at least kChunkedFrom tokens; on the CPUs measured so far the chunked
  /// path was slower at every shape, so that is never in effect (bench/RESULTS.md).
  Path path = Path::automatic;
  /// Tokens per chunk of the chunked path; 0 = the default (kDefaultChunk).
  int chunk = 0;

  static constexpr int kDefaultChunk = 64;
  /// Never, in effect: chunked measured 0.27–0.63× recurrent at every dk, B·H, T (bench/RESULTS.md, 2026-12-01).
  static constexpr std::int64_t kChunkedFrom = std::int64_t(1) << 62;
};

namespace detail {

template <class Scalar>
using CMap = Eigen::Map<const Vector<Scalar>>;
template <class Scalar>
using MMap = Eigen::Map<Vector<Scalar>>;
template <class Scalar>
using CRowMat = Eigen::Map<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
template <class Scalar>
using RowMat = Eigen::Map<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;

/// How the CPU backend loads, steps and stores each op's single-head state.
template <class Op, class Scalar>
struct CpuOp;

template <class Scalar>
struct CpuOp<op::Vla, Scalar> {
  using State = VlaState<Scalar>;
  static State make(const ForwardArgs<Scalar>& a, const Config& cfg, const CpuOptions& opt, std::int64_t p) {
    const auto& s = a.initial_state;
    if (!s.S) return State(a.dk, a.dv, cfg);
    VlaSnapshot<Scalar> snap{CRowMat<Scalar>(s.A + p * a.dk * a.dk, a.dk, a.dk),
                             CRowMat<Scalar>(s.S + p * a.dv * a.dk, a.dv, a.dk), CMap<Scalar>(s.z + p * a.dk, a.dk),
                             s.steps[p]};
    return State(snap, cfg, opt.check_positive_definite);
  }
  static void store(const State& st, const ForwardArgs<Scalar>& a, std::int64_t p) {
    store_parts(st.A(), st.S(), st.z(), st.steps(), a, p);
  }
  static void store_parts(const Matrix<Scalar>& A, const Matrix<Scalar>& S, const Vector<Scalar>& z,
                          std::int64_t steps, const ForwardArgs<Scalar>& a, std::int64_t p) {
    const auto& s = a.final_state;
    RowMat<Scalar>(s.A + p * a.dk * a.dk, a.dk, a.dk) = A;
    RowMat<Scalar>(s.S + p * a.dv * a.dk, a.dv, a.dk) = S;
    MMap<Scalar>(s.z + p * a.dk, a.dk) = z;
    s.steps[p] = steps;
  }
  /// Sequence tokens [first, first + len) of head h in chunks (docs/maths.md §4); stores the final
  /// state when asked.
  static void run_chunked(const State& st, const ForwardArgs<Scalar>& a, std::int64_t p, TokenSpan span,
                          std::int64_t chunk, chunked::Workspace<Scalar>& ws, const chunked::Constants<Scalar>& c) {
    VlaSnapshot<Scalar> x = st.save();
    const std::int64_t h = p % a.heads, ldk = a.heads * a.dk, ldv = a.heads * a.dv;
    for (std::int64_t t0 = 0; t0 < span.length; t0 += chunk) {
      const std::int64_t n = std::min(chunk, span.length - t0), tok = span.first + t0;
      const std::int64_t xk = (tok * a.heads + h) * a.dk, xv = (tok * a.heads + h) * a.dv;
      chunked::vla_chunk(x.A, x.S, x.z, x.steps, c, chunked::token_rows(a.q + xk, n, a.dk, ldk),
                         chunked::token_rows(a.k + xk, n, a.dk, ldk), chunked::token_rows(a.v + xv, n, a.dv, ldv),
                         chunked::token_rows(a.u + xk, n, a.dk, ldk), ws,
                         chunked::TokenRowsOut<Scalar>(a.o + xv, n, a.dv, Eigen::OuterStride<>(ldv)));
    }
    if (a.final_state.S) store_parts(x.A, x.S, x.z, x.steps, a, p);
  }
  template <class Out>
  static void step(State& st, const ForwardArgs<Scalar>& a, std::int64_t tok, std::int64_t h, Out&& o) {
    const std::int64_t xk = (tok * a.heads + h) * a.dk, xv = (tok * a.heads + h) * a.dv;
    st.step_unchecked(CMap<Scalar>(a.q + xk, a.dk), CMap<Scalar>(a.k + xk, a.dk), CMap<Scalar>(a.v + xv, a.dv),
                      CMap<Scalar>(a.u + xk, a.dk), o);
  }
};

template <class Scalar>
struct CpuOp<op::LinearAttention, Scalar> {
  using State = LinearAttentionState<Scalar>;
  static State make(const ForwardArgs<Scalar>& a, const Config& cfg, const CpuOptions&, std::int64_t p) {
    const auto& s = a.initial_state;
    if (!s.S) return State(a.dk, a.dv, cfg);
    return State(CRowMat<Scalar>(s.S + p * a.dv * a.dk, a.dv, a.dk), CMap<Scalar>(s.z + p * a.dk, a.dk), cfg);
  }
  static void store(const State& st, const ForwardArgs<Scalar>& a, std::int64_t p) {
    RowMat<Scalar>(a.final_state.S + p * a.dv * a.dk, a.dv, a.dk) = st.S();
    MMap<Scalar>(a.final_state.z + p * a.dk, a.dk) = st.z();
  }
  template <class Out>
  static void step(State& st, const ForwardArgs<Scalar>& a, std::int64_t tok, std::int64_t h, Out&& o) {
    const std::int64_t xk = (tok * a.heads + h) * a.dk, xv = (tok * a.heads + h) * a.dv;
    st.step_unchecked(CMap<Scalar>(a.q + xk, a.dk), CMap<Scalar>(a.k + xk, a.dk), CMap<Scalar>(a.v + xv, a.dv), o);
  }
};

template <class Scalar>
struct CpuOp<op::DeltaNet, Scalar> {
  using State = DeltaNetState<Scalar>;
  static State make(const ForwardArgs<Scalar>& a, const Config&, const CpuOptions&, std::int64_t p) {
    const auto& s = a.initial_state;
    if (!s.S) return State(a.dk, a.dv);
    return State(Matrix<Scalar>(CRowMat<Scalar>(s.S + p * a.dv * a.dk, a.dv, a.dk)));
  }
  static void store(const State& st, const ForwardArgs<Scalar>& a, std::int64_t p) {
    RowMat<Scalar>(a.final_state.S + p * a.dv * a.dk, a.dv, a.dk) = st.S();
  }
  /// The chunked delta rule (docs/maths.md §4, S part, write directions k̂ and step sizes β).
  static void run_chunked(const State& st, const ForwardArgs<Scalar>& a, std::int64_t p, TokenSpan span,
                          std::int64_t chunk, chunked::Workspace<Scalar>& ws, const chunked::Constants<Scalar>&) {
    Matrix<Scalar> S = st.S();
    const std::int64_t h = p % a.heads, ldk = a.heads * a.dk, ldv = a.heads * a.dv;
    for (std::int64_t t0 = 0; t0 < span.length; t0 += chunk) {
      const std::int64_t n = std::min(chunk, span.length - t0), tok = span.first + t0;
      const std::int64_t xk = (tok * a.heads + h) * a.dk, xv = (tok * a.heads + h) * a.dv;
      chunked::unit_rows<Scalar>(chunked::token_rows(a.k + xk, n, a.dk, ldk), Scalar(1), ws.khat);
      for (std::int64_t t = 0; t < n; ++t) ws.beta[t] = a.beta[(tok + t) * a.heads + h];
      chunked::delta_rule_chunk<Scalar>(S, ws.khat.topRows(n), ws.khat.topRows(n),
                                        chunked::token_rows(a.v + xv, n, a.dv, ldv),
                                        chunked::token_rows(a.q + xk, n, a.dk, ldk), ws.beta.data(), ws);
      chunked::TokenRowsOut<Scalar>(a.o + xv, n, a.dv, Eigen::OuterStride<>(ldv)) = ws.num.topRows(n);
    }
    if (a.final_state.S) RowMat<Scalar>(a.final_state.S + p * a.dv * a.dk, a.dv, a.dk) = S;
  }
  template <class Out>
  static void step(State& st, const ForwardArgs<Scalar>& a, std::int64_t tok, std::int64_t h, Out&& o) {
    const std::int64_t xk = (tok * a.heads + h) * a.dk, xv = (tok * a.heads + h) * a.dv;
    st.step_unchecked(CMap<Scalar>(a.q + xk, a.dk), CMap<Scalar>(a.k + xk, a.dk), CMap<Scalar>(a.v + xv, a.dv),
                      a.beta[tok * a.heads + h], o);
  }
};

/// Throws if any of p[0, n) (a [tokens, H, d] buffer) is NaN or ±inf, naming the first one by
/// (token, head, element). A value is non-finite exactly when its exponent bits
/// are all ones; OR-ing that test over a block is an integer reduction, which the compiler
/// vectorises (a floating-point one it may not reorder). A flagged block is searched for the message.
template <class Scalar>
void require_finite_buffer(const Scalar* p, std::int64_t n, std::int64_t heads, std::int64_t d, const char* what) {
  using Bits = std::conditional_t<sizeof(Scalar) == 4, std::uint32_t, std::uint64_t>;
  constexpr Bits exp_mask = sizeof(Scalar) == 4 ? Bits(0x7f800000u) : Bits(0x7ff0000000000000ull);
  constexpr std::int64_t block = 4096;
  for (std::int64_t b0 = 0; b0 < n; b0 += block) {
    const std::int64_t len = std::min(block, n - b0);
    Bits bad = 0;
    for (std::int64_t i = 0; i < len; ++i) {
      Bits b;
      std::memcpy(&b, p + b0 + i, sizeof b);
      bad |= Bits((b & exp_mask) == exp_mask);
    }
    if (!bad) continue;
    for (std::int64_t i = b0; i < b0 + len; ++i)
      if (!std::isfinite(p[i]))
        bad_arg(std::string(what) + " has a non-finite entry at token " + std::to_string(i / (heads * d)) + ", head " +
                std::to_string((i / d) % heads) + ", element " + std::to_string(i % d) + " (flat index " +
                std::to_string(i) + ")");
  }
}

/// Runs fn(begin, end) over a static contiguous split of [0, n) on `threads` threads, rethrowing
/// the first exception.
template <class Fn>
void parallel_ranges(std::int64_t n, int threads, Fn&& fn) {
  if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = static_cast<int>(std::min<std::int64_t>(threads, n));
  if (threads <= 1) {
    fn(std::int64_t(0), n);
    return;
  }
  std::vector<std::exception_ptr> errors(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int w = 0; w < threads; ++w)
    pool.emplace_back([&, w] {
      try {
        fn(n * w / threads, n * (w + 1) / threads);
      } catch (...) {
        errors[w] = std::current_exception();
      }
    });
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

/// Touches the cache lines of token `tok`'s inputs and output for head h. With H > 1 one head's
/// consecutive tokens sit H·D apart, a stride the hardware prefetchers do not follow across pages;
/// without this a multi-head forward over long sequences waits on memory at every step.
template <class Op, class Scalar>
inline void prefetch_token(const ForwardArgs<Scalar>& a, std::int64_t tok, std::int64_t h) {
#if defined(__GNUC__) || defined(__clang__)
  constexpr std::int64_t line = 64 / sizeof(Scalar);
  const std::int64_t xk = (tok * a.heads + h) * a.dk, xv = (tok * a.heads + h) * a.dv;
  for (std::int64_t i = 0; i < a.dk; i += line) {
    __builtin_prefetch(a.q + xk + i);
    __builtin_prefetch(a.k + xk + i);
    if (Op::uses_u) __builtin_prefetch(a.u + xk + i);
  }
  for (std::int64_t i = 0; i < a.dv; i += line) {
    __builtin_prefetch(a.v + xv + i);
    __builtin_prefetch(a.o + xv + i, 1);
  }
#else
  (void)a, (void)tok, (void)h;
#endif
}

}  // namespace detail

template <>
struct BackendTraits<backend::Cpu> {
  /// How many tokens ahead the inputs are prefetched (one step is ~0.1–5 µs; DRAM latency ~0.1 µs).
  static constexpr std::int64_t kPrefetchAhead = 2;
  /// Tokens each (sequence, head) runs before the thread moves to its next pair (see forward).
  static constexpr std::int64_t kTimeBlock = 64;

  /// Runs op `Op` over every (sequence, head). Validates everything — config, extents, finite
  /// inputs, cu_seqlens, every initial state — before writing anything; on a throw, o and the
  /// final state are untouched.
  template <class Op, class Scalar>
  static void forward(const ForwardArgs<Scalar, Scalar>& a, const Config& cfg, CpuOptions opt = {}) {
    static_assert(std::is_same<Scalar, float>::value || std::is_same<Scalar, double>::value,
                  "vla: the CPU backend computes in float or double");
    using Ops = detail::CpuOp<Op, Scalar>;
    constexpr bool has_chunked = !std::is_same<Op, op::LinearAttention>::value;
    check_call<Op>(a, cfg, opt, /*forward=*/true);
    std::vector<typename Ops::State> states = checked_states<Op>(a, cfg, opt);
    const std::int64_t pairs = a.batch * a.heads;

    // Time-blocked: every pair of a thread runs kTimeBlock tokens before the next pair does. The
    // tokens of all heads sit together in memory ([tokens, H, D]), so the first head of a block
    // pulls a block's inputs into cache and the other heads find them there; one head's state is
    // reloaded once per block, not per step. Each pair still runs its steps in order, so results
    // are bitwise those of one head at a time, on any thread count.
    std::int64_t longest = 0;
    for (std::int64_t n = 0; n < a.batch; ++n) longest = std::max(longest, token_span(a.cu_seqlens, a.seq_len, n).length);
    if constexpr (has_chunked) {
      if (opt.path == Path::chunked || (opt.path == Path::automatic && longest >= CpuOptions::kChunkedFrom)) {
        forward_chunked<Op>(a, cfg, opt, states);
        return;
      }
    }
    detail::parallel_ranges(pairs, opt.threads, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t b0 = 0; b0 < longest; b0 += kTimeBlock)
        for (std::int64_t p = begin; p < end; ++p) {
          const std::int64_t h = p % a.heads;
          const auto [first, len] = token_span(a.cu_seqlens, a.seq_len, p / a.heads);
          auto& st = states[static_cast<std::size_t>(p)];
          const std::int64_t stop = first + std::min(len, b0 + kTimeBlock);
          for (std::int64_t t = first + b0; t < stop; ++t) {
            if (t + kPrefetchAhead < stop) detail::prefetch_token<Op>(a, t + kPrefetchAhead, h);
            Ops::step(st, a, t, h, detail::MMap<Scalar>(a.o + (t * a.heads + h) * a.dv, a.dv));
          }
        }
      if (a.final_state.S)
        for (std::int64_t p = begin; p < end; ++p) Ops::store(states[static_cast<std::size_t>(p)], a, p);
    });
  }

  /// The batched backward (docs/maths.md §9, §9b; vla::backward): the single-head backward of op `Op`
  /// (vla_backward, linear_attention_backward, deltanet_backward) for every (sequence, head), threads
  /// over the pairs (results do not depend on the thread count), checkpoints every opt.chunk steps
  /// (0 = 64). Validates everything the forward does (check_call, checked_states), plus d_o, d_final_state and
  /// which gradients the op has, before writing anything; on a throw the gradient buffers are
  /// untouched. When several things are wrong, which one the message names is not part of the
  /// contract (the order of the checks is free to change); that nothing is written is.
  ///
  /// State parts: VLA A, S, z; linear attention S, z; DeltaNet S (as the forward's). The parts an op
  /// lacks are ignored in initial_state, d_final_state and d_initial_state alike — not read, not
  /// checked, not written (linear attention's backward leaves a given d_initial_state.A as it was) —
  /// and steps is never a gradient. Token gradients an op lacks (d_u, d_beta) are refused instead: a
  /// caller asking for one expects it filled.
  ///
  /// Initial states are validated once, by checked_states, with opt.check_positive_definite exactly
  /// as the forward validates them, and the workers run on those states without checking them again.
  /// So with the check off the backward follows the forward: an A that is symmetric with a positive
  /// diagonal but not positive definite is run by the forward without a word, and the backward returns
  /// the gradient of that same computation (neither throws). The alternative, a positive-definiteness
  /// check always run for the backward, was not taken: the flag means one thing for both directions
  /// (the caller vouches for A, e.g. states vla produced, and vla does not look), and a backward that
  /// refused what its forward with the same options accepted would break a training step after its
  /// forward had succeeded.
  template <class Op, class Scalar>
  static void backward(const ForwardArgs<Scalar, Scalar>& a, const GradArgs<Scalar, Scalar>& g, const Config& cfg,
                       CpuOptions opt = {}) {
    static_assert(std::is_same<Scalar, float>::value || std::is_same<Scalar, double>::value,
                  "vla: the CPU backend computes in float or double");
    using Ops = detail::CpuOp<Op, Scalar>;
    check_call<Op>(a, cfg, opt, /*forward=*/false);
    if (!g.d_o) detail::bad_arg("GradArgs::d_o is required", Op::name);
    if (g.d_u && !Op::uses_u) detail::bad_arg("GradArgs::d_u: this op has no u (it is VLA's)", Op::name);
    if (g.d_beta && !Op::uses_beta) detail::bad_arg("GradArgs::d_beta: this op has no beta (it is DeltaNet's)", Op::name);
    auto whole = [&](const auto& st, const char* which) {  // the op's state parts, all or none
      const int given = (st.S != nullptr) + (Op::uses_A && st.A != nullptr) + (Op::uses_z && st.z != nullptr);
      const int needed = 1 + Op::uses_A + Op::uses_z;
      if (given != 0 && given != needed)
        detail::bad_arg(std::string(which) + " must give all of " + (Op::uses_A ? "A, " : "") + "S" +
                            (Op::uses_z ? ", z" : "") + " or none",
                        Op::name);
      return given == needed;
    };
    const bool has_dfinal = whole(g.d_final_state, "GradArgs::d_final_state");
    const bool want_dinit = whole(g.d_initial_state, "GradArgs::d_initial_state");
    const std::vector<typename Ops::State> states = checked_states<Op>(a, cfg, opt);
    const std::int64_t tokens = a.varlen() ? detail::check_cu_seqlens(a.cu_seqlens, a.batch) : a.batch * a.seq_len;
    detail::require_finite_buffer(g.d_o, tokens * a.heads * a.dv, a.heads, a.dv, "d_o");
    const std::int64_t pairs = a.batch * a.heads;
    if (has_dfinal) {
      auto finite = [&](const Scalar* x, std::int64_t per, const char* what) {
        for (std::int64_t i = 0; i < pairs * per; ++i)
          if (!std::isfinite(x[i]))
            detail::bad_arg(std::string("GradArgs::d_final_state.") + what + " has a non-finite entry (state index " +
                            std::to_string(i / per) + ", element " + std::to_string(i % per) + ")");
      };
      if (Op::uses_A) finite(g.d_final_state.A, a.dk * a.dk, "A");
      finite(g.d_final_state.S, a.dv * a.dk, "S");
      if (Op::uses_z) finite(g.d_final_state.z, a.dk, "z");
    }
    const Eigen::Index checkpoint = opt.chunk > 0 ? opt.chunk : 64;
    detail::parallel_ranges(pairs, opt.threads, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t p = begin; p < end; ++p) {
        const std::int64_t h = p % a.heads;
        const auto [first, len] = token_span(a.cu_seqlens, a.seq_len, p / a.heads);
        const std::int64_t n_tok = len;  // a structured binding cannot be captured by a lambda in C++17 (clang)
        const std::int64_t xk = (first * a.heads + h) * a.dk, xv = (first * a.heads + h) * a.dv;
        const Eigen::OuterStride<> sk(a.heads * a.dk), sv(a.heads * a.dv);
        const auto& st = states[static_cast<std::size_t>(p)];
        const Matrix<Scalar> dS = has_dfinal ? Matrix<Scalar>(detail::CRowMat<Scalar>(g.d_final_state.S + p * a.dv * a.dk, a.dv, a.dk))
                                             : Matrix<Scalar>();
        // One head's tokens are the columns of a d × len view of [tokens, H, d] (columns H·d apart):
        // the single-head backward reads them and writes its gradients there, no copy (every buffer
        // was validated above, before the workers started).
        using ColsC = Eigen::Map<const Matrix<Scalar>, 0, Eigen::OuterStride<>>;
        using Cols = Eigen::Map<Matrix<Scalar>, 0, Eigen::OuterStride<>>;
        const ColsC Qc(a.q + xk, a.dk, len, sk), Kc(a.k + xk, a.dk, len, sk), Vc(a.v + xv, a.dv, len, sv),
            dOc(g.d_o + xv, a.dv, len, sv);
        Matrix<Scalar> spare_k, spare_v;  // for the gradients not asked for
        if (!g.d_q || !g.d_k || (Op::uses_u && !g.d_u)) spare_k.resize(a.dk, len);
        if (!g.d_v) spare_v.resize(a.dv, len);
        const Eigen::OuterStride<> spk(a.dk), spv(a.dv);
        auto out_k = [&](Scalar* base) {
          return base ? Cols(base + xk, a.dk, n_tok, sk) : Cols(spare_k.data(), a.dk, n_tok, spk);
        };
        const Cols out_v = g.d_v ? Cols(g.d_v + xv, a.dv, len, sv) : Cols(spare_v.data(), a.dv, len, spv);
        // The states checked_states loaded, not snapshots of them: re-validating here (a VlaState built
        // again, its Cholesky included) would check with other options than the caller's and throw
        // from a worker after other pairs had written (see the comment at checked_states).
        if constexpr (std::is_same<Op, op::Vla>::value) {
          const ColsC Uc(a.u + xk, a.dk, len, sk);
          VlaSnapshot<Scalar> dfin;
          if (has_dfinal)
            dfin = {detail::CRowMat<Scalar>(g.d_final_state.A + p * a.dk * a.dk, a.dk, a.dk), dS,
                    detail::CMap<Scalar>(g.d_final_state.z + p * a.dk, a.dk), 0};
          const VlaSnapshot<Scalar> d0 = detail::vla_backward_columns<Scalar>(
              st, Qc, Kc, Vc, Uc, dOc, has_dfinal ? &dfin : nullptr, checkpoint, nullptr, BackwardStates::roll_back,
              kRollBackTolerance<Scalar>(), out_k(g.d_q), out_k(g.d_k), out_v, out_k(g.d_u));
          if (want_dinit) {
            detail::RowMat<Scalar>(g.d_initial_state.A + p * a.dk * a.dk, a.dk, a.dk) = d0.A;
            detail::RowMat<Scalar>(g.d_initial_state.S + p * a.dv * a.dk, a.dv, a.dk) = d0.S;
            detail::MMap<Scalar>(g.d_initial_state.z + p * a.dk, a.dk) = d0.z;
          }
        } else {
          Matrix<Scalar> dS0;
          Vector<Scalar> dz0;
          if constexpr (std::is_same<Op, op::LinearAttention>::value) {
            const Vector<Scalar> dz = has_dfinal ? Vector<Scalar>(detail::CMap<Scalar>(g.d_final_state.z + p * a.dk, a.dk))
                                                 : Vector<Scalar>();
            detail::linear_attention_backward_columns<Scalar>(
                st, Qc, Kc, Vc, dOc, has_dfinal ? &dS : nullptr, has_dfinal ? &dz : nullptr, checkpoint, nullptr,
                BackwardStates::roll_back, kRollBackTolerance<Scalar>(), out_k(g.d_q), out_k(g.d_k), out_v, dS0, dz0);
          } else {
            using Steps = Eigen::Map<const Vector<Scalar>, 0, Eigen::InnerStride<>>;
            using GradSteps = Eigen::Map<Vector<Scalar>, 0, Eigen::InnerStride<>>;
            Vector<Scalar> spare_beta;
            if (!g.d_beta) spare_beta.resize(len);
            const GradSteps gb = g.d_beta ? GradSteps(g.d_beta + first * a.heads + h, len, Eigen::InnerStride<>(a.heads))
                                          : GradSteps(spare_beta.data(), len, Eigen::InnerStride<>(1));
            detail::deltanet_backward_columns<Scalar>(
                st, Qc, Kc, Vc, Steps(a.beta + first * a.heads + h, len, Eigen::InnerStride<>(a.heads)), dOc,
                has_dfinal ? &dS : nullptr, checkpoint, nullptr, BackwardStates::roll_back,
                kRollBackTolerance<Scalar>(), out_k(g.d_q), out_k(g.d_k), out_v, gb, dS0);
          }
          if (want_dinit) {
            detail::RowMat<Scalar>(g.d_initial_state.S + p * a.dv * a.dk, a.dv, a.dk) = dS0;
            if (Op::uses_z) detail::MMap<Scalar>(g.d_initial_state.z + p * a.dk, a.dk) = dz0;
          }
        }
      }
    });
  }

 private:
  /// What the forward and the backward check first (cheap, no buffer read): the config (in the
  /// scalar), extents and pointers (detail::check_args), the options. `forward`: also whether
  /// Path::chunked is asked of an op without it.
  template <class Op, class Scalar>
  static void check_call(const ForwardArgs<Scalar, Scalar>& a, const Config& cfg, const CpuOptions& opt, bool forward) {
    cfg.validate_for<Scalar>();
    detail::check_args<Op>(a);
    if (opt.threads < 0) detail::bad_arg("CpuOptions::threads must be >= 0");
    // One check; the message says what chunk is to the caller (the backward's checkpoint interval).
    if (opt.chunk < 0)
      detail::bad_arg(forward ? "CpuOptions::chunk must be >= 0" : "CpuOptions::chunk (the checkpoint interval) must be >= 0");
    if (forward && std::is_same<Op, op::LinearAttention>::value && opt.path == Path::chunked)
      detail::bad_arg("no chunked path (Path::chunked is for VLA and DeltaNet)", Op::name);
  }

  /// What they check next, before anything is written: cu_seqlens, finite inputs, β in (0, 1]; then
  /// every initial state, loaded (and so validated, A's positive definiteness only when
  /// opt.check_positive_definite) and returned, a bad one named by (sequence, head). The one place a
  /// batched call validates its states: the forward and the backward run on what this returns and
  /// check no state again (a second check, with other options, could throw after writes began).
  template <class Op, class Scalar>
  static std::vector<typename detail::CpuOp<Op, Scalar>::State> checked_states(const ForwardArgs<Scalar, Scalar>& a,
                                                                               const Config& cfg, const CpuOptions& opt) {
    using Ops = detail::CpuOp<Op, Scalar>;
    const std::int64_t tokens = a.varlen() ? detail::check_cu_seqlens(a.cu_seqlens, a.batch) : a.batch * a.seq_len;
    detail::require_finite_buffer(a.q, tokens * a.heads * a.dk, a.heads, a.dk, "q");
    detail::require_finite_buffer(a.k, tokens * a.heads * a.dk, a.heads, a.dk, "k");
    detail::require_finite_buffer(a.v, tokens * a.heads * a.dv, a.heads, a.dv, "v");
    if (Op::uses_u) detail::require_finite_buffer(a.u, tokens * a.heads * a.dk, a.heads, a.dk, "u");
    if (Op::uses_beta)
      for (std::int64_t i = 0; i < tokens * a.heads; ++i)
        if (!(a.beta[i] > Scalar(0) && a.beta[i] <= Scalar(1)))
          detail::bad_arg("beta must be in (0, 1] (token " + std::to_string(i / a.heads) + ", head " +
                          std::to_string(i % a.heads) + ")");
    const std::int64_t pairs = a.batch * a.heads;
    std::vector<typename Ops::State> states;
    states.reserve(static_cast<std::size_t>(pairs));
    for (std::int64_t p = 0; p < pairs; ++p) {
      try {
        states.push_back(Ops::make(a, cfg, opt, p));
      } catch (const std::invalid_argument& e) {
        detail::bad_arg("initial_state of sequence " + std::to_string(p / a.heads) + ", head " +
                        std::to_string(p % a.heads) + " (state index " + std::to_string(p) + "): " + e.what());
      }
    }
    return states;
  }

  /// The chunked path (docs/maths.md §4) over validated states: each (sequence, head) pair on one
  /// thread, chunk after chunk, so results do not depend on the thread count.
  template <class Op, class Scalar, class State>
  static void forward_chunked(const ForwardArgs<Scalar, Scalar>& a, const Config& cfg, const CpuOptions& opt,
                              const std::vector<State>& states) {
    using Ops = detail::CpuOp<Op, Scalar>;
    const std::int64_t chunk = opt.chunk > 0 ? opt.chunk : CpuOptions::kDefaultChunk;
    const chunked::Constants<Scalar> c(cfg, a.dk);
    detail::parallel_ranges(a.batch * a.heads, opt.threads, [&](std::int64_t begin, std::int64_t end) {
      chunked::Workspace<Scalar> ws(chunk, a.dk, a.dv);
      for (std::int64_t p = begin; p < end; ++p)
        Ops::run_chunked(states[static_cast<std::size_t>(p)], a, p, token_span(a.cu_seqlens, a.seq_len, p / a.heads),
                         chunk, ws, c);
    });
  }
};

}  // namespace vla
