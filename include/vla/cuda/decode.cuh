// vla/cuda/decode.cuh — one decode step for many heads (T = 1), the state updated in place, and
// fresh states for a pool.
//
// A decode step is the forward at T = 1 with the initial and final state being the same buffers
// (docs/maths.md §3: a decode step is the T = 1 case). It is bound by moving the state, so it has its own
// kernel (detail/decode_kernel.cuh): one warp per (sequence, head) pair, the state brought into
// shared memory by the bulk-copy engine and written back straight from registers, as many pairs
// in flight per SM as slots fit. States can live in a pool: state_index[n] names the slot of
// sequence n; a negative index (or one ≥ pool_size) marks a padding entry that is skipped (its
// outputs are not written, no state is touched). The state buffers A, S and z must be 16-byte
// aligned, the slots distinct.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <exception>
#include <string>

#include "vla/backend/backend.hpp"
#include "vla/config.hpp"
#include "vla/layout.hpp"
#include "vla/cuda/forward.cuh"
#include "vla/cuda/status.cuh"

namespace vla {
namespace cuda {

/// One decode step's buffers (device memory).
///   q, k, u: [batch, heads, dk]   v, o: [batch, heads, dv]   beta: [batch, heads] (DeltaNet)
///   state:   a pool [pool_size, heads, ...] in the state layout of vla/layout.hpp, read and
///            written in place (VLA: A, S, z, steps; linear attention: S, z; DeltaNet: S)
template <class In>
struct DecodeArgs {
  std::int64_t batch = 0;  ///< sequences stepped (N)
  std::int64_t heads = 0;  ///< H
  std::int64_t dk = 0;
  std::int64_t dv = 0;
  const In* q = nullptr;
  const In* k = nullptr;
  const In* v = nullptr;
  const In* u = nullptr;     ///< VLA only
  const In* beta = nullptr;  ///< DeltaNet only
  In* o = nullptr;
  StateBuffers<float> state;                  ///< the pool, updated in place
  const std::int32_t* state_index = nullptr;  ///< optional, device [batch]: slot of sequence n; < 0 skips it
  std::int64_t pool_size = 0;                 ///< slots in the pool; 0 means batch. Indices ≥ pool_size are skipped.
};

/// One step of op `Op` for every (sequence, head), in place. The state must be given whole.
template <class Op, class In>
Status decode_step(const DecodeArgs<In>& d, const Config& cfg, cudaStream_t stream) {
  static_assert(detail::IsTokenType<In>::value, "vla::cuda: token type must be float, __half or __nv_bfloat16");
  ForwardArgs<In, float> a;
  a.batch = d.batch;
  a.seq_len = 1;
  a.heads = d.heads;
  a.dk = d.dk;
  a.dv = d.dv;
  a.q = d.q;
  a.k = d.k;
  a.v = d.v;
  a.u = d.u;
  a.beta = d.beta;
  a.o = d.o;
  a.initial_state = {d.state.A, d.state.S, d.state.z, d.state.steps};
  a.final_state = d.state;
  try {
    cfg.validate_for<float>();  // also: no floor underflows, 1/lambda0 finite, in float
    vla::detail::check_args<Op>(a);
  } catch (const std::exception& ex) {
    return Status::invalid(std::string("vla::cuda::decode_step: ") + ex.what());
  }
  if (!d.state.S) return Status::invalid("vla::cuda::decode_step: the state (pool) is required");
  if (!detail::supported_head_dim(d.dk) || !detail::supported_head_dim(d.dv))
    return detail::dispatch_head_dims(d.dk, d.dv, [](auto, auto) { return Status{}; });
  const std::int64_t pool = d.pool_size > 0 ? d.pool_size : d.batch;
  if (!d.state_index && pool < d.batch)
    return Status::invalid("vla::cuda::decode_step: pool_size < batch needs a state_index");
  const bool aligned = detail::aligned16(d.q) && detail::aligned16(d.k) && detail::aligned16(d.v) &&
                       detail::aligned16(d.o) && (!Op::uses_u || detail::aligned16(d.u)) &&
                       detail::aligned16(d.state.A) && detail::aligned16(d.state.S) &&
                       (!Op::uses_z || detail::aligned16(d.state.z));
  if (!aligned)
    return Status::invalid("vla::cuda::decode_step: q, k, v, u, o and the state buffers A, S, z must be 16-byte aligned");
  if (d.batch == 0) return {};

  detail::RecurrentParams<In> p = detail::make_params(a, cfg);  // a: the T = 1 view built above
  p.state_index = d.state_index;
  p.pool_size = pool;
  p.pairs = d.batch * d.heads;
  p.chunk = 1;
  return detail::dispatch_head_dims(d.dk, d.dv, [&](auto dk_c, auto dv_c) {
    return detail::launch_decode<Op, In, decltype(dk_c)::value, decltype(dv_c)::value>(p, stream);
  });
}

namespace detail {
template <int Unused = 0>  // a template, so that every translation unit may define it (no ODR clash)
__global__ void fresh_a_kernel(float* A, std::int64_t count, int dk, float inv_lambda0) {
  const std::int64_t n = count * dk * dk;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t e = i % (std::int64_t(dk) * dk);
    A[i] = (e / dk == e % dk) ? inv_lambda0 : 0.f;
  }
}
}  // namespace detail

/// Writes the fresh state of docs/maths.md §2 (A = I/λ0, S = 0, z = 0, steps = 0) into `count` consecutive
/// (slot, head) entries of `st` (count = slots × heads); parts the op does not use may be null.
inline Status init_states(const StateBuffers<float>& st, std::int64_t count, std::int64_t dk, std::int64_t dv,
                          const Config& cfg, cudaStream_t stream) {
  try {
    cfg.validate_for<float>();  // also: no floor underflows, 1/lambda0 finite, in float
  } catch (const std::exception& ex) {
    return Status::invalid(ex.what());
  }
  if (count < 0 || dk <= 0 || dv <= 0) return Status::invalid("vla::cuda::init_states: bad extents");
  if (count == 0) return {};
  cudaError_t e = cudaSuccess;
  if (st.S) e = cudaMemsetAsync(st.S, 0, sizeof(float) * count * dv * dk, stream);
  if (e == cudaSuccess && st.z) e = cudaMemsetAsync(st.z, 0, sizeof(float) * count * dk, stream);
  if (e == cudaSuccess && st.steps) e = cudaMemsetAsync(st.steps, 0, sizeof(std::int64_t) * count, stream);
  if (e == cudaSuccess && st.A) {
    const std::int64_t n = count * dk * dk;
    const int grid = static_cast<int>(std::min<std::int64_t>((n + 255) / 256, 8192));
    detail::fresh_a_kernel<><<<grid, 256, 0, stream>>>(st.A, count, static_cast<int>(dk),
                                                     1.f / static_cast<float>(cfg.lambda0));
    e = cudaGetLastError();
  }
  return Status::from_cuda(e, "vla::cuda::init_states");
}

}  // namespace cuda
}  // namespace vla
