// vla/cuda/instances.cuh — explicit instantiation of the CUDA entry points, to keep compile times
// down: compile the kernels once, in a few translation units, and declare them extern elsewhere.
//
//   // once per (op, token type), e.g. in vla_instances_vla_bf16.cu:
//   #include <vla/cuda/vla_cuda.cuh>
//   VLA_CUDA_DEFINE_INSTANCES(vla::op::Vla, __nv_bfloat16)
//
//   // everywhere else: compile with -DVLA_CUDA_EXTERN_INSTANCES (vla_cuda.cuh then declares all
//   // nine (op, type) pairs extern), or write VLA_CUDA_EXTERN_INSTANCES_OF(Op, In) yourself.
//
// The build's vla::cuda_instances target does exactly this (cmake/VlaCuda.cmake).
#pragma once

#include "vla/cuda/backward.cuh"
#include "vla/cuda/decode.cuh"
#include "vla/cuda/forward.cuh"

/// X(Op, In) for every (op, token type) the library offers.
#define VLA_CUDA_FOR_EACH_INSTANCE(X)                                                            \
  X(::vla::op::Vla, float) X(::vla::op::Vla, __half) X(::vla::op::Vla, __nv_bfloat16)             \
  X(::vla::op::LinearAttention, float) X(::vla::op::LinearAttention, __half)                    \
  X(::vla::op::LinearAttention, __nv_bfloat16) X(::vla::op::DeltaNet, float)                    \
  X(::vla::op::DeltaNet, __half) X(::vla::op::DeltaNet, __nv_bfloat16)

#define VLA_CUDA_INSTANCES_IMPL_(KW, Op, In)                                                                   \
  KW ::vla::cuda::Status vla::cuda::forward<Op, In>(const ::vla::ForwardArgs<In, float>&, const ::vla::Config&, \
                                                    cudaStream_t, const ::vla::cuda::Options&);                \
  KW ::vla::cuda::Status vla::cuda::decode_step<Op, In>(const ::vla::cuda::DecodeArgs<In>&, const ::vla::Config&, \
                                                        cudaStream_t);                                          \
  KW ::vla::cuda::Status vla::cuda::backward<Op, In>(const ::vla::ForwardArgs<In, float>&,                       \
                                                     const ::vla::GradArgs<In, float>&, const ::vla::Config&,   \
                                                     cudaStream_t, const ::vla::cuda::BackwardOptions&);

/// Instantiates forward, decode_step and backward (and so every kernel, all head dims) for (Op, In).
#define VLA_CUDA_DEFINE_INSTANCES(Op, In) VLA_CUDA_INSTANCES_IMPL_(template, Op, In)
/// Declares them instantiated elsewhere.
#define VLA_CUDA_EXTERN_INSTANCES_OF(Op, In) VLA_CUDA_INSTANCES_IMPL_(extern template, Op, In)
