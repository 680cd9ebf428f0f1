// vla/cuda/vla_cuda.cuh — the CUDA backend of vla (include from .cu files only).
//
//   #include <vla/cuda/vla_cuda.cuh>
//   vla::cuda::Status st = vla::forward<vla::backend::Cuda>(args, cfg, stream);      // VLA
//   st = vla::forward<vla::backend::Cuda, vla::op::DeltaNet>(args, cfg, stream);     // a baseline
//   st = vla::cuda::decode_step<vla::op::Vla>(decode_args, cfg, stream);            // T = 1, in place
//   st = vla::backward<vla::backend::Cuda>(args, grads, cfg, stream);                // gradients (VLA)
//   vla::cuda::DeviceStates::create(slots, H, dk, dv, cfg, stream, pool);             // a fresh state pool
//
// See docs/cuda.md for a runnable example and vla/cuda/README.md for how the kernel works.
#pragma once

#include "vla/backend/backend.hpp"
#include "vla/cuda/backward.cuh"
#include "vla/cuda/decode.cuh"
#include "vla/cuda/forward.cuh"
#include "vla/cuda/instances.cuh"
#include "vla/cuda/states.cuh"
#include "vla/cuda/status.cuh"

// With VLA_CUDA_EXTERN_INSTANCES defined, the kernels come from a library that instantiated them
// (vla/cuda/instances.cuh; the build's vla::cuda_instances target) and are not compiled here.
#if defined(VLA_CUDA_EXTERN_INSTANCES)
VLA_CUDA_FOR_EACH_INSTANCE(VLA_CUDA_EXTERN_INSTANCES_OF)
#endif

namespace vla {

/// backend::Cuda: device pointers, a stream, a Status back (see vla/cuda/forward.cuh).
template <>
struct BackendTraits<backend::Cuda> {
  template <class Op, class In>
  static cuda::Status forward(const ForwardArgs<In, float>& args, const Config& cfg, cudaStream_t stream) {
    return cuda::forward<Op, In>(args, cfg, stream);
  }
  template <class Op, class In>
  static cuda::Status forward(const ForwardArgs<In, float>& args, const Config& cfg, cudaStream_t stream,
                              const cuda::Options& options) {
    return cuda::forward<Op, In>(args, cfg, stream, options);
  }
  /// The backward (vla/cuda/backward.cuh; VLA on the GPU).
  template <class Op, class In>
  static cuda::Status backward(const ForwardArgs<In, float>& args, const GradArgs<In, float>& grads, const Config& cfg,
                               cudaStream_t stream, const cuda::BackwardOptions& options = {}) {
    return cuda::backward<Op, In>(args, grads, cfg, stream, options);
  }
};

}  // namespace vla
