// vla/cuda/detail/dispatch.cuh — the one place where run-time head dims become compile-time ones.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#include "vla/cuda/status.cuh"

namespace vla {
namespace cuda {

/// The head dims the CUDA kernels are built for (dk and dv each; dk ≠ dv allowed).
inline constexpr int kSupportedHeadDims[] = {32, 64, 128};

namespace detail {

inline bool supported_head_dim(std::int64_t d) { return d == 32 || d == 64 || d == 128; }

/// Calls fn(std::integral_constant<int, DK>{}, std::integral_constant<int, DV>{}) for the run-time
/// (dk, dv), or returns an error naming the unsupported size. Every kernel instantiation goes
/// through here; add a size by adding it to both switches (and to kSupportedHeadDims).
template <class Fn>
Status dispatch_head_dims(std::int64_t dk, std::int64_t dv, Fn&& fn) {
  if (!supported_head_dim(dk) || !supported_head_dim(dv))
    return Status::invalid("vla::cuda: unsupported head dims dk = " + std::to_string(dk) + ", dv = " +
                           std::to_string(dv) + " (the CUDA kernels are built for 32, 64 and 128)");
  auto with_dv = [&](auto dk_c) -> Status {
    switch (dv) {
      case 32: return fn(dk_c, std::integral_constant<int, 32>{});
      case 64: return fn(dk_c, std::integral_constant<int, 64>{});
      default: return fn(dk_c, std::integral_constant<int, 128>{});
    }
  };
  switch (dk) {
    case 32: return with_dv(std::integral_constant<int, 32>{});
    case 64: return with_dv(std::integral_constant<int, 64>{});
    default: return with_dv(std::integral_constant<int, 128>{});
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace vla
