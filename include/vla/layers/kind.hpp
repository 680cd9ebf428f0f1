// vla/layers/kind.hpp — which recurrence an attention layer runs and the layer's shape and options
// (vla/layers/attention.hpp). Needs neither Eigen nor CUDA, so the CUDA model (vla/cuda/tinylm.cuh)
// and config readers share it with the CPU layer.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "vla/config.hpp"

namespace vla {
namespace layers {

/// Which recurrence the layer runs.
enum class AttentionKind { vla, linear_attention, deltanet };

inline const char* kind_name(AttentionKind k) {
  switch (k) {
    case AttentionKind::vla: return "vla";
    case AttentionKind::linear_attention: return "linear_attention";
    case AttentionKind::deltanet: return "deltanet";
  }
  return "?";
}
/// "vla", "linear_attention" or "deltanet" (config.json's `attention`); anything else throws.
inline AttentionKind parse_kind(const std::string& s) {
  for (AttentionKind k : {AttentionKind::vla, AttentionKind::linear_attention, AttentionKind::deltanet})
    if (s == kind_name(k)) return k;
  throw std::invalid_argument("vla::layers: unknown attention kind '" + s + "' (vla, linear_attention, deltanet)");
}

/// The layer's shape and options. Heads split d_model evenly: dk = dv = d_model / heads.
struct AttentionSpec {
  AttentionKind kind = AttentionKind::vla;
  std::int64_t d_model = 0;
  std::int64_t heads = 0;
  Config op;                  ///< the recurrence's constants (docs/maths.md §2); denom_eps also serves linear attention
  bool q_feature_map = true;  ///< q = ELU(·)+1 (every published variant); false: q as projected
  bool k_feature_map = true;  ///< k = ELU(·)+1 for vla and linear attention; DeltaNet's op normalises k, so it is not used there

  std::int64_t head_dim() const { return heads > 0 ? d_model / heads : 0; }
};

}  // namespace layers
}  // namespace vla
