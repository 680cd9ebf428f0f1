// bench/bench_cpu.cpp — CPU throughput of VLA, linear attention and DeltaNet through the batched
// forward, beside an Eigen float GEMM measured in the same process as this CPU's peak.
//
// Counters: tokens/s (items_per_second, counting every (token, head) step), GFLOP/s by each op's
// own flop count (bench/shapes.hpp; VLA: 12·dk² per step), and frac_gemm_peak = that rate over the
// single-thread Eigen GEMM rate re-measured right before each benchmark (×threads used).
// A 5th argument picks the path: 0 = recurrent (§2, token by token), 1 = chunked (§4, C = 64
// tokens per chunk; VLA and DeltaNet only). VLA's chunked rows also report chunked_GFLOPs and
// frac_gemm_peak_chunked, by the chunked form's own count (12·dk² + 8·C·dk + C²/3 per token).
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <initializer_list>
#include <cmath>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <vla/backward.hpp>
#include <vla/vla.hpp>

#include "shapes.hpp"

namespace {

double g_gemm_peak_flops = 0;  // single-thread Eigen float GEMM, flop/s, measured at start-up

// Best of `reps` timings of 4 products of 512×512 floats. A shared VM's speed drifts over minutes,
// so each BM_Forward re-measures this peak (reps = 3, ~30 ms) right before its own timing.
double measure_gemm_peak(int reps = 5) {
  const int n = 512;
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n), c(n, n);
  c.noalias() = a * b;  // warm-up
  double best = 0;
  for (int rep = 0; rep < reps; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 4; ++i) c.noalias() = a * b;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 4 * 2.0 * n * n * n / s);
  }
  benchmark::DoNotOptimize(c.data());
  return best;
}

void BM_EigenGemm(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n), c(n, n);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * n * n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

struct Buffers {
  std::vector<float> q, k, v, u, beta, o;
};

Buffers make_buffers(std::int64_t bh, std::int64_t t, std::int64_t dk) {
  std::mt19937 gen(42);
  std::normal_distribution<float> nd;
  const std::size_t nk = static_cast<std::size_t>(bh * t * dk);
  Buffers b;
  b.q.resize(nk);
  b.k.resize(nk);
  b.v.resize(nk);
  b.u.resize(nk);
  b.o.resize(nk);
  b.beta.assign(static_cast<std::size_t>(bh * t), 0.5f);
  for (auto* vec : {&b.q, &b.k, &b.v, &b.u})
    for (auto& x : *vec) x = nd(gen);
  vla::elu_plus_one_inplace(b.q.data(), static_cast<std::int64_t>(nk));
  vla::elu_plus_one_inplace(b.k.data(), static_cast<std::int64_t>(nk));
  return b;
}

// One sequence of t tokens over `heads` heads in b's buffers, dk = dv (the layout of vla/layout.hpp).
vla::ForwardArgs<float> args_over(Buffers& b, std::int64_t heads, std::int64_t t, std::int64_t dk) {
  vla::ForwardArgs<float> a;
  a.batch = 1;
  a.seq_len = t;
  a.heads = heads;
  a.dk = a.dv = dk;
  a.q = b.q.data();
  a.k = b.k.data();
  a.v = b.v.data();
  a.u = b.u.data();
  a.beta = b.beta.data();
  a.o = b.o.data();
  return a;
}

template <class Op>
double flops_per_token(std::int64_t dk) {
  if (std::is_same<Op, vla::op::Vla>::value) return vla_bench::vla_flops_per_token(dk);
  if (std::is_same<Op, vla::op::LinearAttention>::value) return vla_bench::linear_flops_per_token(dk);
  return vla_bench::deltanet_flops_per_token(dk);
}

constexpr int kChunk = 64;  // CpuOptions::chunk of the chunked rows

/// The chunked form's flops per token per head (VLA, dv = dk, chunks of c tokens): the dk² work
/// of §2 as matrix products, plus the O(c·dk) intra-chunk products and the c×c LDLᵀ (c³/3 per chunk).
constexpr double vla_chunked_flops_per_token(std::int64_t dk, std::int64_t c) {
  return 12.0 * double(dk) * double(dk) + 8.0 * double(c) * double(dk) + double(c) * double(c) / 3.0;
}

