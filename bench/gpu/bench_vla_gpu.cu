// bench/gpu/bench_vla_gpu.cu — GPU timings of the fused recurrent kernels (CUDA events, warm-up,
// median of repeats; see bench/gpu/RESULTS.md). No Google Benchmark: the GPU machine has none.
//
//   vla_gpu_bench [--quick] [--only-decode | --only-forward | --only-backward] [--few-heads] [--keep-pool] [--csv FILE]
//   --few-heads: only the B = 4, H = 1 forward rows; --keep-pool: the device's default memory pool keeps
//   freed memory (release threshold = max), as a caching allocator would, for the workspace that
//   the time split takes with cudaMallocAsync on every call.
//
// Forward: VLA, linear attention and DeltaNet, bf16 tokens, d = 64, at B = 8, H = 16 and at the
// paper's B = 4, H = 1, T ∈ {1k, 4k, 16k, 64k}. Decode: head-steps/s for B·H ∈ {1k, 16k}, states in
// HBM (several pools rotated so the working set is well over the L2), against the device-to-device
// copy bandwidth measured in the same run. Backward: the VLA backward (vla/cuda/backward.cuh) beside
// the recurrent forward of the same shape, timed in the same process.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <vla/cuda/vla_cuda.cuh>

namespace {

#define CK(call)                                                                                     \
  do {                                                                                               \
    const cudaError_t e_ = (call);                                                                   \
    if (e_ != cudaSuccess) {                                                                         \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      std::exit(1);                                                                                  \
    }                                                                                                \
  } while (0)

using In = __nv_bfloat16;

#ifndef VLA_BENCH_TAG
#define VLA_BENCH_TAG ""
#endif
// "ours_<op>" in the CSV, or "ours_<op>@<tag>" for a variant build (cmake VLA_GPU_VARIANTS).
std::string op_key(const char* op) {
  std::string k = std::string("ours_") + op;
  if (VLA_BENCH_TAG[0]) k += std::string("@") + VLA_BENCH_TAG;
  return k;
}

__device__ inline float hash01(std::uint64_t i, std::uint32_t seed) {
  std::uint64_t x = i * 0x9E3779B97F4A7C15ull + seed * 0xD1B54A32D192ED03ull;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return static_cast<float>(x >> 40) * (1.f / 16777216.f);
}
// Random tokens, never zeros: value = lo + (hi − lo)·U.
__global__ void fill(In* x, std::int64_t n, std::uint32_t seed, float lo, float hi) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x)
    x[i] = __float2bfloat16_rn(lo + (hi - lo) * hash01(i, seed));
}
void fill_random(In* x, std::int64_t n, std::uint32_t seed, float lo, float hi) {
  fill<<<2048, 256>>>(x, n, seed, lo, hi);
  CK(cudaGetLastError());
}

struct Timer {
  cudaEvent_t a, b;
  Timer() {
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
  }
  ~Timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  template <class F>
  float ms(F&& f) {
    CK(cudaEventRecord(a));
    f();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float t = 0;
    CK(cudaEventElapsedTime(&t, a, b));
    return t;
  }
};

float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Median ms of f() after one warm-up; repeats sized to ~0.3 s, 3 to 25.
template <class F>
float time_median(F&& f, int max_reps = 25) {
  Timer t;
  const float warm = t.ms(f);
  const int reps = std::max(3, std::min(max_reps, static_cast<int>(300.f / std::max(warm, 1e-3f))));
  std::vector<float> v;
  for (int i = 0; i < reps; ++i) v.push_back(t.ms(f));
  return median(v);
}

void check(const vla::cuda::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, s.message.c_str());
    std::exit(1);
  }
}

FILE* g_csv = nullptr;
bool g_few_heads = false;

template <class Op>
float forward_ms(const vla::ForwardArgs<In, float>& a, int chunk = 0, vla::Path path = vla::Path::recurrent,
                 int time_split = 0) {
  vla::cuda::Options opt;
  opt.chunk = chunk;
  opt.path = path;
  opt.time_split = time_split;
  check(vla::forward<vla::backend::Cuda, Op>(a, vla::Config{}, cudaStream_t{}, opt), Op::name);  // first: also a check
  CK(cudaDeviceSynchronize());
  return time_median([&] { check(vla::forward<vla::backend::Cuda, Op>(a, vla::Config{}, cudaStream_t{}, opt), Op::name); });
}

