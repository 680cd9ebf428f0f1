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

/// A TinyLM's tensors as the authors initialise it (TinyLM._init_weights, notebooks/07): every
/// Linear and Embedding weight N(0, 0.02²), biases 0, LayerNorms γ = 1, β = 0, the head tied (no
/// head.weight), VLA's output norm as VLAv3Attn has it (none for the baselines); DeltaNet's β
/// projection [n_heads, d_model] with a bias. Draws from std::mt19937_64(seed) in name order: not
/// PyTorch's numbers, the same distribution. Both backends' models are built from these.
inline TensorMap random_tensors(const TinyLMConfig& c, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 0.02);
  std::map<std::string, HostTensor> t;
  auto normal_t = [&](const std::string& n, std::vector<std::int64_t> shape) {
    HostTensor h{shape, {}};
    std::int64_t count = 1;
    for (auto x : shape) count *= x;
    for (std::int64_t i = 0; i < count; ++i) h.values.push_back(static_cast<float>(normal(rng)));
    t[n] = std::move(h);
  };
  auto constant = [&](const std::string& n, std::int64_t size, float v) { t[n] = {{size}, std::vector<float>(static_cast<std::size_t>(size), v)}; };
  auto linear = [&](const std::string& n, std::int64_t out, std::int64_t in, bool bias) {
    normal_t(n + ".weight", {out, in});
    if (bias) constant(n + ".bias", out, 0.f);
  };
  auto ln = [&](const std::string& n, std::int64_t size) {
    constant(n + ".weight", size, 1.f);
    constant(n + ".bias", size, 0.f);
  };
  const std::int64_t d = c.d_model;
  normal_t("tok.weight", {c.vocab_size, d});
  normal_t("pos.weight", {c.max_seq_len, d});
  for (std::int64_t i = 0; i < c.n_layers; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    ln(b + "ln1", d);
    ln(b + "ln2", d);
    for (const char* p : {"Wq", "Wk", "Wv", "Wo"}) linear(b + "attn." + p, d, d, true);
    if (c.attention == layers::AttentionKind::vla) {
      linear(b + "attn.Wu", d, d, false);
      ln(b + "attn.norm_o", d);
    }
    if (c.attention == layers::AttentionKind::deltanet) linear(b + "attn.Wbeta", c.n_heads, d, true);
    linear(b + "ff.0", c.d_ff, d, true);
    linear(b + "ff.2", d, c.d_ff, true);
  }
  ln("ln_f", d);
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
