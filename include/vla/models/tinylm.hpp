// vla/models/tinylm.hpp — the authors' TinyLM (notebooks/07 of their repository) as a C++ model:
// token + learned position embeddings, n_layers pre-LN blocks (x + attn(LN(x)), then x + FFN(LN(x))
// with FFN = Linear → GELU → Linear), a final LayerNorm and a head tied to the token embedding.
// Loads a model directory (config.json + model.safetensors, tensors named as the PyTorch
// state_dict names them; docs/layers.md), prefills prompts and decodes one token per sequence
// through a per-layer state cache indexed by sequence slot, with snapshots of a slot for rollback.
//
//   auto model = vla::models::TinyLM<vla::backend::Cpu, float>::load("path/to/model");
//   auto cache = model.make_cache(/*slots*/ 4);
//   auto logits = model.prefill({1, 2, 3}, cache, /*slot*/ 0);         // [3, vocab]
//   auto next = model.decode({7}, cache, {0});                           // [1, vocab]
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "vla/io/safetensors.hpp"
#include "vla/io/weights.hpp"
#include "vla/layers/attention.hpp"
#include "vla/layers/dense.hpp"
#include "vla/models/tinylm_config.hpp"

namespace vla {
namespace models {

/// Every parameter of a TinyLM, in PyTorch's layouts.
template <class Scalar>
struct TinyLMWeights {
  struct Block {
    layers::LayerNorm<Scalar> ln1, ln2;
    layers::AttentionWeights<Scalar> attn;
    layers::Linear<Scalar> ff1, ff2;  ///< ff.0 [d_ff, d_model], ff.2 [d_model, d_ff]
  };
  TokenRows<Scalar> tok;   ///< [vocab, d_model]
  TokenRows<Scalar> pos;   ///< [max_seq_len, d_model]
  std::vector<Block> blocks;
  layers::LayerNorm<Scalar> ln_f;
  TokenRows<Scalar> head;  ///< [vocab, d_model]; empty = tied to tok (the authors' model)

  /// From tensors named as the authors' state_dict ("tok.weight", "blocks.0.attn.Wq.weight", …): an
  /// io::Safetensors file or a TensorMap.
  template <class Source>
  static TinyLMWeights read(const Source& f, const TinyLMConfig& c) {
    using N = TinyLMNames;
    TinyLMWeights w;
    w.tok = io::read_matrix<Scalar>(f, N::weight(N::tok()), c.vocab_size, c.d_model);
    w.pos = io::read_matrix<Scalar>(f, N::weight(N::pos()), c.max_seq_len, c.d_model);
    for (std::int64_t i = 0; i < c.n_layers; ++i) {
      Block blk;
      blk.ln1 = io::read_layer_norm<Scalar>(f, N::ln1(i), c.d_model, c.norm_eps);
      blk.ln2 = io::read_layer_norm<Scalar>(f, N::ln2(i), c.d_model, c.norm_eps);
      blk.attn = io::read_attention<Scalar>(f, N::attn(i), c.attention_spec(), N::attention(), c.norm_eps);
      blk.ff1 = io::read_linear<Scalar>(f, N::ff1(i), c.d_ff, c.d_model);
      blk.ff2 = io::read_linear<Scalar>(f, N::ff2(i), c.d_model, c.d_ff);
      w.blocks.push_back(std::move(blk));
    }
    w.ln_f = io::read_layer_norm<Scalar>(f, N::ln_f(), c.d_model, c.norm_eps);
    if (f.contains(N::weight(N::head()))) w.head = io::read_matrix<Scalar>(f, N::weight(N::head()), c.vocab_size, c.d_model);
    return w;
  }

  /// The authors' initialisation (random_tensors: every Linear and Embedding weight N(0, 0.02²),
  /// biases 0, LayerNorms γ = 1, β = 0, head tied): the same weights as the CUDA model gets from
  /// the same seed.
  static TinyLMWeights random(const TinyLMConfig& c, std::uint64_t seed) { return read(random_tensors(c, seed), c); }
};

template <class Backend, class Scalar>
class TinyLM;

/// TinyLM on the CPU backend.
template <class Scalar>
class TinyLM<backend::Cpu, Scalar> {
 public:
  using Rows = TokenRows<Scalar>;
  using Layer = layers::Attention<backend::Cpu, Scalar>;

