// bench/bench_layers.cpp — the attention layer (vla/layers/attention.hpp) and the TinyLM
// (vla/models/tinylm.hpp) on the CPU, beside their parts measured in the same process: the layer's
// GEMMs alone (q, k, v, o, and u for VLA) and the op alone on the same shapes. The target
// is layer ≤ 1.5 × (op + GEMMs); bench/RESULTS.md has the ratio per kind.
//
// Shape: the paper's (d_model 128, 4 heads of 32), float, one thread, T tokens of one sequence.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include <vla/models/tinylm.hpp>

namespace {

using vla::layers::AttentionKind;
using Rows = vla::TokenRows<float>;
constexpr int kD = 128, kH = 4;

vla::models::TinyLMConfig model_config(AttentionKind kind) {
  vla::models::TinyLMConfig c;  // the authors' ModelConfig: d_model 128, 4 heads, 2 layers, d_ff 256, vocab 128
  c.attention = kind;
  c.max_seq_len = 8192;
  return c;
}

Rows random_rows(int T, int d, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01;
  Rows x(T, d);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = n01(rng);
  return x;
}

const vla::layers::Attention<vla::backend::Cpu, float>& layer_of(AttentionKind kind) {
  static std::vector<vla::models::TinyLM<vla::backend::Cpu, float>> models = [] {
    std::vector<vla::models::TinyLM<vla::backend::Cpu, float>> m;
    for (AttentionKind k : {AttentionKind::vla, AttentionKind::linear_attention, AttentionKind::deltanet})
      m.emplace_back(model_config(k), vla::models::TinyLMWeights<float>::random(model_config(k), 1));
    return m;
  }();
  return models[static_cast<std::size_t>(kind)].layer(0);
}

// args: kind (0 vla, 1 linear attention, 2 deltanet), T
void BM_LayerPrefill(benchmark::State& state) {
  const auto kind = static_cast<AttentionKind>(state.range(0));
  const int T = static_cast<int>(state.range(1));
  const auto& layer = layer_of(kind);
  const Rows x = random_rows(T, kD, 2);
  Rows y;
  for (auto _ : state) {
    auto cache = layer.make_cache(1);
    layer.prefill(x, cache, 0, y);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * T);
  state.SetLabel(vla::layers::kind_name(kind));
}

// The same layer's parts, each timed on its own: the projections' GEMMs (what Linear::apply does),
// then the op on the projected inputs (what the layer hands it). Parts = the two rows' sum.
void BM_LayerGemms(benchmark::State& state) {
  const auto kind = static_cast<AttentionKind>(state.range(0));
  const int T = static_cast<int>(state.range(1));
  const auto& w = layer_of(kind).weights();
  const Rows x = random_rows(T, kD, 2);
  Rows q, k, v, u, o;
  for (auto _ : state) {
    w.q.apply(x, q);
    w.k.apply(x, k);
    w.v.apply(x, v);
    if (kind == AttentionKind::vla) w.u.apply(k, u);
    if (kind == AttentionKind::deltanet) w.beta.apply(x, u);
    w.o.apply(v, o);
    benchmark::DoNotOptimize(o.data());
  }
  state.SetItemsProcessed(state.iterations() * T);
  state.SetLabel(vla::layers::kind_name(kind));
}

void BM_LayerOp(benchmark::State& state) {
  const auto kind = static_cast<AttentionKind>(state.range(0));
  const int T = static_cast<int>(state.range(1));
  const auto& layer = layer_of(kind);
  const auto in = layer.project(random_rows(T, kD, 2));
  Rows o(T, kD);
  for (auto _ : state) {
    vla::HostStates<float> cache(1, kH, kD / kH, kD / kH);
    vla::ForwardArgs<float> a;
    a.batch = 1, a.seq_len = T, a.heads = kH, a.dk = a.dv = kD / kH;
    a.q = in.q.data(), a.k = in.k.data(), a.v = in.v.data(), a.o = o.data();
    a.u = kind == AttentionKind::vla ? in.u.data() : nullptr;
    a.beta = kind == AttentionKind::deltanet ? in.beta.data() : nullptr;
    a.initial_state = {cache.buffers().A, cache.buffers().S, cache.buffers().z, cache.buffers().steps};
    a.final_state = cache.buffers();
    vla::CpuOptions opt;
    opt.check_positive_definite = false;  // as the layer calls it
    switch (kind) {
      case AttentionKind::vla: vla::forward<vla::backend::Cpu, vla::op::Vla>(a, layer.spec().op, opt); break;
      case AttentionKind::linear_attention:
        vla::forward<vla::backend::Cpu, vla::op::LinearAttention>(a, layer.spec().op, opt);
        break;
      case AttentionKind::deltanet: vla::forward<vla::backend::Cpu, vla::op::DeltaNet>(a, layer.spec().op, opt); break;
    }
    benchmark::DoNotOptimize(o.data());
  }
  state.SetItemsProcessed(state.iterations() * T);
  state.SetLabel(vla::layers::kind_name(kind));
}

// The whole TinyLM (2 layers, FFN, head): prefill of T tokens, tokens/s.
void BM_TinyLMPrefill(benchmark::State& state) {
  const auto kind = static_cast<AttentionKind>(state.range(0));
  const int T = static_cast<int>(state.range(1));
  const auto cfg = model_config(kind);
  const vla::models::TinyLM<vla::backend::Cpu, float> model(cfg, vla::models::TinyLMWeights<float>::random(cfg, 3));
  std::vector<std::int64_t> tokens(static_cast<std::size_t>(T));
  std::mt19937 rng(4);
  for (auto& t : tokens) t = static_cast<std::int64_t>(rng() % static_cast<unsigned>(cfg.vocab_size));
  for (auto _ : state) {
    auto cache = model.make_cache(1);
    benchmark::DoNotOptimize(model.prefill(tokens, cache, 0).data());
  }
  state.SetItemsProcessed(state.iterations() * T);
  state.SetLabel(vla::layers::kind_name(kind));
}

// One decode step of B sequences (after a 64-token prompt each): time per step, tokens/s = B per step.
void BM_TinyLMDecode(benchmark::State& state) {
  const auto kind = static_cast<AttentionKind>(state.range(0));
  const int B = static_cast<int>(state.range(1));
  const auto cfg = model_config(kind);
  const vla::models::TinyLM<vla::backend::Cpu, float> model(cfg, vla::models::TinyLMWeights<float>::random(cfg, 3));
  auto cache = model.make_cache(B);
  std::vector<std::int64_t> slots(static_cast<std::size_t>(B)), tokens(static_cast<std::size_t>(B), 7);
  for (int b = 0; b < B; ++b) {
    slots[static_cast<std::size_t>(b)] = b;
    model.prefill(std::vector<std::int64_t>(64, b % cfg.vocab_size), cache, b);
  }
  std::int64_t steps = 0;
  for (auto _ : state) {
    if (cache.positions[0] + 1 >= cfg.max_seq_len) {  // keep inside the position embedding
      state.PauseTiming();
      for (int b = 0; b < B; ++b) model.reset(cache, b);
      state.ResumeTiming();
    }
    benchmark::DoNotOptimize(model.decode(tokens, cache, slots).data());
    ++steps;
  }
  state.SetItemsProcessed(steps * B);
  state.SetLabel(vla::layers::kind_name(kind));
}

}  // namespace

BENCHMARK(BM_LayerPrefill)->ArgsProduct({{0, 1, 2}, {1024}})->ArgNames({"kind", "T"})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LayerGemms)->ArgsProduct({{0, 1, 2}, {1024}})->ArgNames({"kind", "T"})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LayerOp)->ArgsProduct({{0, 1, 2}, {1024}})->ArgNames({"kind", "T"})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TinyLMPrefill)->ArgsProduct({{0, 1, 2}, {1024}})->ArgNames({"kind", "T"})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TinyLMDecode)->ArgsProduct({{0, 1}, {1, 64}})->ArgNames({"kind", "B"})->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
