// vla/feature_map.hpp — the paper's positive feature map φ(x) = ELU(x) + 1 (docs/maths.md §2: q, k arrive
// already feature-mapped; this is the helper that maps them).
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace vla {

/// φ(x) = ELU(x) + 1 = x + 1 for x > 0, exp(x) otherwise: the paper's positive feature map.
template <class Derived>
auto elu_plus_one(const Eigen::ArrayBase<Derived>& x) {
  using S = typename Derived::Scalar;
  return (x > S(0)).select(x + S(1), x.exp());
}
template <class Derived>
auto elu_plus_one(const Eigen::MatrixBase<Derived>& x) {
  return elu_plus_one(x.array()).matrix();
}
/// In place over a raw buffer of n values (e.g. a [B, T, H, dk] tensor); the same values as
/// elu_plus_one, bit for bit. Branch-free: max(x, 0) + exp(min(x, 0)) is x + 1 for x > 0 (exp(0) = 1
/// exactly) and 0 + exp(x) otherwise. A branch on the sign of projected activations is mispredicted
/// about half the time, which made this loop cost as much as the layer's GEMMs.
template <class Scalar>
void elu_plus_one_inplace(Scalar* data, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    const Scalar x = data[i];
    data[i] = std::max(x, Scalar(0)) + std::exp(std::min(x, Scalar(0)));
  }
}

}  // namespace vla