  /// The per-layer state caches and each slot's position (tokens already in it).
  struct Cache {
    std::vector<HostStates<Scalar>> layers;
    std::vector<std::int64_t> positions;
    std::int64_t slots() const { return static_cast<std::int64_t>(positions.size()); }
  };
  /// One slot of every layer, for rolling a sequence back (rejected speculative tokens).
  struct Snapshot {
    std::vector<std::vector<VlaSnapshot<Scalar>>> layers;  ///< [layer][head]
    std::int64_t position = 0;
  };

  TinyLM(const TinyLMConfig& cfg, TinyLMWeights<Scalar> w) : cfg_(cfg), w_(std::move(w)) {
    cfg.validate();
    using N = TinyLMNames;
    auto shape = [](const Rows& m, std::int64_t r, std::int64_t c, const std::string& what) {
      if (m.rows() != r || m.cols() != c)
        throw std::invalid_argument("vla::models::TinyLM: " + what + " must be [" + std::to_string(r) + ", " +
                                    std::to_string(c) + "]");
      if (!m.allFinite()) throw std::invalid_argument("vla::models::TinyLM: " + what + " holds a NaN or an infinity");
    };
    shape(w_.tok, cfg.vocab_size, cfg.d_model, N::weight(N::tok()));
    shape(w_.pos, cfg.max_seq_len, cfg.d_model, N::weight(N::pos()));
    if (w_.head.size() != 0) shape(w_.head, cfg.vocab_size, cfg.d_model, N::weight(N::head()));
    if (static_cast<std::int64_t>(w_.blocks.size()) != cfg.n_layers)
      throw std::invalid_argument("vla::models::TinyLM: " + std::to_string(w_.blocks.size()) + " blocks for n_layers = " +
                                  std::to_string(cfg.n_layers));
    w_.ln_f.check(N::ln_f(), cfg.d_model);
    for (std::size_t i = 0; i < w_.blocks.size(); ++i) {
      const auto l = static_cast<std::int64_t>(i);
      auto& blk = w_.blocks[i];
      blk.ln1.check(N::ln1(l), cfg.d_model);
      blk.ln2.check(N::ln2(l), cfg.d_model);
      blk.ff1.check(N::ff1(l), cfg.d_ff, cfg.d_model);
      blk.ff2.check(N::ff2(l), cfg.d_model, cfg.d_ff);
      try {
        layers_.emplace_back(cfg.attention_spec(), blk.attn);
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(N::attn(l) + "." + e.what());
      }
    }
  }

  /// A model directory: config.json and model.safetensors (docs/layers.md). A bad directory throws
  /// vla::io::FormatError naming the file and, for a tensor, the tensor.
  static TinyLM load(const std::string& dir) {
    const TinyLMConfig cfg = read_config(dir);
    const io::Safetensors file = io::Safetensors::open(dir + "/model.safetensors");
    try {
      return TinyLM(cfg, TinyLMWeights<Scalar>::read(file, cfg));
    } catch (const std::invalid_argument& e) {
      throw io::FormatError(file.source() + ": " + e.what());
    }
  }

  const TinyLMConfig& config() const { return cfg_; }
  const TinyLMWeights<Scalar>& weights() const { return w_; }
  const Layer& layer(std::size_t i) const { return layers_.at(i); }

  Cache make_cache(std::int64_t slots) const {
    if (slots < 0) throw std::invalid_argument("vla::models::TinyLM::make_cache: slots must be >= 0");
    Cache c;
    for (const Layer& l : layers_) c.layers.push_back(l.make_cache(slots));
    c.positions.assign(static_cast<std::size_t>(slots), 0);
    return c;
  }