void bench_forward(bool quick) {
  const int d = 64;
  const std::int64_t Ts[] = {1024, 4096, 16384, 65536};
  const std::int64_t Tmax = quick ? 4096 : 65536;
  std::printf("\n== forward, bf16 tokens, float state, d = %d (median ms; M tokens/s = B·T / time)\n", d);
  std::printf("%-3s %-3s %-6s | %-22s | %-22s | %-22s | %-22s | %s\n", "B", "H", "T", "vla ms (Mtok/s)",
              "vla chunked ms (Mtok/s)", "linear_attn ms (Mtok/s)", "deltanet ms (Mtok/s)", "vla us/step");
  for (const std::pair<int, int>& bh : {std::pair<int, int>{8, 16}, std::pair<int, int>{4, 1}}) {
    const int B = bh.first, H = bh.second;
    if (g_few_heads && H != 1) continue;
    const std::int64_t nk = B * Tmax * H * d;
    In *q, *k, *v, *u, *beta, *o;
    CK(cudaMalloc(&q, nk * sizeof(In)));
    CK(cudaMalloc(&k, nk * sizeof(In)));
    CK(cudaMalloc(&v, nk * sizeof(In)));
    CK(cudaMalloc(&u, nk * sizeof(In)));
    CK(cudaMalloc(&o, nk * sizeof(In)));
    CK(cudaMalloc(&beta, B * Tmax * H * sizeof(In)));
    fill_random(q, nk, 1, 0.05f, 1.05f);
    fill_random(k, nk, 2, 0.05f, 1.05f);
    fill_random(v, nk, 3, -1.f, 1.f);
    fill_random(u, nk, 4, -1.f, 1.f);
    fill_random(beta, B * Tmax * H, 5, 0.1f, 0.9f);
    CK(cudaDeviceSynchronize());
    for (std::int64_t T : Ts) {
      if (T > Tmax) continue;
      vla::ForwardArgs<In, float> a;
      a.batch = B, a.seq_len = T, a.heads = H, a.dk = d, a.dv = d;
      a.q = q, a.k = k, a.v = v, a.u = u, a.beta = beta, a.o = o;
      const float t_vla = forward_ms<vla::op::Vla>(a);
      const float t_ch = forward_ms<vla::op::Vla>(a, 0, vla::Path::chunked);
      const float t_la = forward_ms<vla::op::LinearAttention>(a);
      const float t_dn = forward_ms<vla::op::DeltaNet>(a);
      auto mtok = [&](float ms) { return B * T / (ms * 1e-3) / 1e6; };
      std::printf("%-3d %-3d %-6lld | %9.3f (%9.2f) | %9.3f (%9.2f) | %9.3f (%9.2f) | %9.3f (%9.2f) | %.3f\n", B, H,
                  (long long)T, t_vla, mtok(t_vla), t_ch, mtok(t_ch), t_la, mtok(t_la), t_dn, mtok(t_dn), t_vla * 1e3 / T);
      const char* names[] = {"vla", "vla_chunked", "linear_attention", "deltanet"};
      const float ts[] = {t_vla, t_ch, t_la, t_dn};
      for (int i = 0; i < 4; ++i)
        if (g_csv)
          std::fprintf(g_csv, "forward,%s,%d,%d,%lld,%d,bf16,%.6f,%.1f\n", op_key(names[i]).c_str(), B, H, (long long)T, d, ts[i],
                       B * T / (ts[i] * 1e-3));
      if (H == 1) {  // few chains: the time split (docs/maths.md §4b), spans on the automatic path
        std::printf("   time split (B=%d H=%d T=%lld), ms:", B, H, (long long)T);
        for (int R : {8, 16, 32, 64}) {
          if (R * 16 > T) continue;
          const float t_sp = forward_ms<vla::op::Vla>(a, 0, vla::Path::automatic, R);
          std::printf("  R=%d %.3f", R, t_sp);
          if (g_csv)
            std::fprintf(g_csv, "forward,ours_vla_split%d,%d,%d,%lld,%d,bf16,%.6f,%.1f\n", R, B, H, (long long)T, d, t_sp,
                         B * T / (t_sp * 1e-3));
        }
        std::printf("\n");
      }
      std::fflush(stdout);
    }
    // The chunk size (tokens staged per shared-memory round) at one shape: what it costs.
    if (B == 8) {
      vla::ForwardArgs<In, float> a;
      const std::int64_t T = quick ? 4096 : 16384;
      a.batch = B, a.seq_len = T, a.heads = H, a.dk = d, a.dv = d;
      a.q = q, a.k = k, a.v = v, a.u = u, a.beta = beta, a.o = o;
      std::printf("   chunk sweep (B=%d H=%d T=%lld), ms:", B, H, (long long)T);
      for (int c : {16, 32, 64}) std::printf("  vla C=%d %.3f", c, forward_ms<vla::op::Vla>(a, c));
      for (int c : {16, 32, 64}) std::printf("  la C=%d %.3f", c, forward_ms<vla::op::LinearAttention>(a, c));
      for (int c : {16, 32, 64}) std::printf("  dn C=%d %.3f", c, forward_ms<vla::op::DeltaNet>(a, c));
      std::printf("\n");
    }
    cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(u), cudaFree(o), cudaFree(beta);
  }
}

