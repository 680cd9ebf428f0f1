// vla/feature_map.hpp — the paper's positive feature map φ(x) = ELU(x) + 1 (docs/maths.md §2: q, k arrive
// already feature-mapped; this is the helper that maps them).
#pragma once

#include <Eigen/Core>

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
/// In place over a raw buffer of n values (e.g. a [B, T, H, dk] tensor).
template <class Scalar>
void elu_plus_one_inplace(Scalar* data, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) data[i] = data[i] > Scalar(0) ? data[i] + Scalar(1) : std::exp(data[i]);
}

}  // namespace vla
