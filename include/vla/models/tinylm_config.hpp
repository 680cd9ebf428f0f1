// vla/models/tinylm_config.hpp — config.json of a TinyLM model directory (docs/layers.md), shared by
// the CPU model (vla/models/tinylm.hpp) and the CUDA one (vla/cuda/tinylm.cuh). Needs nlohmann_json
// (target vla::io), not Eigen.
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
#include <random>
#include <vector>
#include <sstream>
#include <stdexcept>
#include <string>

#include "vla/config.hpp"
#include "vla/io/names.hpp"        // vla::io::AttentionNames
#include "vla/io/safetensors.hpp"  // vla::io::FormatError
#include "vla/layers/kind.hpp"

namespace vla {
namespace models {

/// config.json of a model directory (keys as written here; docs/layers.md documents the file).
struct TinyLMConfig {
  layers::AttentionKind attention = layers::AttentionKind::vla;
  std::int64_t d_model = 128, n_heads = 4, n_layers = 2, d_ff = 256, vocab_size = 128, max_seq_len = 4096;
  double norm_eps = 1e-5;  ///< every LayerNorm's eps (PyTorch's default)
  Config op;               ///< lambda0, stab_eps, refresh_period, refresh_eps, denom_eps, normalize_output

  layers::AttentionSpec attention_spec() const {
    layers::AttentionSpec s;
    s.kind = attention;
    s.d_model = d_model;
    s.heads = n_heads;
    s.op = op;
    return s;
  }

  void validate() const {
    auto bad = [](const std::string& m) { throw std::invalid_argument("vla::models::TinyLMConfig: " + m); };
    if (d_model <= 0 || n_heads <= 0 || d_model % n_heads != 0) bad("d_model must be a positive multiple of n_heads");
    if (n_layers < 0) bad("n_layers must be >= 0");
    if (d_ff <= 0 || vocab_size <= 0 || max_seq_len <= 0) bad("d_ff, vocab_size and max_seq_len must be > 0");
    if (!(norm_eps > 0) || !std::isfinite(norm_eps)) bad("norm_eps must be finite and > 0");
    op.validate();
  }

  /// Parses config.json's text; unknown keys are refused (a misspelt constant must not fall back
  /// to a default silently). `source` names the file in messages.
  static TinyLMConfig from_json(const std::string& text, const std::string& source = "config.json") {
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) throw io::FormatError(source + ": not a JSON object");
    TinyLMConfig c;
    auto integer = [&](const char* key, std::int64_t& out) {
      if (!j.contains(key)) return;
      const auto& v = j.at(key);
      if (!v.is_number_integer()) throw io::FormatError(source + ": '" + key + "' must be an integer");
      out = v.get<std::int64_t>();
    };
    auto number = [&](const char* key, double& out) {
      if (!j.contains(key)) return;
      const auto& v = j.at(key);
      if (!v.is_number()) throw io::FormatError(source + ": '" + key + "' must be a number");
      out = v.get<double>();
    };
    static const char* known[] = {"attention", "d_model", "n_heads", "n_layers", "d_ff", "vocab_size", "max_seq_len",
                                  "norm_eps", "lambda0", "stab_eps", "refresh_period", "refresh_eps", "denom_eps",
                                  "normalize_output"};
    for (auto it = j.begin(); it != j.end(); ++it) {
      bool ok = false;
      for (const char* k : known) ok = ok || it.key() == k;
      if (!ok) throw io::FormatError(source + ": unknown key '" + it.key() + "'");
    }
    if (!j.contains("attention") || !j.at("attention").is_string())
      throw io::FormatError(source + ": 'attention' (\"vla\", \"linear_attention\" or \"deltanet\") is required");
    try {
      c.attention = layers::parse_kind(j.at("attention").get<std::string>());
    } catch (const std::invalid_argument& e) {
      throw io::FormatError(source + ": " + e.what());
    }
    for (const char* key : {"d_model", "n_heads", "n_layers", "d_ff", "vocab_size"})
      if (!j.contains(key)) throw io::FormatError(source + ": '" + std::string(key) + "' is required");
    integer("d_model", c.d_model);
    integer("n_heads", c.n_heads);
    integer("n_layers", c.n_layers);
    integer("d_ff", c.d_ff);
    integer("vocab_size", c.vocab_size);
    integer("max_seq_len", c.max_seq_len);
    number("norm_eps", c.norm_eps);
    number("lambda0", c.op.lambda0);
    number("stab_eps", c.op.stab_eps);
    std::int64_t period = c.op.refresh_period;
    integer("refresh_period", period);
    if (period < 0 || period > (std::int64_t(1) << 30)) throw io::FormatError(source + ": 'refresh_period' is out of range");
    c.op.refresh_period = static_cast<int>(period);
    number("refresh_eps", c.op.refresh_eps);
    number("denom_eps", c.op.denom_eps);
    if (j.contains("normalize_output")) {
      if (!j.at("normalize_output").is_boolean()) throw io::FormatError(source + ": 'normalize_output' must be true or false");
      c.op.normalize_output = j.at("normalize_output").get<bool>();
    }
    try {
      c.validate();
    } catch (const std::invalid_argument& e) {
      throw io::FormatError(source + ": " + e.what());
    }
    return c;
  }

