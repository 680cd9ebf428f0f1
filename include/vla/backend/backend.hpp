// vla/backend/backend.hpp — backend tags, op policies and the trait every backend specialises.
//
// A backend is a tag type; `BackendTraits<Tag>` is its one specialisation point. The op (VLA or a
// baseline) is a policy type passed through, so every backend runs the three recurrences through
// one forward and comparisons are like for like. This header needs neither Eigen nor CUDA.
#pragma once

#include <cstdint>
#include <string>

#include "vla/config.hpp"
#include "vla/layout.hpp"

namespace vla {

namespace backend {
struct Cpu {};   ///< Eigen on the host (vla/backend/cpu.hpp)
struct Cuda {};  ///< fused CUDA kernels (vla/cuda/, for CUDA users only)
}  // namespace backend

/// The recurrences, as policies. Each says which inputs and state parts it uses.
namespace op {
struct Vla {
  static constexpr const char* name = "vla";
  static constexpr bool uses_u = true, uses_beta = false, uses_A = true, uses_z = true, uses_steps = true;
};
struct LinearAttention {
  static constexpr const char* name = "linear_attention";
  static constexpr bool uses_u = false, uses_beta = false, uses_A = false, uses_z = true, uses_steps = false;
};
struct DeltaNet {
  static constexpr const char* name = "deltanet";
  static constexpr bool uses_u = false, uses_beta = true, uses_A = false, uses_z = false, uses_steps = false;
};
}  // namespace op

/// Which form of the recurrence a forward runs (shared by every backend's options).
///  - recurrent: token by token, docs/maths.md §2 as written (matrix–vector work);
///  - chunked: chunks of tokens through docs/maths.md §4 (matrix–matrix work; VLA and DeltaNet);
///  - automatic: the backend picks by the measured crossover (README, "Performance").
enum class Path { automatic, recurrent, chunked };

/// Specialised by each backend: `template <class Op, ...> static R forward(args, cfg, context...)`.
template <class Backend>
struct BackendTraits;

namespace detail {

/// The checks every backend makes on the host before touching data: extents, required pointers,
/// whole state parts. Data-dependent checks (finite values, cu_seqlens order) are the backend's.
template <class Op, class In, class St>
void check_args(const ForwardArgs<In, St>& a) {
  const char* op = Op::name;
  if (a.batch < 0) bad_arg("batch must be >= 0", op);
  if (!a.varlen() && a.seq_len < 0) bad_arg("seq_len must be >= 0", op);
  if (a.heads <= 0) bad_arg("heads must be > 0", op);
  if (a.dk <= 0) bad_arg("dk must be > 0", op);
  if (a.dv <= 0) bad_arg("dv must be > 0", op);
  if (!a.q || !a.k || !a.v || !a.o) bad_arg("q, k, v and o are required", op);
  if (Op::uses_u && !a.u) bad_arg("u (the penalty directions) is required", op);
  if (Op::uses_beta && !a.beta) bad_arg("beta is required", op);
  auto whole = [&](const auto& s, const char* which) {
    const int given = (s.S != nullptr) + (Op::uses_A && s.A != nullptr) + (Op::uses_z && s.z != nullptr) +
                      (Op::uses_steps && s.steps != nullptr);
    const int needed = 1 + Op::uses_A + Op::uses_z + Op::uses_steps;
    if (given != 0 && given != needed)
      bad_arg(std::string(which) + " must give all of its parts (" + (Op::uses_A ? "A, " : "") + "S" +
                  (Op::uses_z ? ", z" : "") + (Op::uses_steps ? ", steps" : "") + ") or none",
              op);
    return given != 0;
  };
  whole(a.initial_state, "initial_state");
  whole(a.final_state, "final_state");
}

/// cu_seqlens in host memory: N+1 entries, starting at 0, non-decreasing. Returns total tokens.
inline std::int64_t check_cu_seqlens(const std::int64_t* cu, std::int64_t n) {
  if (cu[0] != 0) bad_arg("cu_seqlens[0] must be 0");
  for (std::int64_t i = 0; i < n; ++i)
    if (cu[i + 1] < cu[i]) bad_arg("cu_seqlens must be non-decreasing (at index " + std::to_string(i + 1) + ")");
  return cu[n];
}

}  // namespace detail

/// The batched forward of op `Op` on backend `Backend` (docs/maths.md §2 for op::Vla). The trailing
/// arguments are the backend's context (backend::Cpu: an optional CpuOptions; backend::Cuda: a
/// stream), and the return type is the backend's (Cpu: void, throws std::invalid_argument;
/// Cuda: a status).
template <class Backend, class Op = op::Vla, class In, class St, class... Context>
decltype(auto) forward(const ForwardArgs<In, St>& args, const Config& cfg, Context&&... ctx) {
  return BackendTraits<Backend>::template forward<Op>(args, cfg, static_cast<Context&&>(ctx)...);
}

/// The batched backward of op `Op` on backend `Backend` (docs/maths.md §9): given the forward's
/// arguments (the same buffers; o is not read) and the gradient of the loss with respect to its
/// outputs (and, optionally, its final state), writes the gradients with respect to its inputs and
/// initial state. Built for backend::Cpu and every op — VLA, linear attention, DeltaNet (vla/backward.hpp,
/// docs/maths.md §9b) — and for backend::Cuda and VLA (vla/cuda/backward.cuh, §9c; the baselines there
/// return an error Status). The trailing arguments are the backend's context (Cpu: an optional
/// CpuOptions, whose `chunk` is the checkpoint interval; Cuda: the stream and an optional
/// cuda::BackwardOptions).
template <class Backend, class Op = op::Vla, class In, class St, class... Context>
decltype(auto) backward(const ForwardArgs<In, St>& args, const GradArgs<In, St>& grads, const Config& cfg,
                        Context&&... ctx) {
  return BackendTraits<Backend>::template backward<Op>(args, grads, cfg, static_cast<Context&&>(ctx)...);
}

/// Linear attention over the same buffers (docs/maths.md §7).
template <class Backend, class In, class St, class... Context>
decltype(auto) linear_attention_forward(const ForwardArgs<In, St>& args, const Config& cfg, Context&&... ctx) {
  return forward<Backend, op::LinearAttention>(args, cfg, static_cast<Context&&>(ctx)...);
}

/// DeltaNet over the same buffers (docs/maths.md §7); needs args.beta.
template <class Backend, class In, class St, class... Context>
decltype(auto) deltanet_forward(const ForwardArgs<In, St>& args, const Config& cfg, Context&&... ctx) {
  return forward<Backend, op::DeltaNet>(args, cfg, static_cast<Context&&>(ctx)...);
}

}  // namespace vla