  /// The logits of every position of `tokens` ([T, vocab]) continuing slot `slot` of the cache.
  /// With `snapshot_after` (ascending token counts in 1..T) the slot is also saved after each of those
  /// tokens into *snapshots (for rollback of speculative tokens). Checked before anything changes.
  Rows prefill(const std::vector<std::int64_t>& tokens, Cache& cache, std::int64_t slot,
               const std::vector<std::int64_t>& snapshot_after = {}, std::vector<Snapshot>* snapshots = nullptr) const {
    check_cache(cache);
    check_slot(cache, slot, "prefill");
    const std::int64_t T = static_cast<std::int64_t>(tokens.size());
    check_tokens(tokens, cache.positions[static_cast<std::size_t>(slot)], T);
    std::int64_t last = 0;
    for (std::int64_t s : snapshot_after) {
      if (s <= last || s > T)
        throw std::invalid_argument("vla::models::TinyLM::prefill: snapshot_after must be ascending token counts in 1..T");
      last = s;
    }
    if (!snapshot_after.empty() && !snapshots)
      throw std::invalid_argument("vla::models::TinyLM::prefill: snapshot_after given without somewhere to put the snapshots");
    Rows logits(T, cfg_.vocab_size);
    // The prompt runs in pieces that end at the snapshot positions: every layer but the recurrence is
    // position-wise and the recurrence carries its state, so pieces compute what one call would.
    std::int64_t begin = 0;
    std::vector<std::int64_t> ends = snapshot_after;
    if (ends.empty() || ends.back() != T) ends.push_back(T);
    for (std::int64_t end : ends) {
      const std::vector<std::int64_t> piece(tokens.begin() + begin, tokens.begin() + end);
      const std::int64_t pos0 = cache.positions[static_cast<std::size_t>(slot)];
      std::vector<std::int64_t> positions(piece.size());
      for (std::size_t i = 0; i < piece.size(); ++i) positions[i] = pos0 + static_cast<std::int64_t>(i);
      Rows x = embed(piece, positions);
      for (std::size_t l = 0; l < layers_.size(); ++l)
        block(l, x, [&](const Rows& h, Rows& y) { layers_[l].prefill(h, cache.layers[l], slot, y); });
      logits.middleRows(begin, end - begin) = head(x);
      cache.positions[static_cast<std::size_t>(slot)] = pos0 + (end - begin);
      if (snapshots && std::find(snapshot_after.begin(), snapshot_after.end(), end) != snapshot_after.end())
        snapshots->push_back(save(cache, slot));
      begin = end;
    }
    return logits;
  }

  /// One token for each of B sequences: tokens[b] continues slots[b] (distinct). Logits [B, vocab].
  Rows decode(const std::vector<std::int64_t>& tokens, Cache& cache, const std::vector<std::int64_t>& slots) const {
    check_cache(cache);
    if (tokens.size() != slots.size())
      throw std::invalid_argument("vla::models::TinyLM::decode: " + std::to_string(tokens.size()) + " tokens for " +
                                  std::to_string(slots.size()) + " slots");
    std::vector<std::int64_t> pos(slots.size());
    for (std::size_t b = 0; b < slots.size(); ++b) {
      check_slot(cache, slots[b], "decode");
      pos[b] = cache.positions[static_cast<std::size_t>(slots[b])];
      check_tokens({tokens[b]}, pos[b], 1);
    }
    std::vector<std::int64_t> sorted = slots;
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t i = 1; i < sorted.size(); ++i)
      if (sorted[i] == sorted[i - 1])
        throw std::invalid_argument("vla::models::TinyLM::decode: slot " + std::to_string(sorted[i]) + " is given twice");
    Rows x = embed(tokens, pos);
    for (std::size_t l = 0; l < layers_.size(); ++l)
      block(l, x, [&](const Rows& h, Rows& y) { layers_[l].decode(h, cache.layers[l], slots, y); });
    for (std::int64_t s : slots) ++cache.positions[static_cast<std::size_t>(s)];
    return head(x);
  }

