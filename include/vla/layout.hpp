// vla/layout.hpp — the buffers a batched forward reads and writes: plain pointers and extents,
// shared by every backend (host memory for backend::Cpu, device memory for backend::Cuda).
//
// Tokens, fixed-length:  q, k, u: [B, T, H, dk]   v, o: [B, T, H, dv]   beta: [B, T, H]
// Tokens, variable-length (cu_seqlens given): the same with [B, T] replaced by the packed token
//   axis [total_T]; sequence n owns tokens cu_seqlens[n] .. cu_seqlens[n+1]-1.
// State, one per (sequence n, head h), all row-major and contiguous:
//   A: [N, H, dk, dk]   S: [N, H, dv, dk]   z: [N, H, dk]   steps: [N, H]
// Every buffer is dense row-major with the innermost dimension contiguous.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "vla/detail/rules.hpp"  // VLA_HOST_DEVICE

namespace vla {

/// Per-(sequence, head) state buffers. T is the state scalar, const-qualified for an input state.
/// A null pointer means "absent": an absent initial state is the fresh state of docs/maths.md §2 (A = I/λ0,
/// S = 0, z = 0, t = 0); an absent final state is not written. An op uses only its own parts
/// (VLA: A, S, z, steps; linear attention: S, z; DeltaNet: S): the others are ignored — not read,
/// not checked, not written, in the forward and the backward alike — so they may be null or point
/// anywhere (token gradients an op lacks, GradArgs::d_u and d_beta, are refused instead).
template <class T>
struct StateBuffers {
  using Steps = std::conditional_t<std::is_const<T>::value, const std::int64_t, std::int64_t>;
  T* A = nullptr;
  T* S = nullptr;
  T* z = nullptr;
  Steps* steps = nullptr;
};

/// A batched forward's arguments. `In` is the token scalar, `St` the state scalar.
/// q, k (and u) must already be feature-mapped (the paper: φ(x) = ELU(x) + 1, vla::elu_plus_one);
/// batch = 0 or seq_len = 0 is a valid forward with nothing to compute: o is not touched and the
/// final state, when asked for, is the initial (or fresh) one.
template <class In, class St = In>
struct ForwardArgs {
  std::int64_t batch = 0;    ///< number of sequences N
  std::int64_t seq_len = 0;  ///< T of the fixed-length layout; ignored when cu_seqlens is set
  std::int64_t heads = 0;    ///< H
  std::int64_t dk = 0;       ///< key / query / penalty-direction size
  std::int64_t dv = 0;       ///< value / output size
  /// Optional: N+1 non-decreasing offsets, cu_seqlens[0] = 0. Like every pointer here it lives in
  /// the backend's memory: host memory for backend::Cpu, device memory for backend::Cuda.
  const std::int64_t* cu_seqlens = nullptr;

  // q, k, v, o are required even for zero tokens (a null pointer is taken for a caller's mistake).
  const In* q = nullptr;
  const In* k = nullptr;
  const In* v = nullptr;
  const In* u = nullptr;     ///< VLA's penalty directions (VLA only)
  const In* beta = nullptr;  ///< DeltaNet's step sizes in (0, 1] (DeltaNet only)
  In* o = nullptr;

  StateBuffers<const St> initial_state;  ///< optional
  StateBuffers<St> final_state;          ///< optional

  bool varlen() const { return cu_seqlens != nullptr; }
};

/// A batched backward's gradients (docs/maths.md §9, §9b), in the forward's layouts: d_o is shaped like
/// o (required), the other token gradients like their inputs; a null output means "not needed".
/// d_final_state (optional): the loss's gradient with respect to the final state (the op's parts —
/// VLA A, S, z; linear attention S, z; DeltaNet S; steps unused), null = zero. d_initial_state
/// (optional output): the gradient with respect to the initial state, the same parts (VLA's A as its
/// symmetric gradient; steps not written).
template <class In, class St = In>
struct GradArgs {
  const In* d_o = nullptr;
  StateBuffers<const St> d_final_state;
  In* d_q = nullptr;
  In* d_k = nullptr;
  In* d_v = nullptr;
  In* d_u = nullptr;     ///< VLA only
  In* d_beta = nullptr;  ///< DeltaNet only, shaped like beta ([tokens, H])
  StateBuffers<St> d_initial_state;
};

/// Where sequence n's tokens are on the token axis: [first, first + length). The one place that
/// reads the two layouts, shared by the CPU backend and the CUDA kernels.
struct TokenSpan {
  std::int64_t first, length;
};
VLA_HOST_DEVICE TokenSpan token_span(const std::int64_t* cu_seqlens, std::int64_t seq_len, std::int64_t n) {
  if (cu_seqlens) return {cu_seqlens[n], cu_seqlens[n + 1] - cu_seqlens[n]};
  return {n * seq_len, seq_len};
}

namespace detail {

/// Throws std::invalid_argument("vla::forward: what"), or "vla::forward<op>: what" when the problem
/// is particular to one op.
[[noreturn]] inline void bad_arg(const std::string& what, const char* op = nullptr) {
  throw std::invalid_argument(std::string("vla::forward") + (op ? std::string("<") + op + ">" : std::string()) + ": " +
                              what);
}

}  // namespace detail
}  // namespace vla
