// vla/io/names.hpp — the state_dict names of an attention layer's parameters (io::AttentionNames),
// on their own so that Eigen-free code (the CUDA model, vla/models/tinylm_config.hpp) shares the
// one table with the CPU readers of vla/io/weights.hpp.
#pragma once

#include <string>

namespace vla {
namespace io {

/// The state_dict names of an attention layer's parameters, relative to the layer's prefix. An
/// empty name means the layer has no such parameter.
struct AttentionNames {
  std::string q, k, v, o, u, beta, out_norm;

  /// The authors' multi-head layers of notebooks/07 (VLAv3Attn, LinearAttn) and vla's DeltaNet layer.
  static AttentionNames authors_multihead() { return {"Wq", "Wk", "Wv", "Wo", "Wu", "Wbeta", "norm_o"}; }
  /// The authors' single-head module (src/models/attention/vla_v3.py, class VLAv3).
  static AttentionNames authors_vlav3() { return {"W_q", "W_k", "W_v", "W_o", "u_proj", "", "norm"}; }
};

}  // namespace io
}  // namespace vla
