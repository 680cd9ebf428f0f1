// Experiment 1b: the state-norm claim in the paper's own setting, through the library's TinyLM
// (vla/models/tinylm.hpp): the authors' model (notebooks/07: d_model 128, 4 heads of 32, 2 layers,
// d_ff 256, vocab 128, learned positions, biases, VLA's penalty direction projected from the raw keys
// and its output LayerNorm), their initialisation (every Linear and Embedding weight N(0, 0.02²),
// biases 0; TinyLMWeights::random), T random tokens, and their measurement: the last block's ‖S_T‖_F
// averaged over heads (their `S_norm`). Linear attention's floor is their 1e-6; VLA has its defaults.
// The authors' own classes were run on the same question on the device machine
// (tools/parity/state_norm_authors.py); docs/experiments.md §1b puts the two side by side.
#include <cstdio>
#include <string>
#include <vector>

#include "common.hpp"
#include "vla/models/tinylm.hpp"

namespace vlaexp {

void run_state_norm_tinylm(const Options& opt) {
  using vla::layers::AttentionKind;
  using Model = vla::models::TinyLM<vla::backend::Cpu, double>;
  const int seeds = 10;
  const std::vector<std::int64_t> cps = {100, 250, 500, 1000, 2000, 4000};
  const std::int64_t T = cps.back();
  const AttentionKind kinds[] = {AttentionKind::linear_attention, AttentionKind::vla, AttentionKind::deltanet};
  // norms[seed][kind][checkpoint]: mean over heads of the last block's ‖S‖_F.
  std::vector<double> norms(static_cast<std::size_t>(seeds * 3) * cps.size());
  auto at = [&](int s, int k, std::size_t c) -> double& { return norms[(static_cast<std::size_t>(s * 3 + k)) * cps.size() + c]; };
  parallel_jobs(seeds * 3, opt.threads, [&](std::int64_t job) {
    const int s = static_cast<int>(job / 3), k = static_cast<int>(job % 3);
    vla::models::TinyLMConfig cfg;  // the notebook's ModelConfig defaults
    cfg.attention = kinds[k];
    if (kinds[k] == AttentionKind::linear_attention) cfg.op.denom_eps = 1e-6;  // their LinearAttn eps
    const Model model(cfg, vla::models::TinyLMWeights<double>::random(cfg, seed_of("tinylm_weights", static_cast<std::uint64_t>(s * 3 + k))));
    Rng r(seed_of("tinylm_tokens", static_cast<std::uint64_t>(s)));  // the same tokens for every kind
    std::vector<std::int64_t> tokens(static_cast<std::size_t>(T));
    for (auto& t : tokens) t = r.below(cfg.vocab_size);
    auto cache = model.make_cache(1);
    std::vector<Model::Snapshot> snaps;
    model.prefill(tokens, cache, 0, cps, &snaps);
    for (std::size_t c = 0; c < cps.size(); ++c) {
      double sum = 0;
      for (const auto& head : snaps[c].layers.back()) sum += head.S.norm();
      at(s, k, c) = sum / static_cast<double>(cfg.n_heads);
    }
  });
  Csv csv(opt.out_dir + "/state_norm_tinylm.csv", "seed,t,linear_attention,vla,deltanet,la_over_vla");
  for (int s = 0; s < seeds; ++s)
    for (std::size_t c = 0; c < cps.size(); ++c) csv.row(s, cps[c], at(s, 0, c), at(s, 1, c), at(s, 2, c), at(s, 0, c) / at(s, 1, c));
  Table t({"T", "‖S‖_F linear attn.", "‖S‖_F VLA", "‖S‖_F DeltaNet (β = sigmoid(W_β x))", "LA / VLA (paper: 109× at 1,000)",
           "min–max LA / VLA"});
  for (std::size_t c = 0; c < cps.size(); ++c) {
    std::vector<double> la, v, dn, ratio;
    for (int s = 0; s < seeds; ++s) {
      la.push_back(at(s, 0, c));
      v.push_back(at(s, 1, c));
      dn.push_back(at(s, 2, c));
      ratio.push_back(at(s, 0, c) / at(s, 1, c));
    }
    const Stats st = stats(ratio);
    t.row({grouped(cps[c]), pm(stats(la)), pm(stats(v)), pm(stats(dn)), (cps[c] == 1000 ? "**" + pm(st) + "**" : pm(st)),
           "[" + fmt(st.min) + ", " + fmt(st.max) + "]"});
  }
  t.write(opt, "state_norm_tinylm",
          "The authors' TinyLM and initialisation (vla::models::TinyLM, TinyLMWeights::random), float64, seeds 0–9 (new "
          "weights and tokens each), the last block's ‖S‖_F averaged over its 4 heads, mean ± sample sd over seeds.");
  std::printf("state_norm_tinylm: LA/VLA at T = 1,000: %s\n", [&] {
    std::vector<double> r;
    for (int s = 0; s < seeds; ++s) r.push_back(at(s, 0, 3) / at(s, 1, 3));
    return pm(stats(r));
  }().c_str());
}

}  // namespace vlaexp
