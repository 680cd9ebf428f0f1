// Catch2 main for the CUDA tests, compiled once. A test binary that defines
// vla_cuda_test_needs_gpu = true reports itself skipped (exit code 77, the tests'
// SKIP_RETURN_CODE) on a machine without a CUDA device.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cuda_runtime.h>

#include <cstdio>

extern const bool vla_cuda_test_needs_gpu;

int main(int argc, char** argv) {
  if (vla_cuda_test_needs_gpu) {
    int devices = 0;
    const cudaError_t e = cudaGetDeviceCount(&devices);
    if (e != cudaSuccess || devices == 0) {
      std::printf("no CUDA device (%s): skipped\n", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
      return 77;
    }
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
      std::printf("device: %s, %d SMs, cc %d.%d\n", prop.name, prop.multiProcessorCount, prop.major, prop.minor);
  }
  return Catch::Session().run(argc, argv);
}
