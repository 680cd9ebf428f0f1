// python/vla_torch/csrc/cuda_ops.cuh — the definitions behind cuda_bridge.h. Each cuda_ops_*.cu
// includes this and instantiates it for one token type, so the three types' kernels compile in
// parallel. Only vla's headers are included here (no torch), so the build's half/bf16 flags are
// vla's own (setup.py and the JIT load undefine torch's __CUDA_NO_HALF_* macros).
#pragma once

#include <vla/cuda/vla_cuda.cuh>

#include "cuda_bridge.h"

namespace vla_torch {

template <class Op, class In>
std::string forward_on_gpu(const vla::ForwardArgs<In, float>& a, const vla::Config& cfg, cudaStream_t stream,
                           const std::int64_t* host_cu_seqlens) {
  vla::cuda::Options opt;
  opt.host_cu_seqlens = host_cu_seqlens;
  const vla::cuda::Status st = vla::forward<vla::backend::Cuda, Op>(a, cfg, stream, opt);
  return st ? std::string() : st.message;
}

template <class Op, class In>
std::string backward_on_gpu(const vla::ForwardArgs<In, float>& a, const vla::GradArgs<In, float>& g,
                            const vla::Config& cfg, cudaStream_t stream, const std::int64_t* host_cu_seqlens) {
  vla::cuda::BackwardOptions opt;
  opt.host_cu_seqlens = host_cu_seqlens;
  const vla::cuda::Status st = vla::backward<vla::backend::Cuda, Op>(a, g, cfg, stream, opt);
  return st ? std::string() : st.message;
}

template <class Op, class In>
std::string decode_on_gpu(std::int64_t batch, std::int64_t heads, std::int64_t dk, std::int64_t dv, const In* q,
                          const In* k, const In* v, const In* u, const In* beta, In* o,
                          const vla::StateBuffers<float>& state, const vla::Config& cfg, cudaStream_t stream) {
  vla::cuda::DecodeArgs<In> d;
  d.batch = batch, d.heads = heads, d.dk = dk, d.dv = dv;
  d.q = q, d.k = k, d.v = v, d.u = u, d.beta = beta, d.o = o;
  d.state = state;
  const vla::cuda::Status st = vla::cuda::decode_step<Op, In>(d, cfg, stream);
  return st ? std::string() : st.message;
}

}  // namespace vla_torch

#define VLA_TORCH_INSTANTIATE_OP(Op, In)                                                                        \
  template std::string vla_torch::forward_on_gpu<Op, In>(const vla::ForwardArgs<In, float>&, const vla::Config&, \
                                                         cudaStream_t, const std::int64_t*);                     \
  template std::string vla_torch::backward_on_gpu<Op, In>(const vla::ForwardArgs<In, float>&,                    \
                                                          const vla::GradArgs<In, float>&, const vla::Config&,   \
                                                          cudaStream_t, const std::int64_t*);              \
  template std::string vla_torch::decode_on_gpu<Op, In>(std::int64_t, std::int64_t, std::int64_t, std::int64_t, \
                                                        const In*, const In*, const In*, const In*, const In*,   \
                                                        In*, const vla::StateBuffers<float>&, const vla::Config&, \
                                                        cudaStream_t);
/// Every op for one token type.
#define VLA_TORCH_INSTANTIATE(In)                  \
  VLA_TORCH_INSTANTIATE_OP(::vla::op::Vla, In)     \
  VLA_TORCH_INSTANTIATE_OP(::vla::op::LinearAttention, In) \
  VLA_TORCH_INSTANTIATE_OP(::vla::op::DeltaNet, In)