/// The VLA backward (all four token gradients and the initial state's) beside the recurrent and
/// the chunked forward at the same shape; checkpoint intervals 64 (default) and 256.
void bench_backward(bool quick) {
  const int d = 64;
  const std::int64_t Ts[] = {1024, 4096, 16384, 65536};
  const std::int64_t Tmax = quick ? 4096 : 65536;
  std::printf("\n== backward (VLA), bf16 tokens, float state, d = %d (median ms)\n", d);
  std::printf("%-3s %-3s %-6s | %-12s | %-12s | %-14s | %-14s | %s\n", "B", "H", "T", "fwd recur.", "fwd chunked",
              "bwd (ckpt 64)", "bwd (ckpt 256)", "bwd / fwd recurrent");
  for (const std::pair<int, int>& bh : {std::pair<int, int>{8, 16}, std::pair<int, int>{4, 1}}) {
    const int B = bh.first, H = bh.second;
    if (g_few_heads && H != 1) continue;
    const std::int64_t nk = B * Tmax * H * d;
    In *q, *k, *v, *u, *o, *dO, *dq, *dk, *dv, *du;
    for (In** x : {&q, &k, &v, &u, &o, &dO, &dq, &dk, &dv, &du}) CK(cudaMalloc(x, nk * sizeof(In)));
    float* d0;
    CK(cudaMalloc(&d0, std::size_t(B) * H * (2 * d * d + d) * sizeof(float)));
    fill_random(q, nk, 1, 0.05f, 1.05f);
    fill_random(k, nk, 2, 0.05f, 1.05f);
    fill_random(v, nk, 3, -1.f, 1.f);
    fill_random(u, nk, 4, -1.f, 1.f);
    fill_random(dO, nk, 6, -1.f, 1.f);
    CK(cudaDeviceSynchronize());
    for (std::int64_t T : Ts) {
      if (T > Tmax) continue;
      vla::ForwardArgs<In, float> a;
      a.batch = B, a.seq_len = T, a.heads = H, a.dk = d, a.dv = d;
      a.q = q, a.k = k, a.v = v, a.u = u, a.o = o;
      vla::GradArgs<In, float> g;
      g.d_o = dO, g.d_q = dq, g.d_k = dk, g.d_v = dv, g.d_u = du;
      g.d_initial_state = {d0, d0 + std::size_t(B) * H * d * d, d0 + std::size_t(B) * H * 2 * d * d, nullptr};
      const float t_f = forward_ms<vla::op::Vla>(a);
      const float t_c = forward_ms<vla::op::Vla>(a, 0, vla::Path::chunked);
      float t_b[2];
      const int cks[] = {64, 256};
      for (int i = 0; i < 2; ++i) {
        vla::cuda::BackwardOptions opt;
        opt.checkpoint = cks[i];
        auto run = [&] { check(vla::backward<vla::backend::Cuda, vla::op::Vla>(a, g, vla::Config{}, cudaStream_t{}, opt), "backward"); };
        run();
        CK(cudaDeviceSynchronize());
        t_b[i] = time_median(run);
        if (g_csv)
          std::fprintf(g_csv, "backward,%s_ckpt%d,%d,%d,%lld,%d,bf16,%.6f,%.1f\n", op_key("vla").c_str(), cks[i], B, H,
                       (long long)T, d, t_b[i], B * T / (t_b[i] * 1e-3));
      }
      if (g_csv)
        std::fprintf(g_csv, "backward,%s_forward_recurrent,%d,%d,%lld,%d,bf16,%.6f,%.1f\n", op_key("vla").c_str(), B, H,
                     (long long)T, d, t_f, B * T / (t_f * 1e-3));
      std::printf("%-3d %-3d %-6lld | %12.3f | %12.3f | %14.3f | %14.3f | %.2f× (best)\n", B, H, (long long)T, t_f, t_c,
                  t_b[0], t_b[1], std::min(t_b[0], t_b[1]) / t_f);
      std::fflush(stdout);
    }
    for (In* x : {q, k, v, u, o, dO, dq, dk, dv, du}) cudaFree(x);
    cudaFree(d0);
  }
}

