// tests/fuzz/fuzz_common.hpp — what the libFuzzer harnesses share: a reader that turns the fuzzer's
// bytes into bounded integers and floats (raw bits, or bounded magnitudes), and the abort that turns
// a broken invariant into a crash libFuzzer reports; and the fuzzed configs of sane magnitude.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "vla/config.hpp"

namespace vfuzz {

/// Consumes the input front to back; past the end it yields zeros (so every input is usable).
struct Reader {
  const std::uint8_t* p;
  std::size_t n;
  std::uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  std::uint32_t u32() {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | byte();
    return v;
  }
  std::int64_t i64() {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | byte();
    std::int64_t r;
    std::memcpy(&r, &v, sizeof r);
    return r;
  }
  /// An integer in [lo, hi].
  int range(int lo, int hi) { return lo + static_cast<int>(byte() % static_cast<unsigned>(hi - lo + 1)); }
  /// Any float bit pattern: NaN, ±inf, subnormals, ±0, the largest finite values.
  float raw_float() {
    const std::uint32_t b = u32();
    float f;
    std::memcpy(&f, &b, sizeof f);
    return f;
  }
  /// A finite float of magnitude ≤ 10^max_exp (often 0, often tiny, as small as 10^-max_exp).
  float bounded_float(int max_exp = 30) {
    const std::uint8_t kind = byte();
    if (kind % 8 == 0) return 0.f;
    const float mant = static_cast<float>(static_cast<std::int16_t>(u32() & 0xffff)) / 32768.f;
    const int e = static_cast<int>(kind % (2 * max_exp + 1)) - max_exp;
    return mant * std::pow(10.f, static_cast<float>(e));
  }
};

/// Config constants within a few decades of the defaults (where the no-NaN invariants apply; more
/// extreme ones leave float's useful range, docs/maths.md §6), read from the input.
inline void sane_config(Reader& in, vla::Config& cfg) {
  cfg.lambda0 = 0.1 * std::pow(10.0, in.range(-3, 3));
  cfg.stab_eps = std::pow(10.0, in.range(-6, -1));
  cfg.refresh_period = in.range(0, 9);
  cfg.refresh_eps = in.byte() % 4 ? std::pow(10.0, in.range(-6, -1)) : 0.0;
  cfg.denom_eps = std::pow(10.0, in.range(-6, -2));
  cfg.normalize_output = in.byte() % 2;
}

[[noreturn]] inline void broken(const char* what) {
  std::fprintf(stderr, "vla fuzz: invariant broken: %s\n", what);
  std::abort();
}

}  // namespace vfuzz
