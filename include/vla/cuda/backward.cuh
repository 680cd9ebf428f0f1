// vla/cuda/backward.cuh — the batched VLA backward on the GPU (docs/maths.md §9, §9c): host-side checks,
// then two launches on `stream`.
//
//   vla::cuda::Status st = vla::cuda::backward<vla::op::Vla>(args, grads, cfg, stream);
//   // or, through the backend trait:  vla::backward<vla::backend::Cuda>(args, grads, cfg, stream)
//
// args are the forward's arguments (device pointers, vla/layout.hpp; o is not read or written),
// grads the gradients (vla::GradArgs): d_o in, the others out, null = not needed. Token type
// In ∈ {float, __half, __nv_bfloat16}; states, gradients of states and arithmetic in float.
//
// How: (1) the recurrent forward kernel runs again, writing no output but the state every
// `checkpoint` tokens; (2) one CTA per (sequence, head) walks its checkpoint segments from the last:
// it replays a segment from its checkpoint, then runs the adjoint of each of its steps in reverse,
// rolling the state back step by step (vla/cuda/detail/backward_kernel.cuh).
// Workspace, allocated on `stream` (cudaMallocAsync) and freed after: the checkpoints,
// ⌈T_max / checkpoint⌉ × (dk² + dv·dk + dk) floats per (sequence, head), and one segment of step
// records, checkpoint × (6·dk + 2·dv + 16) floats per (sequence, head).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <string>
#include <type_traits>
#include <vector>

#include "vla/backend/backend.hpp"
#include "vla/config.hpp"
#include "vla/layout.hpp"
#include "vla/cuda/detail/backward_kernel.cuh"
#include "vla/cuda/forward.cuh"
#include "vla/cuda/status.cuh"

namespace vla {
namespace cuda {

/// Options of a CUDA backward. The defaults need nothing.
struct BackwardOptions {
  /// A host copy of args.cu_seqlens (as Options::host_cu_seqlens): without it the device array is
  /// copied back and the call waits for `stream` once.
  const std::int64_t* host_cu_seqlens = nullptr;
  /// Tokens between checkpoints: a multiple of 32, or 0 for the default (64). Larger saves
  /// checkpoint memory (it falls as 1/checkpoint) and costs record memory (it grows with it).
  int checkpoint = 0;