float copy_bandwidth_GBps() {
  const std::size_t bytes = std::size_t(2) << 30;
  void *a, *b;
  CK(cudaMalloc(&a, bytes));
  CK(cudaMalloc(&b, bytes));
  CK(cudaMemset(a, 1, bytes));
  const float ms = time_median([&] { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); }, 10);
  cudaFree(a), cudaFree(b);
  return 2.0 * bytes / (ms * 1e-3) / 1e9;  // bytes read + bytes written
}

template <class Op>
void bench_decode_op(std::int64_t B, std::int64_t H, int d, float copy_GBps) {
  // Replicas of the pool, rotated, so consecutive steps never find their states in the L2.
  const std::int64_t heads = B * H;
  const double state_bytes = double(heads) * (d * d + d * d + d) * 4;
  const int R = std::max(2, static_cast<int>(std::ceil(4 * 60e6 / state_bytes)));
  const std::int64_t slots = R * B;
  float *A = nullptr, *S = nullptr, *z = nullptr;
  std::int64_t* steps = nullptr;
  if (Op::uses_A) CK(cudaMalloc(&A, slots * H * d * d * sizeof(float)));
  CK(cudaMalloc(&S, slots * H * d * d * sizeof(float)));
  if (Op::uses_z) CK(cudaMalloc(&z, slots * H * d * sizeof(float)));
  if (Op::uses_steps) CK(cudaMalloc(&steps, slots * H * sizeof(std::int64_t)));
  check(vla::cuda::init_states({A, S, z, steps}, slots * H, d, d, vla::Config{}, cudaStream_t{}), "init_states");
  In *q, *k, *v, *u, *beta, *o;
  const std::int64_t nk = heads * d;
  CK(cudaMalloc(&q, nk * sizeof(In)));
  CK(cudaMalloc(&k, nk * sizeof(In)));
  CK(cudaMalloc(&v, nk * sizeof(In)));
  CK(cudaMalloc(&u, nk * sizeof(In)));
  CK(cudaMalloc(&o, nk * sizeof(In)));
  CK(cudaMalloc(&beta, heads * sizeof(In)));
  fill_random(q, nk, 11, 0.05f, 1.05f);
  fill_random(k, nk, 12, 0.05f, 1.05f);
  fill_random(v, nk, 13, -1.f, 1.f);
  fill_random(u, nk, 14, -1.f, 1.f);
  fill_random(beta, heads, 15, 0.1f, 0.9f);
  std::vector<std::int32_t*> idx(R);
  for (int r = 0; r < R; ++r) {
    std::vector<std::int32_t> h(B);
    for (std::int64_t n = 0; n < B; ++n) h[n] = static_cast<std::int32_t>(r * B + n);
    CK(cudaMalloc(&idx[r], B * sizeof(std::int32_t)));
    CK(cudaMemcpy(idx[r], h.data(), B * sizeof(std::int32_t), cudaMemcpyHostToDevice));
  }
  vla::cuda::DecodeArgs<In> da;
  da.batch = B, da.heads = H, da.dk = d, da.dv = d;
  da.q = q, da.k = k, da.v = v, da.u = Op::uses_u ? u : nullptr, da.beta = Op::uses_beta ? beta : nullptr, da.o = o;
  da.state = {A, S, z, steps};
  da.pool_size = slots;
  const int iters = 8 * R;
  cudaStream_t stream;
  CK(cudaStreamCreate(&stream));  // blocking: ordered with the timer's events on the legacy stream
  auto run = [&] {
    for (int i = 0; i < iters; ++i) {
      da.state_index = idx[i % R];
      check(vla::cuda::decode_step<Op>(da, vla::Config{}, stream), "decode_step");
    }
  };
  const double bytes = double(heads) * 2.0 * ((Op::uses_A ? d * d : 0) + d * d) * 4.0;  // read + write A and S
  auto report = [&](float ms, const char* how, const std::string& key) {
    const double gbps = bytes / (ms * 1e-3) / 1e9;
    std::printf("%-18s B·H %-6lld | %-13s | %8.2f us/step | %8.3f G head-steps/s | %7.0f GB/s | %5.1f %% of copy\n", Op::name,
                (long long)heads, how, ms * 1e3, heads / (ms * 1e-3) / 1e9, gbps, 100.0 * gbps / copy_GBps);
    if (g_csv)
      std::fprintf(g_csv, "decode,%s,%lld,%lld,1,%d,bf16,%.6f,%.1f,%.1f,%.4f\n", key.c_str(), (long long)B, (long long)H, d, ms,
                   heads / (ms * 1e-3), gbps, gbps / copy_GBps);
  };
  // (1) one decode_step call per step, as a host loop issues them (host checks + launch each time);
  report(time_median(run, 9) / iters, "calls", op_key(Op::name));
  // (2) the same calls captured once in a CUDA graph and replayed: the GPU time of the steps.
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  run();
  CK(cudaStreamEndCapture(stream, &graph));
  CK(cudaGraphInstantiate(&exec, graph, 0));
  report(time_median([&] { CK(cudaGraphLaunch(exec, stream)); }, 9) / iters, "graph replay", op_key(Op::name) + " (graph)");
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  for (auto p : idx) cudaFree(p);
  cudaFree(A), cudaFree(S), cudaFree(z), cudaFree(steps);
  cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(u), cudaFree(o), cudaFree(beta);
}