  std::string to_json() const {
    nlohmann::json j;
    j["attention"] = layers::kind_name(attention);
    j["d_model"] = d_model;
    j["n_heads"] = n_heads;
    j["n_layers"] = n_layers;
    j["d_ff"] = d_ff;
    j["vocab_size"] = vocab_size;
    j["max_seq_len"] = max_seq_len;
    j["norm_eps"] = norm_eps;
    j["lambda0"] = op.lambda0;
    j["stab_eps"] = op.stab_eps;
    j["refresh_period"] = op.refresh_period;
    j["refresh_eps"] = op.refresh_eps;
    j["denom_eps"] = op.denom_eps;
    j["normalize_output"] = op.normalize_output;
    return j.dump(2);
  }
};

/// A tensor on the host, as a state_dict holds it: shape and float values (row-major).
struct HostTensor {
  std::vector<std::int64_t> shape;
  std::vector<float> values;
};

/// Tensors by state_dict name, with the look-ups of io::Safetensors (contains, to_float with its
/// shape check, source), so the weight readers of vla/io/weights.hpp take either.
class TensorMap {
 public:
  TensorMap() = default;
  explicit TensorMap(std::map<std::string, HostTensor> t, std::string source = "<tensors>")
      : t_(std::move(t)), source_(std::move(source)) {}
  /// Every tensor of a safetensors file, widened to float.
  static TensorMap from(const io::Safetensors& f) {
    std::map<std::string, HostTensor> t;
    for (const std::string& name : f.names()) t[name] = {f.info(name).shape, f.to_float(name, f.info(name).shape)};
    return TensorMap(std::move(t), f.source());
  }
  const std::string& source() const { return source_; }
  bool contains(const std::string& name) const { return t_.count(name) != 0; }
  const std::map<std::string, HostTensor>& tensors() const { return t_; }
  std::map<std::string, HostTensor>& tensors() { return t_; }
  std::vector<float> to_float(const std::string& name, const std::vector<std::int64_t>& expected) const {
    auto it = t_.find(name);
    if (it == t_.end()) throw io::FormatError(source_ + ": no tensor '" + name + "'");
    if (it->second.shape != expected)
      throw io::FormatError(source_ + ": tensor '" + name + "': expected shape " + io::detail::shape_text(expected) + ", stored " +
                            io::detail::shape_text(it->second.shape));  // the reader's own wording
    return it->second.values;
  }

