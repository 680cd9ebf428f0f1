// tests/tinylm_fixture.hpp — the expected outputs of a TinyLM parity fixture (tests/fixtures/README.md):
// the token ids and the authors' float64 logits, read from expected.safetensors. Shared by the CPU
// test (test_tinylm.cpp) and the GPU one (cuda/test_cuda_tinylm.cu); needs vla::io, not Eigen.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "vla/io/safetensors.hpp"

namespace vt {

struct TinyLMExpected {
  std::vector<std::int64_t> tokens;
  std::vector<float> logits;  ///< [T, vocab], row-major
};

inline TinyLMExpected tinylm_expected(const std::string& dir, std::int64_t vocab) {
  const auto f = vla::io::Safetensors::open(dir + "/expected.safetensors");
  TinyLMExpected e;
  const std::int64_t T = f.info("tokens").shape.at(0);
  for (float t : f.to_float("tokens", {T})) e.tokens.push_back(static_cast<std::int64_t>(t));
  e.logits = f.to_float("logits", {T, vocab});
  return e;
}

}  // namespace vt
