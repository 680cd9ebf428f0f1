// bench/gpu/bench_tinylm_gpu.cu — the TinyLM on the GPU (vla/cuda/tinylm.cuh): prefill of B = 8
// prompts of T = 4,096 tokens and decode steps of B = 64 sequences, the authors' shape (d_model 128,
// 4 heads of 32, 2 layers, d_ff 256, vocab 128), fp32, random weights as the authors initialise
// them; and one projection GEMM at the model's shape beside a large SGEMM (the issue's "projections
// at ≥ 50 % of the cuBLAS GEMM rate"). CUDA-event timing, median of the repeats. The authors' own
// TinyLM on the same GPU: bench/gpu/tinylm_peer.py (same call in bench/gpu/run_tinylm.sh).
#include <cublas_v2.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include <vla/cuda/tinylm.cuh>

namespace {

using Model = vla::models::TinyLM<vla::backend::Cuda, float>;

template <class Fn>
float median_ms(int reps, Fn&& fn) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    cudaEventRecord(a);
    fn();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

bool ok(const vla::cuda::Status& s, const char* what) {
  if (!s) std::printf("%s: %s\n", what, s.message.c_str());
  return s.ok();
}

}  // namespace

int main() {
  for (auto kind : {vla::layers::AttentionKind::vla, vla::layers::AttentionKind::linear_attention,
                    vla::layers::AttentionKind::deltanet}) {
    vla::models::TinyLMConfig cfg;  // the authors' ModelConfig
    cfg.attention = kind;
    if (kind == vla::layers::AttentionKind::linear_attention) cfg.op.denom_eps = 1e-6;
    Model m;
    if (!ok(Model::create(cfg, vla::models::random_tensors(cfg, 1), nullptr, m), "create")) return 1;
    const char* name = vla::layers::kind_name(kind);
    {
      const int B = 8, T = 4096;
      std::vector<std::int64_t> tokens(static_cast<std::size_t>(B * T));
      for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<std::int64_t>((i * 2654435761u) % cfg.vocab_size);
      Model::Cache c;
      if (!ok(m.make_cache(B, nullptr, c), "cache")) return 1;
      bool good = true;
      auto run = [&] {
        for (int b = 0; b < B; ++b) c.positions[static_cast<std::size_t>(b)] = 0;  // the same prompt again (states carry on: timing only)
        good = good && ok(m.prefill(tokens, B, c, 0, nullptr), "prefill");
      };
      run();
      const float ms = median_ms(5, run);
      std::printf("tinylm_gpu,%s,prefill_B8_T4096_ms,%.3f,tokens_per_s,%.4g\n", name, ms, B * T / (ms * 1e-3));
      if (!good) return 1;
    }
    {
      const int B = 64;
      Model::Cache c;
      if (!ok(m.make_cache(B, nullptr, c), "cache")) return 1;
      std::vector<std::int64_t> prompt(static_cast<std::size_t>(B * 16), 5), next(B, 7), slots(B);
      for (int b = 0; b < B; ++b) slots[static_cast<std::size_t>(b)] = b;
      if (!ok(m.prefill(prompt, B, c, 0, nullptr), "prefill")) return 1;
      for (bool graphs : {false, true}) {
        m.decode_graphs = graphs;
        bool good = true;
        auto step = [&] { good = good && ok(m.decode(next, c, slots, nullptr), "decode"); };
        for (int i = 0; i < 20; ++i) step();
        const float ms = median_ms(200, step);
        std::printf("tinylm_gpu,%s,decode_B64_step_us%s,%.2f,tokens_per_s,%.4g,%s\n", name, graphs ? "_graph" : "_plain", ms * 1e3,
                    B / (ms * 1e-3), graphs ? m.graph_note().c_str() : "plain launches");
        if (!good) return 1;
      }
    }
  }
  // One projection at the model's shape (32,768 rows × 128 → 128) against an 8,192³ SGEMM, same handle settings.
  cublasHandle_t h;
  cublasCreate(&h);
  cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH);
  auto gemm_rate = [&](int M, int N, int K) {
    float *a, *b, *c;
    cudaMalloc(&a, sizeof(float) * M * K);
    cudaMalloc(&b, sizeof(float) * K * N);
    cudaMalloc(&c, sizeof(float) * M * N);
    cudaMemset(a, 0, sizeof(float) * M * K);
    cudaMemset(b, 0, sizeof(float) * K * N);
    const float one = 1, zero = 0;
    auto run = [&] { cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, b, K, a, K, &zero, c, N); };
    run();
    const float ms = median_ms(20, run);
    cudaFree(a), cudaFree(b), cudaFree(c);
    return 2.0 * M * N * K / (ms * 1e-3) * 1e-12;
  };
  const double proj = gemm_rate(32768, 128, 128), ffn = gemm_rate(32768, 256, 128), big = gemm_rate(8192, 8192, 8192);
  std::printf("tinylm_gpu,gemm,projection_32768x128x128_TFLOPs,%.2f,ffn_32768x256x128_TFLOPs,%.2f,sgemm_8192_TFLOPs,%.2f,"
              "projection_fraction,%.2f\n", proj, ffn, big, proj / big);
  cublasDestroy(h);
  return 0;
}