  static constexpr int kDefaultCheckpoint = 64;
};

namespace detail {

template <class In, int DK, int DV>
Status launch_backward(BackwardParams<In> bp, std::int64_t blocks, std::int64_t longest, cudaStream_t stream) {
  using Lo = BackwardLayout<DK, DV>;
  DeviceInfo dev;
  Status st = device_info(dev);
  if (!st) return st;
  if (Lo::bytes > static_cast<std::size_t>(dev.optin_smem))
    return Status::invalid("vla::cuda: the backward kernel needs more shared memory than this device offers");
  const int L = bp.L;
  const std::int64_t nck = std::max<std::int64_t>(1, (longest + L - 1) / L);
  const std::size_t state_floats = std::size_t(DK) * DK + std::size_t(DV) * DK + DK;
  const std::size_t ck_floats = std::size_t(blocks) * std::size_t(nck) * state_floats;
  const std::size_t rec_floats = std::size_t(blocks) * std::size_t(L) * Lo::REC;
  float* ws = nullptr;
  cudaError_t e = cudaMallocAsync(&ws, (ck_floats + rec_floats) * sizeof(float), stream);
  if (e != cudaSuccess) return Status::from_cuda(e, "vla::cuda::backward: workspace allocation");
  float* const ckA = ws;
  float* const ckS = ckA + std::size_t(blocks) * nck * DK * DK;
  float* const ckz = ckS + std::size_t(blocks) * nck * DV * DK;
  bp.rec = ws + ck_floats;

  // (1) checkpoints: the forward again, no output, the state every L tokens.
  RecurrentParams<In> fp = bp.f;
  fp.o = nullptr;
  fp.A1 = fp.S1 = fp.z1 = nullptr;
  fp.steps1 = nullptr;
  fp.ckA = ckA, fp.ckS = ckS, fp.ckz = ckz;
  fp.ckpt_stride = nck;
  fp.ckpt_every = L;
  fp.chunk = static_cast<int>(std::min<std::int64_t>(default_chunk<op::Vla>(DK, DV), pow2_at_least(std::max<std::int64_t>(longest, 1))));
  st = launch_recurrent<op::Vla, In, DK, DV, /*CKPT=*/true>(fp, blocks, stream);
  // (2) the reverse sweep
  if (st) {
    bp.ckA = ckA, bp.ckS = ckS, bp.ckz = ckz;
    bp.ckpt_stride = nck;
    auto kernel = &vla_backward_kernel<In, DK, DV>;
    st = prepare_kernel<KernelTag<op::Vla, In, DK, DV, 8>>(kernel, Lo::NT, Lo::bytes);
    if (st) {
      kernel<<<static_cast<unsigned>(blocks), Lo::NT, Lo::bytes, stream>>>(bp);
      st = Status::from_cuda(cudaGetLastError(), "vla::cuda: backward kernel launch");
    }
  }
  const cudaError_t ef = cudaFreeAsync(ws, stream);
  if (st && ef != cudaSuccess) return Status::from_cuda(ef, "vla::cuda::backward: workspace release");
  return st;
}

}  // namespace detail

/// The batched backward of op `Op` on the GPU (docs/maths.md §9). Built for op::Vla; the baselines'
/// backward is the CPU's (vla::backward<backend::Cpu, …>) for now, and asking for it here returns an
/// error Status. Checks on the host, before any launch, as the forward does (config, extents,
/// pointers, head dims, alignment, cu_seqlens), plus: d_o is given; d_beta is not asked for (VLA has
/// no β); d_final_state and d_initial_state give all of A, S, z or none. Values are not scanned
/// (non-finite inputs give non-finite gradients). On an error nothing is written.
///
/// Gradients: d_q, d_k, d_v, d_u in the token type (the float result rounded once); d_initial_state
/// in float, A as its symmetric gradient (steps not written); d_final_state is read as given (its
/// A's symmetric part is what counts). d_initial_state must not overlap the initial state.
template <class Op, class In>
Status backward(const ForwardArgs<In, float>& a, const GradArgs<In, float>& g, const Config& cfg, cudaStream_t stream,
                const BackwardOptions& opt = {}) {
  static_assert(detail::IsTokenType<In>::value, "vla::cuda: token type must be float, __half or __nv_bfloat16");
  if constexpr (!std::is_same<Op, op::Vla>::value) {
    return Status::invalid(std::string("vla::cuda::backward<") + Op::name +
                           ">: the GPU backward is built for VLA; the baselines' backward runs on the CPU "
                           "(vla::backward<vla::backend::Cpu, …>)");
  } else {
    try {
      cfg.validate_for<float>();
      vla::detail::check_args<Op>(a);
    } catch (const std::exception& ex) {
      return Status::invalid(ex.what());
    }
    if (!detail::supported_head_dim(a.dk) || !detail::supported_head_dim(a.dv))
      return detail::dispatch_head_dims(a.dk, a.dv, [](auto, auto) { return Status{}; });
    if (!g.d_o) return Status::invalid("vla::backward<vla>: GradArgs::d_o is required");
    if (g.d_beta) return Status::invalid("vla::backward<vla>: GradArgs::d_beta: this op has no beta (it is DeltaNet's)");
    auto whole = [](const auto& s) { return (s.A != nullptr) + (s.S != nullptr) + (s.z != nullptr); };
    const int nf = whole(g.d_final_state), ni = whole(g.d_initial_state);
    if (nf != 0 && nf != 3) return Status::invalid("vla::backward<vla>: GradArgs::d_final_state must give all of A, S, z or none");
    if (ni != 0 && ni != 3) return Status::invalid("vla::backward<vla>: GradArgs::d_initial_state must give all of A, S, z or none");
    if (opt.checkpoint < 0 || opt.checkpoint % 32 != 0)
      return Status::invalid("vla::cuda::BackwardOptions::checkpoint must be a multiple of 32 (or 0, the default)");
    if (!detail::aligned16(a.initial_state.A) || !detail::aligned16(a.initial_state.S))
      return Status::invalid("vla::backward<vla>: the initial state's A and S must be 16-byte aligned");

    std::int64_t tokens = 0, longest = 0;
    {
      const Status ext = detail::token_extents(a, opt.host_cu_seqlens, stream, tokens, longest);
      if (!ext) return ext;
    }
    (void)tokens;  // the workspace needs the longest sequence only
    const std::int64_t blocks = a.batch * a.heads;
    if (blocks == 0) return {};
    if (blocks > 0x7fffffffLL) return Status::invalid("vla::cuda: batch × heads exceeds the grid limit (2^31 − 1)");

    detail::BackwardParams<In> bp;
    bp.f = detail::make_params(a, cfg);
    bp.d_o = g.d_o;
    bp.dA1 = g.d_final_state.A, bp.dS1 = g.d_final_state.S, bp.dz1 = g.d_final_state.z;
    bp.dq = g.d_q, bp.dk = g.d_k, bp.dv = g.d_v, bp.du = g.d_u;
    bp.dA0 = g.d_initial_state.A, bp.dS0 = g.d_initial_state.S, bp.dz0 = g.d_initial_state.z;
    bp.L = opt.checkpoint > 0 ? opt.checkpoint : BackwardOptions::kDefaultCheckpoint;
#ifdef VLA_BACKWARD_PROFILE
    bp.prof = detail::backward_profile_buffer();
#endif
    return detail::dispatch_head_dims(a.dk, a.dv, [&](auto dk_c, auto dv_c) {
      return detail::launch_backward<In, decltype(dk_c)::value, decltype(dv_c)::value>(bp, blocks, longest, stream);
    });
  }
}

}  // namespace cuda
}  // namespace vla
