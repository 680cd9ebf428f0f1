// examples/tinylm/run.hpp — what vla_tinylm's backends take and give back (main.cpp prints it), so
// the CUDA backend (cuda_backend.cu, compiled by nvcc) shares no Eigen type with the CPU one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tinylm_example {

struct Request {
  std::string model_dir;
  std::vector<std::int64_t> prompt;
  long generate = 0;
};
struct Result {
  std::string kind, error;
  std::int64_t d_model = 0, heads = 0, layers = 0, vocab = 0;
  std::vector<float> logits;  ///< [T, vocab] of the prompt, row-major
  std::vector<std::int64_t> generated;
  double load_s = 0, prefill_s = 0, decode_s = 0;
};

int run_cpu(const Request& req, Result& out);
#if defined(VLA_TINYLM_CUDA)
int run_cuda(const Request& req, Result& out);
#endif

}  // namespace tinylm_example
