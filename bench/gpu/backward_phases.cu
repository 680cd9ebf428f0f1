// bench/gpu/backward_phases.cu — where the VLA backward kernel's time goes, phase by phase: the
// kernel compiled with VLA_BACKWARD_PROFILE (vla/cuda/detail/backward_kernel.cuh), whose warps 0
// and 1 add clock64() deltas per phase; printed as cycles per token, averaged over the CTAs.
// A tuning tool (bench/gpu/profile_gpu.sh runs it), not part of the library: the timing hooks cost
// registers and a few percent, so its times are not the bench's.
//
//   vla_backward_phases [B H T d]     defaults: 8 16 4096 64, bf16 tokens, checkpoint 64
#define VLA_BACKWARD_PROFILE 1
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "vla/cuda/backward.cuh"
#include "vla/cuda/vla_cuda.cuh"

namespace {

#define CK(x)                                                                          \
  do {                                                                                 \
    const cudaError_t e_ = (x);                                                        \
    if (e_ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

using In = __nv_bfloat16;

In* upload(std::size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<In> h(n);
  for (auto& x : h) x = __float2bfloat16(d(rng));
  In* p = nullptr;
  CK(cudaMalloc(&p, n * sizeof(In)));
  CK(cudaMemcpy(p, h.data(), n * sizeof(In), cudaMemcpyHostToDevice));
  return p;
}

const char* const kPhase[vla::cuda::detail::kProfPhases] = {
    "init (adjoint state)", "segment: checkpoint + records", "replay: wait, barrier", "replay: A û, A k̂, S k̂",
    "replay: barrier 2", "replay: vector (warp 0)", "replay: barrier 3", "replay: update A, S, record out",
    "reverse B0 (wait)", "reverse P1", "reverse B1", "reverse V1 (warp 0)", "reverse B2", "reverse P2",
    "reverse B3", "reverse V2 (warp 0)", "reverse B4", "reverse P3", "reverse B5 (wait)", "reverse V3 (warp 0)"};

}  // namespace

int main(int argc, char** argv) {
  const int B = argc > 1 ? std::atoi(argv[1]) : 8, H = argc > 2 ? std::atoi(argv[2]) : 16;
  const std::int64_t T = argc > 3 ? std::atoll(argv[3]) : 4096;
  const int d = argc > 4 ? std::atoi(argv[4]) : 64;
  const std::size_t nk = std::size_t(B) * T * H * d, pairs = std::size_t(B) * H;
  std::mt19937 rng(1);
  In* q = upload(nk, rng, 0.05f, 1.05f);
  In* k = upload(nk, rng, 0.05f, 1.05f);
  In* v = upload(nk, rng, -1.f, 1.f);
  In* u = upload(nk, rng, -1.f, 1.f);
  In* dO = upload(nk, rng, -1.f, 1.f);
  In *o, *dq, *dk, *dv, *du;  // o: the forward's argument (checked, not written by the backward)
  for (In** x : {&o, &dq, &dk, &dv, &du}) CK(cudaMalloc(x, nk * sizeof(In)));
  constexpr int NP = vla::cuda::detail::kProfPhases;
  long long* prof = nullptr;
  CK(cudaMalloc(&prof, pairs * 2 * NP * sizeof(long long)));
  CK(cudaMemset(prof, 0, pairs * 2 * NP * sizeof(long long)));
  vla::cuda::detail::backward_profile_buffer() = prof;

  vla::ForwardArgs<In, float> a;
  a.batch = B, a.seq_len = T, a.heads = H, a.dk = d, a.dv = d;
  a.q = q, a.k = k, a.v = v, a.u = u, a.o = o;
  vla::GradArgs<In, float> g;
  g.d_o = dO, g.d_q = dq, g.d_k = dk, g.d_v = dv, g.d_u = du;
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  float ms = 0.f;
  for (int rep = 0; rep < 2; ++rep) {  // the first warms up; the second is reported
    CK(cudaEventRecord(e0));
    const vla::cuda::Status st = vla::cuda::backward<vla::op::Vla, In>(a, g, vla::Config{}, cudaStream_t{});
    CK(cudaEventRecord(e1));
    if (!st.ok()) {
      std::fprintf(stderr, "backward: %s\n", st.message.c_str());
      return 1;
    }
    CK(cudaEventSynchronize(e1));
    CK(cudaEventElapsedTime(&ms, e0, e1));
  }
  std::vector<long long> h(pairs * 2 * NP);
  CK(cudaMemcpy(h.data(), prof, h.size() * sizeof(long long), cudaMemcpyDeviceToHost));
  int clock_khz = 0;
  CK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0));
  std::printf("backward phases: B %d H %d T %lld d %d bf16, checkpoint 64; %.3f ms (forward for checkpoints + "
              "backward, with the timing hooks); SM clock %.2f GHz\n",
              B, H, (long long)T, d, ms, clock_khz * 1e-6);
  std::printf("%-34s %14s %14s\n", "phase", "warp 0 cyc/tok", "warp 1 cyc/tok");
  double tot[2] = {0, 0};
  for (int p = 0; p < NP; ++p) {
    double w[2] = {0, 0};
    for (std::size_t c = 0; c < pairs; ++c)
      for (int r = 0; r < 2; ++r) w[r] += double(h[(c * 2 + r) * NP + p]);
    for (int r = 0; r < 2; ++r) w[r] /= double(pairs) * double(T), tot[r] += w[r];
    std::printf("%-34s %14.1f %14.1f\n", kPhase[p], w[0], w[1]);
  }
  std::printf("%-34s %14.1f %14.1f  (= %.2f µs per token at that clock)\n", "total", tot[0], tot[1],
              tot[0] / (clock_khz * 1e-3));
  return 0;
}
