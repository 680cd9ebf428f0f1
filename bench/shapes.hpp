// bench/shapes.hpp — the one table of benchmark shapes (CPU benches read it; GPU scripts mirror it).
#pragma once

#include <array>
#include <cstdint>

namespace vla_bench {

struct Shape {
  std::int64_t dk, bh, seq_len;
};

// Issue 2's grid: dk ∈ {32, 64, 128}, B·H ∈ {1, 16}, T ∈ {1024, 16384}.
inline constexpr std::array<std::int64_t, 3> kHeadDims{32, 64, 128};
inline constexpr std::array<std::int64_t, 2> kBatchHeads{1, 16};
inline constexpr std::array<std::int64_t, 2> kSeqLens{1024, 16384};

/// docs/maths.md §2's count: about 6 matrix–vector products of size dk² per token per head.
inline constexpr double vla_flops_per_token(std::int64_t dk) { return 12.0 * double(dk) * double(dk); }
/// Linear attention: the rank-1 write and S q.
inline constexpr double linear_flops_per_token(std::int64_t dk) { return 4.0 * double(dk) * double(dk); }
/// DeltaNet: S k̂, the rank-1 write and S q.
inline constexpr double deltanet_flops_per_token(std::int64_t dk) { return 6.0 * double(dk) * double(dk); }

}  // namespace vla_bench
