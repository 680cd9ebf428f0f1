// vla/layers/dense.hpp — the position-wise pieces around the recurrence, as PyTorch stores them:
// nn.Linear (y = x Wᵀ + b, W [out, in] row-major), nn.LayerNorm (biased variance, eps inside the
// square root), the exact GELU of nn.GELU(), and the sigmoid. Activations are rows, one per token
// ([T, features], vla::TokenRows), which is the layout the op reads (vla/rows.hpp).
#pragma once

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>  // erf for GELU

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "vla/rows.hpp"

namespace vla {
namespace layers {

template <class Scalar>
using RowVector = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;

/// nn.Linear: weight [out, in] (PyTorch's layout, so a state_dict tensor is read as it lies),
/// bias [out] or empty for a layer without one.
template <class Scalar>
struct Linear {
  TokenRows<Scalar> weight;
  RowVector<Scalar> bias;

  std::int64_t in_features() const { return weight.cols(); }
  std::int64_t out_features() const { return weight.rows(); }
  bool has_bias() const { return bias.size() != 0; }

  /// y = x Wᵀ + b for every row of x. y is resized; it must not alias x.
  void apply(const Eigen::Ref<const TokenRows<Scalar>>& x, TokenRows<Scalar>& y) const {
    if (x.cols() != in_features())
      throw std::invalid_argument("vla::layers::Linear: input has " + std::to_string(x.cols()) + " features, the layer takes " +
                                  std::to_string(in_features()));
    y.resize(x.rows(), out_features());
    y.noalias() = x * weight.transpose();
    if (has_bias()) y.rowwise() += bias;
  }
  /// Throws naming `what` unless the weight is [out, in] and the bias [out] (or absent, when allowed).
  void check(const std::string& what, std::int64_t out, std::int64_t in, bool bias_allowed = true) const {
    if (weight.rows() != out || weight.cols() != in)
      throw std::invalid_argument(what + ".weight must be [" + std::to_string(out) + ", " + std::to_string(in) + "], is [" +
                                  std::to_string(weight.rows()) + ", " + std::to_string(weight.cols()) + "]");
    if (has_bias() && (!bias_allowed || bias.size() != out))
      throw std::invalid_argument(what + ".bias must be " + (bias_allowed ? "[" + std::to_string(out) + "] or absent" : "absent"));
    if (!weight.allFinite() || (has_bias() && !bias.allFinite())) throw std::invalid_argument(what + " holds a NaN or an infinity");
  }
};

/// nn.LayerNorm over the last dimension: (x − mean) / √(var + eps) · γ + β, var the biased variance.
template <class Scalar>
struct LayerNorm {
  RowVector<Scalar> weight;  ///< γ
  RowVector<Scalar> bias;    ///< β
  double eps = 1e-5;

  std::int64_t features() const { return weight.size(); }
  /// In place over every row. Mean and variance are accumulated in double: a row of d_model values
  /// is cheap next to the GEMMs around it, and it keeps float rows with a large mean accurate.
  void apply(Eigen::Ref<TokenRows<Scalar>> x) const {
    if (x.cols() != features())
      throw std::invalid_argument("vla::layers::LayerNorm: rows have " + std::to_string(x.cols()) + " features, the norm " +
                                  std::to_string(features()));
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      const Eigen::Array<double, 1, Eigen::Dynamic> row = x.row(r).array().template cast<double>();
      const double mean = row.mean();
      const double var = (row - mean).square().mean();
      x.row(r).array() = ((row - mean) * (1.0 / std::sqrt(var + eps))).template cast<Scalar>() * weight.array() + bias.array();
    }
  }
  void check(const std::string& what, std::int64_t features_expected) const {
    if (weight.size() != features_expected || bias.size() != features_expected)
      throw std::invalid_argument(what + ".weight and .bias must be [" + std::to_string(features_expected) + "]");
    if (!weight.allFinite() || !bias.allFinite()) throw std::invalid_argument(what + " holds a NaN or an infinity");
    if (!(eps > 0) || !std::isfinite(eps)) throw std::invalid_argument(what + ": eps must be finite and > 0");
  }
};

/// nn.GELU() (the exact form, not the tanh approximation): x·Φ(x) = x/2·(1 + erf(x/√2)), in place.
template <class Scalar>
void gelu_inplace(Eigen::Ref<TokenRows<Scalar>> x) {
  const Scalar inv_sqrt2 = static_cast<Scalar>(0.70710678118654752440);
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    auto row = x.row(r).array();
    row = Scalar(0.5) * row * (Scalar(1) + (row * inv_sqrt2).erf());  // Eigen's vectorised erf
  }
}

/// 1 / (1 + e^{−x}), in place. For very negative x, e^{−x} = +inf and the quotient is 0, not a NaN.
template <class Scalar>
void sigmoid_inplace(Eigen::Ref<TokenRows<Scalar>> x) {
  x.array() = (Scalar(1) + (-x.array()).exp()).inverse();
}

}  // namespace layers
}  // namespace vla