// Arguments: dk, B·H (as B = 1, H = B·H: heads are the independent unit), T, threads,
// path (0 = recurrent, 1 = chunked with CpuOptions::chunk = kChunk).
template <class Op>
void BM_Forward(benchmark::State& state) {
  const std::int64_t dk = state.range(0), bh = state.range(1), t = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  const bool chunked = state.range(4) != 0;
  vla::CpuOptions opt;
  opt.threads = threads;
  opt.path = chunked ? vla::Path::chunked : vla::Path::recurrent;
  opt.chunk = kChunk;
  Buffers b = make_buffers(bh, t, dk);
  const vla::ForwardArgs<float> a = args_over(b, bh, t, dk);
  const vla::Config cfg;
  const double peak = measure_gemm_peak(3);
  for (auto _ : state) {
    vla::forward<vla::backend::Cpu, Op>(a, cfg, opt);
    benchmark::DoNotOptimize(b.o.data());
    benchmark::ClobberMemory();
  }
  const double steps = double(bh) * double(t);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * steps));
  const double flops = steps * flops_per_token<Op>(dk);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  // frac_gemm_peak: achieved flop/s over (threads used × single-thread GEMM peak measured just before).
  state.counters["frac_gemm_peak"] = benchmark::Counter(
      flops / (peak * double(std::min<std::int64_t>(threads, bh))), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["gemm_GFLOP/s"] = peak * 1e-9;
  if (chunked && std::is_same<Op, vla::op::Vla>::value) {
    const double cflops = steps * vla_chunked_flops_per_token(dk, kChunk);
    state.counters["chunked_GFLOPs"] = benchmark::Counter(cflops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["frac_gemm_peak_chunked"] = benchmark::Counter(
        cflops / (peak * double(std::min<std::int64_t>(threads, bh))), benchmark::Counter::kIsIterationInvariantRate);
  }
}

// BM_Forward under another name, so the crossover sweep's rows (BM_Crossover<Op>/...) never
// collide with the grid's (both have dk = 64, T = 1024).
template <class Op>
void BM_Crossover(benchmark::State& state) {
  BM_Forward<Op>(state);
}

void grid_paths(benchmark::internal::Benchmark* b, std::initializer_list<int> paths) {
  for (auto dk : vla_bench::kHeadDims)
    for (auto bh : vla_bench::kBatchHeads)
      for (auto t : vla_bench::kSeqLens)
        for (int threads : {1, 2}) {
          if (bh == 1 && threads == 2) continue;  // one head is one sequential recurrence
          for (int path : paths) b->Args({dk, bh, t, threads, path});  // paths side by side: less drift
        }
  b->ArgNames({"dk", "BH", "T", "threads", "path"})->Unit(benchmark::kMillisecond)->UseRealTime();
}
void grid(benchmark::internal::Benchmark* b) { grid_paths(b, {0, 1}); }          // VLA, DeltaNet
void grid_recurrent(benchmark::internal::Benchmark* b) { grid_paths(b, {0}); }   // linear attention

// Where chunked starts to win (CpuOptions::kChunkedFrom): dk = 64, B·H ∈ {1, 16}, short to mid T.
void crossover(benchmark::internal::Benchmark* b) {
  for (std::int64_t bh : {1, 16})
    for (std::int64_t t : {64, 128, 256, 512, 1024})
      for (int path : {0, 1}) b->Args({64, bh, t, 1, path});
  b->ArgNames({"dk", "BH", "T", "threads", "path"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

// One head, float: the forward (VlaState::step, T steps) beside the backward (vla_backward, docs/maths.md
// §9d: a forward pass keeping checkpoints and step records, then the adjoint), same inputs.
// Arguments: dk (= dv), T, mode (0 = forward; backward with checkpoints every 64 steps and its states
// 1 = undone step by step (BackwardStates::roll_back, the default), 2 = recomputed from each checkpoint).
void BM_SingleHeadVla(benchmark::State& state) {
  const int dk = static_cast<int>(state.range(0)), T = static_cast<int>(state.range(1));
  const bool backward = state.range(2) != 0;
  const auto states = state.range(2) == 2 ? vla::BackwardStates::recompute : vla::BackwardStates::roll_back;
  std::mt19937 rng(7u);
  std::normal_distribution<float> n01;
  Eigen::MatrixXf Q(T, dk), K(T, dk), V(T, dk), U(T, dk), dO(T, dk);
  for (Eigen::MatrixXf* m : {&Q, &K, &V, &U, &dO})
    for (Eigen::Index i = 0; i < m->size(); ++i) m->data()[i] = n01(rng);
  Q = Q.array().exp();  // positive features, as after ELU + 1
  K = K.array().exp();
  const vla::Config cfg;
  const vla::VlaState<float> fresh(dk, dk, cfg);
  const vla::VlaSnapshot<float> init = fresh.save();
  Eigen::VectorXf o(dk);
  // The forward reads each token's vectors contiguously (tokens as columns), as the backward does.
  const Eigen::MatrixXf Qc = Q.transpose(), Kc = K.transpose(), Vc = V.transpose(), Uc = U.transpose();
  for (auto _ : state) {
    if (backward) {
      auto g = vla::vla_backward<float>(init, cfg, Q, K, V, U, dO, nullptr, 64, nullptr, states);
      benchmark::DoNotOptimize(g.dq.data());
    } else {
      vla::VlaState<float> st = fresh;
      for (int t = 0; t < T; ++t) {
        st.step_unchecked(Qc.col(t), Kc.col(t), Vc.col(t), Uc.col(t), o);
      }
      benchmark::DoNotOptimize(o.data());
    }
  }
  state.SetItemsProcessed(state.iterations() * T);
}

// The baselines the same way: the forward (the state's step, T steps) beside linear_attention_backward
// / deltanet_backward (checkpoints every 64 steps; mode 1 = states undone, the default, 2 = recomputed:
// docs/maths.md §9e), one head, float, dk = dv.
template <class Op>
void BM_SingleHeadBaseline(benchmark::State& state) {
  constexpr bool kLinear = std::is_same<Op, vla::op::LinearAttention>::value;
  const int dk = static_cast<int>(state.range(0)), T = static_cast<int>(state.range(1));
  const bool backward = state.range(2) != 0;
  const auto states = state.range(2) == 2 ? vla::BackwardStates::recompute : vla::BackwardStates::roll_back;
  std::mt19937 rng(7u);
  std::normal_distribution<float> n01;
  std::uniform_real_distribution<float> u01(0.1f, 1.f);
  Eigen::MatrixXf Q(T, dk), K(T, dk), V(T, dk), dO(T, dk);
  for (Eigen::MatrixXf* m : {&Q, &K, &V, &dO})
    for (Eigen::Index i = 0; i < m->size(); ++i) m->data()[i] = n01(rng);
  Q = Q.array().exp();  // positive features, as after ELU + 1
  K = K.array().exp();
  Eigen::VectorXf beta(T), o(dk);
  for (int t = 0; t < T; ++t) beta[t] = u01(rng);
  const vla::Config cfg;
  const Eigen::MatrixXf S0 = Eigen::MatrixXf::Zero(dk, dk);
  const Eigen::VectorXf z0 = Eigen::VectorXf::Zero(dk);
  const Eigen::MatrixXf Qc = Q.transpose(), Kc = K.transpose(), Vc = V.transpose();
  for (auto _ : state) {
    if (backward) {
      vla::BaselineGradients<float> g;
      if constexpr (kLinear)
        g = vla::linear_attention_backward<float>(S0, z0, cfg, Q, K, V, dO, nullptr, nullptr, 64, nullptr, states);
      else
        g = vla::deltanet_backward<float>(S0, Q, K, V, beta, dO, nullptr, 64, nullptr, states);
      benchmark::DoNotOptimize(g.dq.data());
    } else if constexpr (kLinear) {
      vla::LinearAttentionState<float> st(dk, dk, cfg);
      for (int t = 0; t < T; ++t) st.step_unchecked(Qc.col(t), Kc.col(t), Vc.col(t), o);
      benchmark::DoNotOptimize(o.data());
    } else {
      vla::DeltaNetState<float> st(dk, dk);
      for (int t = 0; t < T; ++t) st.step_unchecked(Qc.col(t), Kc.col(t), Vc.col(t), beta[t], o);
      benchmark::DoNotOptimize(o.data());
    }
  }
  state.SetItemsProcessed(state.iterations() * T);
}

// The batched API's backward (vla::backward<Cpu, Op>, what a model calls) beside its forward, same
// buffers: one sequence of T tokens, H heads, dk = dv, one thread, every gradient asked for.
// Arguments: dk, H, T, mode (0 = forward, 1 = backward).
template <class Op>
void BM_Batched(benchmark::State& state) {
  const std::int64_t dk = state.range(0), heads = state.range(1), t = state.range(2);
  const bool backward = state.range(3) != 0;
  Buffers b = make_buffers(heads, t, dk);
  for (float& x : b.q) x = std::exp(x);  // positive features, as after ELU + 1
  for (float& x : b.k) x = std::exp(x);
  const vla::ForwardArgs<float> a = args_over(b, heads, t, dk);
  std::vector<float> d_o(b.o.size(), 0.5f), dq(b.q.size()), dkk(b.k.size()), dv(b.v.size()), du(b.u.size()),
      dbeta(b.beta.size());
  vla::GradArgs<float> g;
  g.d_o = d_o.data();
  g.d_q = dq.data();
  g.d_k = dkk.data();
  g.d_v = dv.data();
  if (std::is_same<Op, vla::op::Vla>::value) g.d_u = du.data();
  if (std::is_same<Op, vla::op::DeltaNet>::value) g.d_beta = dbeta.data();
  const vla::Config cfg;
  vla::CpuOptions opt;
  opt.threads = 1;
  opt.path = vla::Path::recurrent;
  for (auto _ : state) {
    if (backward)
      vla::backward<vla::backend::Cpu, Op>(a, g, cfg, opt);
    else
      vla::forward<vla::backend::Cpu, Op>(a, cfg, opt);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * heads * t);
}

}  // namespace

BENCHMARK_TEMPLATE(BM_SingleHeadBaseline, vla::op::LinearAttention)
    ->ArgsProduct({{64}, {2048}, {0, 1, 2}})
    ->ArgNames({"dk", "T", "backward"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_TEMPLATE(BM_SingleHeadBaseline, vla::op::DeltaNet)
    ->ArgsProduct({{64}, {2048}, {0, 1, 2}})
    ->ArgNames({"dk", "T", "backward"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_SingleHeadVla)
    ->ArgsProduct({{32, 64}, {2048}, {0, 1, 2}})
    ->ArgNames({"dk", "T", "backward"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_TEMPLATE(BM_Batched, vla::op::Vla)
    ->ArgsProduct({{64}, {4}, {2048}, {0, 1}})
    ->ArgNames({"dk", "H", "T", "backward"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_TEMPLATE(BM_Batched, vla::op::LinearAttention)
    ->ArgsProduct({{64}, {4}, {2048}, {0, 1}})
    ->ArgNames({"dk", "H", "T", "backward"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_TEMPLATE(BM_Batched, vla::op::DeltaNet)
    ->ArgsProduct({{64}, {4}, {2048}, {0, 1}})
    ->ArgNames({"dk", "H", "T", "backward"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_EigenGemm)->Arg(256)->Arg(512)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Forward, vla::op::Vla)->Apply(grid);
BENCHMARK_TEMPLATE(BM_Forward, vla::op::DeltaNet)->Apply(grid);
BENCHMARK_TEMPLATE(BM_Forward, vla::op::LinearAttention)->Apply(grid_recurrent);  // no chunked path
BENCHMARK_TEMPLATE(BM_Crossover, vla::op::Vla)->Apply(crossover);

int main(int argc, char** argv) {
  g_gemm_peak_flops = measure_gemm_peak();
  std::printf("Eigen float GEMM 512^3, one thread, at start-up: %.1f GFLOP/s (each BM_Forward re-measures it)\n",
              g_gemm_peak_flops * 1e-9);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
