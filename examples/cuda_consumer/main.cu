// A downstream .cu file: a bf16 VLA forward on the GPU (docs/cuda.md). Without a GPU it says so and
// exits 0: building it is the check.
#include <cuda_bf16.h>

#include <cstdio>
#include <vector>

#include <vla/cuda/vla_cuda.cuh>

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("vla cuda consumer: built; no GPU here, nothing run\n");
    return 0;
  }
  const int B = 2, T = 300, H = 4, d = 64;
  const size_t n = size_t(B) * T * H * d;
  std::vector<__nv_bfloat16> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = __float2bfloat16(0.5f + 0.001f * float(i % 997));
  __nv_bfloat16 *q, *k, *v, *u, *o;
  for (auto** p : {&q, &k, &v, &u, &o}) cudaMalloc(p, n * sizeof(__nv_bfloat16));
  for (auto* p : {q, k, v, u}) cudaMemcpy(p, host.data(), n * sizeof(__nv_bfloat16), cudaMemcpyHostToDevice);
  vla::ForwardArgs<__nv_bfloat16, float> a;
  a.batch = B, a.seq_len = T, a.heads = H, a.dk = d, a.dv = d;
  a.q = q, a.k = k, a.v = v, a.u = u, a.o = o;
  const vla::cuda::Status st = vla::forward<vla::backend::Cuda>(a, vla::Config{}, cudaStream_t{});
  cudaDeviceSynchronize();
  std::printf("vla cuda consumer: %s\n", st ? "ok" : st.message.c_str());
  for (auto* p : {q, k, v, u, o}) cudaFree(p);
  return st ? 0 : 1;
}