 private:
  std::map<std::string, HostTensor> t_;
  std::string source_ = "<tensors>";
};

/// The state_dict names of a TinyLM's modules (the authors' TinyLM, notebooks/07): the one place
/// that spells them, used by the table below, the CPU reader (TinyLMWeights::read) and the CUDA
/// model. Module prefixes; a parameter is prefix + ".weight" / ".bias" (weight(), bias()).
struct TinyLMNames {
  static std::string weight(const std::string& module) { return module + ".weight"; }
  static std::string bias(const std::string& module) { return module + ".bias"; }
  static std::string tok() { return "tok"; }    ///< token embedding [vocab, d_model]
  static std::string pos() { return "pos"; }    ///< position embedding [max_seq_len, d_model]
  static std::string ln_f() { return "ln_f"; }  ///< the final LayerNorm
  static std::string head() { return "head"; }  ///< the output head [vocab, d_model]; absent = tied to tok
  static std::string block(std::int64_t l) { return "blocks." + std::to_string(l); }
  static std::string ln1(std::int64_t l) { return block(l) + ".ln1"; }
  static std::string ln2(std::int64_t l) { return block(l) + ".ln2"; }
  static std::string attn(std::int64_t l) { return block(l) + ".attn"; }
  static std::string ff1(std::int64_t l) { return block(l) + ".ff.0"; }  ///< [d_ff, d_model], then GELU
  static std::string ff2(std::int64_t l) { return block(l) + ".ff.2"; }  ///< [d_model, d_ff]
  /// The attention layer's parameters, relative to attn(l).
  static io::AttentionNames attention() { return io::AttentionNames::authors_multihead(); }
  /// A parameter of block l's attention layer: attn_module(l, attention().q) = "blocks.l.attn.Wq".
  static std::string attn_module(std::int64_t l, const std::string& name) { return attn(l) + "." + name; }
};

/// How the authors initialise a tensor (TinyLM._init_weights); `none`: their model has no such tensor.
enum class TensorInit { normal, zeros, ones, none };

/// One parameter of a TinyLM: state_dict name, shape, whether a model file must hold it, and its
/// initialisation in the authors' model.
struct TensorSpec {
  std::string name;
  std::vector<std::int64_t> shape;
  bool required;
  TensorInit init;
};

/// Every parameter a TinyLM of configuration `c` may hold, in one order: the embeddings, the final
/// norm, the head, then per block the norms, W_q, W_k, W_v, W_o (consecutive: the CUDA model places
/// them d·d floats apart for one strided-batched GEMM), their biases, W_u, W_β, the output norm and
/// the FFN. Optional: every bias, the output norm, the head. The table that random_tensors draws
/// from and the CUDA model checks and places by.
inline std::vector<TensorSpec> tinylm_tensors(const TinyLMConfig& c) {
  using N = TinyLMNames;
  using I = TensorInit;
  const std::int64_t d = c.d_model;
  const bool vla = c.attention == layers::AttentionKind::vla, deltanet = c.attention == layers::AttentionKind::deltanet;
  std::vector<TensorSpec> t = {{N::weight(N::tok()), {c.vocab_size, d}, true, I::normal},
                               {N::weight(N::pos()), {c.max_seq_len, d}, true, I::normal},
                               {N::weight(N::ln_f()), {d}, true, I::ones},
                               {N::bias(N::ln_f()), {d}, true, I::zeros},
                               {N::weight(N::head()), {c.vocab_size, d}, false, I::none}};
  const io::AttentionNames an = N::attention();
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    for (const std::string& ln : {N::ln1(l), N::ln2(l)}) {
      t.push_back({N::weight(ln), {d}, true, I::ones});
      t.push_back({N::bias(ln), {d}, true, I::zeros});
    }
    for (const std::string* p : {&an.q, &an.k, &an.v, &an.o}) t.push_back({N::weight(N::attn_module(l, *p)), {d, d}, true, I::normal});
    for (const std::string* p : {&an.q, &an.k, &an.v, &an.o}) t.push_back({N::bias(N::attn_module(l, *p)), {d}, false, I::zeros});
    if (vla) t.push_back({N::weight(N::attn_module(l, an.u)), {d, d}, true, I::normal});
    if (deltanet) {
      t.push_back({N::weight(N::attn_module(l, an.beta)), {c.n_heads, d}, true, I::normal});
      t.push_back({N::bias(N::attn_module(l, an.beta)), {c.n_heads}, false, I::zeros});
    }
    // VLAv3Attn has the output norm, LinearAttn does not; a file may hold one for any kind.
    t.push_back({N::weight(N::attn_module(l, an.out_norm)), {d}, false, vla ? I::ones : I::none});
    t.push_back({N::bias(N::attn_module(l, an.out_norm)), {d}, false, vla ? I::zeros : I::none});
    t.push_back({N::weight(N::ff1(l)), {c.d_ff, d}, true, I::normal});
    t.push_back({N::bias(N::ff1(l)), {c.d_ff}, false, I::zeros});
    t.push_back({N::weight(N::ff2(l)), {d, c.d_ff}, true, I::normal});
    t.push_back({N::bias(N::ff2(l)), {d}, false, I::zeros});
  }
  return t;
}

/// A TinyLM's tensors as the authors initialise it (TinyLM._init_weights, notebooks/07; the `init`
/// column of tinylm_tensors): every Linear and Embedding weight N(0, 0.02²), biases 0, LayerNorms
/// γ = 1, β = 0, the head tied (no head.weight), VLA's output norm as VLAv3Attn has it (none for the
/// baselines); DeltaNet's β projection [n_heads, d_model] with a bias. Draws from
/// std::mt19937_64(seed) in the table's order: not PyTorch's numbers, the same distribution. Both
/// backends' models are built from these.
inline TensorMap random_tensors(const TinyLMConfig& c, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 0.02);
  std::map<std::string, HostTensor> t;
  for (const TensorSpec& s : tinylm_tensors(c)) {
    if (s.init == TensorInit::none) continue;
    std::int64_t count = 1;
    for (auto x : s.shape) count *= x;
    HostTensor h{s.shape, std::vector<float>(static_cast<std::size_t>(count), s.init == TensorInit::ones ? 1.f : 0.f)};
    if (s.init == TensorInit::normal)
      for (float& v : h.values) v = static_cast<float>(normal(rng));
    t[s.name] = std::move(h);
  }
  return TensorMap(std::move(t), "<random_tensors seed " + std::to_string(seed) + ">");
}

/// config.json of directory `dir`, parsed and validated (io::FormatError naming the file).
inline TinyLMConfig read_config(const std::string& dir) {
  const std::string path = dir + "/config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw io::FormatError(path + ": cannot be opened");
  std::stringstream text;
  text << in.rdbuf();
  return TinyLMConfig::from_json(text.str(), path);
}

}  // namespace models
}  // namespace vla
