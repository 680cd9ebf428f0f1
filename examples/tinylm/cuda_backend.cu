// vla_tinylm --backend cuda: the same prefill and greedy decode through vla::models::TinyLM on the
// GPU (vla/cuda/tinylm.cuh). Built into vla_tinylm where CUDA is enabled (cmake/VlaCuda.cmake).
#include <vla/cuda/tinylm.cuh>

#include <chrono>

#include "run.hpp"

namespace tinylm_example {

int run_cuda(const Request& req, Result& out) {
  using Model = vla::models::TinyLM<vla::backend::Cuda, float>;
  Model model;
  const auto t0 = std::chrono::steady_clock::now();
  vla::cuda::Status st = Model::load(req.model_dir, nullptr, model);
  Model::Cache cache;
  if (st) st = model.make_cache(1, nullptr, cache);
  if (!st) return out.error = st.message, 1;
  cudaDeviceSynchronize();
  const auto t1 = std::chrono::steady_clock::now();
  st = model.prefill(req.prompt, 1, cache, 0, nullptr);
  if (!st) return out.error = st.message, 1;
  out.logits = model.logits_to_host(nullptr);  // waits for the prefill
  const auto t2 = std::chrono::steady_clock::now();
  const auto& c = model.config();
  out.kind = vla::layers::kind_name(c.attention);
  out.d_model = c.d_model, out.heads = c.n_heads, out.layers = c.n_layers, out.vocab = c.vocab_size;
  out.load_s = std::chrono::duration<double>(t1 - t0).count();
  out.prefill_s = std::chrono::duration<double>(t2 - t1).count();
  if (req.generate > 0) {
    auto argmax = [&](const float* row) {
      std::int64_t best = 0;
      for (std::int64_t i = 1; i < c.vocab_size; ++i)
        if (row[i] > row[best]) best = i;
      return best;
    };
    std::int64_t next = argmax(out.logits.data() + (req.prompt.size() - 1) * c.vocab_size);
    const auto g0 = std::chrono::steady_clock::now();
    for (long i = 0; i < req.generate; ++i) {
      out.generated.push_back(next);
      if (i + 1 == req.generate) break;
      st = model.decode({next}, cache, {0}, nullptr);
      if (!st) return out.error = st.message, 1;
      next = argmax(model.logits_to_host(nullptr).data());
    }
    out.decode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - g0).count();
  }
  return 0;
}

}  // namespace tinylm_example