void bench_decode(float copy_GBps) {
  std::printf("\n== decode step, d = 64, H = 16, bf16 tokens, float states in HBM (bytes: read + write of A and S)\n");
  for (std::int64_t heads : {1024, 16384}) {
    const std::int64_t H = 16, B = heads / H;
    bench_decode_op<vla::op::Vla>(B, H, 64, copy_GBps);
    bench_decode_op<vla::op::LinearAttention>(B, H, 64, copy_GBps);
    bench_decode_op<vla::op::DeltaNet>(B, H, 64, copy_GBps);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, do_decode = true, do_forward = true, do_backward = true;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    if (!std::strcmp(argv[i], "--only-decode")) do_forward = do_backward = false;
    if (!std::strcmp(argv[i], "--only-forward")) do_decode = do_backward = false;
    if (!std::strcmp(argv[i], "--only-backward")) do_decode = do_forward = false;
    if (!std::strcmp(argv[i], "--csv") && i + 1 < argc) g_csv = std::fopen(argv[++i], "w");
    if (!std::strcmp(argv[i], "--few-heads")) g_few_heads = true;
    if (!std::strcmp(argv[i], "--keep-pool")) {
      cudaMemPool_t pool;
      CK(cudaDeviceGetDefaultMemPool(&pool, 0));
      std::uint64_t keep = ~std::uint64_t(0);
      CK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
      std::printf("default memory pool: release threshold = max (freed memory is kept)\n");
    }
  }
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device: nothing to time\n");
    return 77;
  }
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, %.0f MB L2; kernels: %s (VLA_CUDA_VLA_S_BUDGET=%d, VLA_CUDA_DECODE_MIN_BLOCKS=%d, "
              "VLA_CUDA_DECODE_WARP=%d, VLA_CUDA_BASELINE_SINGLE_ROLE=%d)\n",
              prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6, VLA_BENCH_TAG[0] ? VLA_BENCH_TAG : "default",
              VLA_CUDA_VLA_S_BUDGET, VLA_CUDA_DECODE_MIN_BLOCKS, VLA_CUDA_DECODE_WARP, VLA_CUDA_BASELINE_SINGLE_ROLE);
  const float copy = copy_bandwidth_GBps();
  std::printf("device-to-device copy: %.0f GB/s (bytes read + written)\n", copy);
  if (g_csv) std::fprintf(g_csv, "copy,cudaMemcpyD2D,0,0,0,0,-,0,0,%.1f,1\n", copy);
  if (do_decode) bench_decode(copy);
  if (do_forward) bench_forward(quick);
  if (do_backward) bench_backward(quick);
  if (g_csv) std::fclose(g_csv);
  return 0;
}
