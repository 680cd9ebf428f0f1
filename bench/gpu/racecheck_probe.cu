// bench/gpu/racecheck_probe.cu — the A-warp → S-warp handoff of the VLA forward kernel
// (recurrent_kernel.cuh) reduced to its barriers and one shared buffer, for compute-sanitizer
// racecheck (bench/gpu/profile_gpu.sh). Not part of the library.
//
// Per chunk `it`, the NA "A warps" pass a named barrier (bar.sync 1, 32·NA) once per token and
// after each, lane 0 of every A warp writes its entry of part[it % RING][token][warp]; the NS
// "S warps" read all of part[(it − 1) % RING] (the previous chunk) and then pass three named
// barriers of their own (bar.sync 2, 32·NS), as the kernel's chunk preparation does; every warp
// passes __syncthreads at the end of the iteration. Exactly the kernel's protocol: a buffer is
// written in iteration it, read in iteration it + 1 and rewritten in iteration it + RING. The
// readers also check every value (chunk, token, warp) they read, so a buffer rewritten before it
// was read would show up as a mismatch count, not only as a racecheck report.
//
// The configurations: the kernel's (16 A warps first, 4 S warps, ring 2: dk = 128, dv = 32), the
// same with the S warps first, with a ring of 3, and with 8 A warps (dk = 64).
#include <cuda_runtime.h>

#include <cstdio>

namespace {

template <int NA, int NS, bool AFirst, int RING>
__global__ void probe(int nchunks, unsigned* mismatches) {
  constexpr int C = 16;
  __shared__ float4 part[RING][C][NA];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool is_a = AFirst ? warp < NA : warp >= NS;
  const int aw = AFirst ? warp : warp - NS;
  unsigned bad = 0;
  if (!is_a) {  // the kernel's prologue: the S warps prepare chunk 0 (two barriers of their own)
    asm volatile("bar.sync 2, %0;\n" ::"r"(32 * NS) : "memory");
    asm volatile("bar.sync 2, %0;\n" ::"r"(32 * NS) : "memory");
  }
  __syncthreads();
  for (int it = 0; it < nchunks + 1; ++it) {
    if (is_a) {
      if (it < nchunks)
        for (int tau = 0; tau < C; ++tau) {
          asm volatile("bar.sync 1, %0;\n" ::"r"(32 * NA) : "memory");
          if (lane == 0) part[it % RING][tau][aw] = make_float4(float(it), float(tau), float(aw), 0.f);
        }
    } else {
      if (it >= 1)
        for (int tau = 0; tau < C; ++tau)
          for (int w = 0; w < NA; ++w) {
            const float4 v = part[(it - 1) % RING][tau][w];
            bad += (v.x != float(it - 1) || v.y != float(tau) || v.z != float(w));
          }
      if (it + 1 < nchunks)
        for (int b = 0; b < 3; ++b) asm volatile("bar.sync 2, %0;\n" ::"r"(32 * NS) : "memory");
    }
    __syncthreads();
  }
  if (bad) atomicAdd(mismatches, bad);
}

template <int NA, int NS, bool AFirst, int RING>
int run(const char* name, unsigned* d) {
  cudaMemset(d, 0, sizeof(unsigned));
  probe<NA, NS, AFirst, RING><<<2, 32 * (NA + NS)>>>(7, d);
  unsigned h = 0;
  const cudaError_t e = cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost);
  std::printf("probe %-44s %s, values read wrong: %u\n", name, e == cudaSuccess ? "ran" : cudaGetErrorString(e), h);
  return e == cudaSuccess && h == 0 ? 0 : 1;
}

}  // namespace

int main() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device\n");
    return 77;
  }
  unsigned* d = nullptr;
  cudaMalloc(&d, sizeof(unsigned));
  int fails = 0;
  fails += run<16, 4, true, 2>("A16 S4, A warps first, ring 2 (dk=128 dv=32)", d);
  fails += run<16, 4, false, 2>("A16 S4, S warps first, ring 2", d);
  fails += run<16, 4, true, 3>("A16 S4, A warps first, ring 3", d);
  fails += run<8, 4, true, 2>("A8 S4, A warps first, ring 2 (dk=64 dv=32)", d);
  fails += run<8, 16, true, 2>("A8 S16, A warps first, ring 2 (dk=64 dv=128)", d);
  cudaFree(d);
  return fails ? 1 : 0;
}
