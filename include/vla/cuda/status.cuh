// vla/cuda/status.cuh — what every CUDA entry point of vla returns.
#pragma once

#include <cuda_runtime.h>

#include <string>
#include <utility>

namespace vla {
namespace cuda {

/// The outcome of a CUDA entry point. Argument and configuration errors are found on the host,
/// before any launch, and come back as cudaErrorInvalidValue with a message naming the problem;
/// launch errors come back with the runtime's code and its message. Nothing throws.
struct Status {
  cudaError_t code = cudaSuccess;
  std::string message;

  bool ok() const { return code == cudaSuccess; }
  explicit operator bool() const { return ok(); }

  static Status success() { return {}; }
  static Status invalid(std::string what) { return {cudaErrorInvalidValue, std::move(what)}; }
  /// The error `e` of a runtime call, named with `where`. It is also taken out of the runtime's
  /// last-error slot (cudaGetLastError), so that a reported, non-sticky error such as a failed
  /// allocation does not come back as the launch error of the next, healthy call.
  static Status from_cuda(cudaError_t e, const char* where) {
    if (e == cudaSuccess) return {};
    (void)cudaGetLastError();
    return {e, std::string(where) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")"};
  }
};

}  // namespace cuda
}  // namespace vla