  Snapshot save(const Cache& cache, std::int64_t slot) const {
    check_cache(cache);
    check_slot(cache, slot, "save");
    Snapshot s;
    for (const auto& states : cache.layers) {
      std::vector<VlaSnapshot<Scalar>> heads;
      for (std::int64_t h = 0; h < cfg_.n_heads; ++h) heads.push_back(states.get(slot, h));
      s.layers.push_back(std::move(heads));
    }
    s.position = cache.positions[static_cast<std::size_t>(slot)];
    return s;
  }
  /// The slot back to a saved snapshot (of this model); every head is validated before any is set.
  void restore(Cache& cache, std::int64_t slot, const Snapshot& s) const {
    check_cache(cache);
    check_slot(cache, slot, "restore");
    if (s.layers.size() != cache.layers.size() || s.position < 0 || s.position > cfg_.max_seq_len)
      throw std::invalid_argument("vla::models::TinyLM::restore: the snapshot is not one of this model");
    for (const auto& heads : s.layers)
      if (static_cast<std::int64_t>(heads.size()) != cfg_.n_heads)
        throw std::invalid_argument("vla::models::TinyLM::restore: the snapshot is not one of this model");
    // Validate on a scratch cache first (HostStates::set checks each head), then commit.
    for (std::size_t l = 0; l < s.layers.size(); ++l) {
      HostStates<Scalar> scratch = layers_[l].make_cache(1);
      for (std::int64_t h = 0; h < cfg_.n_heads; ++h) scratch.set(0, h, s.layers[l][static_cast<std::size_t>(h)]);
    }
    for (std::size_t l = 0; l < s.layers.size(); ++l)
      for (std::int64_t h = 0; h < cfg_.n_heads; ++h) cache.layers[l].set(slot, h, s.layers[l][static_cast<std::size_t>(h)]);
    cache.positions[static_cast<std::size_t>(slot)] = s.position;
  }
  /// The slot back to empty (fresh states, position 0).
  void reset(Cache& cache, std::int64_t slot) const {
    check_cache(cache);
    check_slot(cache, slot, "reset");
    for (auto& states : cache.layers)
      for (std::int64_t h = 0; h < cfg_.n_heads; ++h) states.reset(slot, h);
    cache.positions[static_cast<std::size_t>(slot)] = 0;
  }

 private:
  void check_cache(const Cache& c) const {
    bool ok = c.layers.size() == layers_.size();
    for (const auto& states : c.layers) ok = ok && states.sequences() == c.slots();
    if (!ok)
      throw std::invalid_argument("vla::models::TinyLM: the cache is not one of this model (use make_cache)");
  }
  static void check_slot(const Cache& c, std::int64_t slot, const char* fn) {
    if (slot < 0 || slot >= c.slots())
      throw std::invalid_argument(std::string("vla::models::TinyLM::") + fn + ": slot " + std::to_string(slot) +
                                  " is out of range (" + std::to_string(c.slots()) + " slots)");
  }
  void check_tokens(const std::vector<std::int64_t>& tokens, std::int64_t pos0, std::int64_t T) const {
    for (std::int64_t t : tokens)
      if (t < 0 || t >= cfg_.vocab_size)
        throw std::invalid_argument("vla::models::TinyLM: token id " + std::to_string(t) + " is outside the vocabulary (0.." +
                                    std::to_string(cfg_.vocab_size - 1) + ")");
    if (pos0 + T > cfg_.max_seq_len)
      throw std::invalid_argument("vla::models::TinyLM: position " + std::to_string(pos0 + T - 1) +
                                  " is past max_seq_len (" + std::to_string(cfg_.max_seq_len) + "): the position embedding ends there");
  }
  // Row i: tok[tokens[i]] + pos[positions[i]] (both checked by the caller).
  Rows embed(const std::vector<std::int64_t>& tokens, const std::vector<std::int64_t>& positions) const {
    Rows x(static_cast<std::int64_t>(tokens.size()), cfg_.d_model);
    for (std::size_t i = 0; i < tokens.size(); ++i)
      x.row(static_cast<Eigen::Index>(i)) = w_.tok.row(tokens[i]) + w_.pos.row(positions[i]);
    return x;
  }
  // x ← x + attn(ln1(x)); x ← x + ff2(GELU(ff1(ln2(x)))).
  template <class AttnFn>
  void block(std::size_t l, Rows& x, AttnFn&& attn) const {
    const auto& b = w_.blocks[l];
    Rows h = x, y;
    b.ln1.apply(h);
    attn(h, y);
    x += y;
    h = x;
    b.ln2.apply(h);
    Rows f;
    b.ff1.apply(h, f);
    layers::gelu_inplace<Scalar>(f);
    b.ff2.apply(f, y);
    x += y;
  }
  Rows head(Rows x) const {
    w_.ln_f.apply(x);
    const Rows& W = w_.head.size() != 0 ? w_.head : w_.tok;
    Rows logits(x.rows(), cfg_.vocab_size);
    logits.noalias() = x * W.transpose();
    return logits;
  }

  TinyLMConfig cfg_;
  TinyLMWeights<Scalar> w_;
  std::vector<Layer> layers_;
};

}  // namespace models
}  // namespace vla
