// python/vla_torch/csrc/cuda_bridge.h — what ops.cpp (compiled by the host compiler, with torch's
// headers) calls on the GPU: vla's CUDA backend (vla/cuda/, docs/cuda.md) behind two plain functions,
// so that no CUDA header of vla's meets torch's headers in one translation unit. Defined in
// cuda_ops.cuh, compiled once per token type (cuda_ops_{f32,f16,bf16}.cu, by nvcc).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include <vla/config.hpp>
#include <vla/layout.hpp>

namespace vla_torch {

/// vla::forward<backend::Cuda, Op> on `stream`, the path chosen by vla (Path::automatic: for VLA
/// chunked from 256 tokens, docs/cuda.md). host_cu_seqlens: a host copy of a.cu_seqlens, or null.
/// Returns "" on success, else the Status's message (nothing was launched).
template <class Op, class In>
std::string forward_on_gpu(const vla::ForwardArgs<In, float>& a, const vla::Config& cfg, cudaStream_t stream,
                           const std::int64_t* host_cu_seqlens);

/// vla::backward<backend::Cuda, Op> (docs/maths.md §9c) on `stream`, default checkpoints. Built for
/// VLA; the baselines get the backend's Status saying that their GPU backward is not built.
template <class Op, class In>
std::string backward_on_gpu(const vla::ForwardArgs<In, float>& a, const vla::GradArgs<In, float>& g,
                            const vla::Config& cfg, cudaStream_t stream, const std::int64_t* host_cu_seqlens);

/// vla::cuda::decode_step<Op> (docs/cuda.md, the decode kernel) on `stream`: q, k, u [batch, heads, dk],
/// v, o [batch, heads, dv], beta [batch, heads]; `state` (every part of the op's) updated in place.
template <class Op, class In>
std::string decode_on_gpu(std::int64_t batch, std::int64_t heads, std::int64_t dk, std::int64_t dv, const In* q,
                          const In* k, const In* v, const In* u, const In* beta, In* o,
                          const vla::StateBuffers<float>& state, const vla::Config& cfg, cudaStream_t stream);

}  // namespace vla_torch
