// vla/io/weights.hpp — layer parameters from tensors named as a PyTorch state_dict names them
// ("blocks.0.attn.Wq.weight"): a safetensors file (io::Safetensors) or host tensors
// (models::TensorMap), any Source with contains(name), to_float(name, shape) and source(). Every
// read checks the shape against the layer's and names the tensor when it is missing or wrong
// (vla::io::FormatError).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vla/io/names.hpp"  // AttentionNames
#include "vla/io/safetensors.hpp"
#include "vla/layers/attention.hpp"
#include "vla/layers/dense.hpp"

namespace vla {
namespace io {

/// A tensor of the file as a row-major [rows, cols] matrix (a 1-D tensor when rows is 0).
template <class Scalar, class Source>
TokenRows<Scalar> read_matrix(const Source& file, const std::string& name, std::int64_t rows, std::int64_t cols) {
  const std::vector<float> values = file.to_float(name, {rows, cols});
  TokenRows<Scalar> m(rows, cols);
  for (std::int64_t i = 0; i < rows * cols; ++i) m.data()[i] = static_cast<Scalar>(values[static_cast<std::size_t>(i)]);
  return m;
}
template <class Scalar, class Source>
layers::RowVector<Scalar> read_vector(const Source& file, const std::string& name, std::int64_t n) {
  const std::vector<float> values = file.to_float(name, {n});
  layers::RowVector<Scalar> r(n);
  for (std::int64_t i = 0; i < n; ++i) r(i) = static_cast<Scalar>(values[static_cast<std::size_t>(i)]);
  return r;
}

/// nn.Linear at `prefix` (prefix.weight [out, in], prefix.bias [out] if the file has it).
template <class Scalar, class Source>
layers::Linear<Scalar> read_linear(const Source& file, const std::string& prefix, std::int64_t out, std::int64_t in) {
  layers::Linear<Scalar> l;
  l.weight = read_matrix<Scalar>(file, prefix + ".weight", out, in);
  if (file.contains(prefix + ".bias")) l.bias = read_vector<Scalar>(file, prefix + ".bias", out);
  return l;
}
/// nn.LayerNorm at `prefix` (weight and bias, both required).
template <class Scalar, class Source>
layers::LayerNorm<Scalar> read_layer_norm(const Source& file, const std::string& prefix, std::int64_t n, double eps) {
  layers::LayerNorm<Scalar> ln;
  ln.weight = read_vector<Scalar>(file, prefix + ".weight", n);
  ln.bias = read_vector<Scalar>(file, prefix + ".bias", n);
  ln.eps = eps;
  return ln;
}

/// An attention layer's weights at `prefix` ("blocks.0.attn"). The output norm is read when the
/// file holds it (prefix.out_norm.weight), whatever the kind: the file says which variant it is.
template <class Scalar, class Source>
layers::AttentionWeights<Scalar> read_attention(const Source& file, const std::string& prefix,
                                                const layers::AttentionSpec& spec, const AttentionNames& names,
                                                double norm_eps) {
  const std::int64_t d = spec.d_model;
  const std::string p = prefix.empty() ? "" : prefix + ".";
  layers::AttentionWeights<Scalar> w;
  w.q = read_linear<Scalar>(file, p + names.q, d, d);
  w.k = read_linear<Scalar>(file, p + names.k, d, d);
  w.v = read_linear<Scalar>(file, p + names.v, d, d);
  w.o = read_linear<Scalar>(file, p + names.o, d, d);
  if (spec.kind == layers::AttentionKind::vla) {
    w.u = read_linear<Scalar>(file, p + names.u, d, d);
    if (w.u.has_bias()) throw FormatError(file.source() + ": " + p + names.u + ".bias: the penalty projection has no bias");
  }
  if (spec.kind == layers::AttentionKind::deltanet) w.beta = read_linear<Scalar>(file, p + names.beta, spec.heads, d);
  if (!names.out_norm.empty() && file.contains(p + names.out_norm + ".weight"))
    w.out_norm = read_layer_norm<Scalar>(file, p + names.out_norm, d, norm_eps);
  return w;
}

}  // namespace io
}  // namespace vla
