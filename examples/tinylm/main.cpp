// vla_tinylm: the authors' TinyLM from a model directory (config.json + model.safetensors, as
// tools/export/export_tinylm.py writes it; docs/layers.md), prefill of a prompt and greedy decoding.
//
//   vla_tinylm --model DIR [--backend cpu|cuda] (--tokens "1 2 3" | --tokens-file F)
//              [--logits-out F] [--generate N]
//
// --logits-out writes the logits of every prompt position, float32 little-endian, [T, vocab].
// --generate N decodes N tokens after the prompt (argmax), one decode step each, and prints them
// with the decode rate. Exit status 0 on success, 1 on a bad model or argument (the message names it).
#include <vla/models/tinylm.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "run.hpp"

namespace {

std::vector<std::int64_t> parse_ids(const std::string& text, const std::string& where) {
  std::istringstream in(text);
  std::vector<std::int64_t> ids;
  std::string word;
  while (in >> word) {
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size()) throw std::invalid_argument(where + ": '" + word + "' is not a token id");
    ids.push_back(v);
  }
  return ids;
}

int usage() {
  std::fprintf(stderr,
               "usage: vla_tinylm --model DIR [--backend cpu|cuda] (--tokens \"1 2 3\" | --tokens-file F)\n"
               "                  [--logits-out F] [--generate N]\n");
  return 1;
}

}  // namespace

namespace tinylm_example {

int run_cpu(const Request& req, Result& out) {
  try {
    using Model = vla::models::TinyLM<vla::backend::Cpu, float>;
    const auto t0 = std::chrono::steady_clock::now();
    const Model model = Model::load(req.model_dir);
    auto cache = model.make_cache(1);
    const auto t1 = std::chrono::steady_clock::now();
    const vla::TokenRows<float> logits = model.prefill(req.prompt, cache, 0);
    const auto t2 = std::chrono::steady_clock::now();
    const auto& c = model.config();
    out.kind = vla::layers::kind_name(c.attention);
    out.d_model = c.d_model, out.heads = c.n_heads, out.layers = c.n_layers, out.vocab = c.vocab_size;
    out.logits.assign(logits.data(), logits.data() + logits.size());
    out.load_s = std::chrono::duration<double>(t1 - t0).count();
    out.prefill_s = std::chrono::duration<double>(t2 - t1).count();
    if (req.generate > 0) {
      Eigen::Index next;
      logits.row(logits.rows() - 1).maxCoeff(&next);
      const auto g0 = std::chrono::steady_clock::now();
      for (long i = 0; i < req.generate; ++i) {
        out.generated.push_back(next);
        if (i + 1 == req.generate) break;
        model.decode({static_cast<std::int64_t>(next)}, cache, {0}).row(0).maxCoeff(&next);
      }
      out.decode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - g0).count();
    }
    return 0;
  } catch (const std::exception& e) {
    out.error = e.what();
    return 1;
  }
}

}  // namespace tinylm_example

int main(int argc, char** argv) {
  std::string model_dir, backend = "cpu", tokens_text, tokens_file, logits_out;
  long generate = 0;
  bool have_tokens = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--model") model_dir = value();
      else if (a == "--backend") backend = value();
      else if (a == "--tokens") tokens_text = value(), have_tokens = true;
      else if (a == "--tokens-file") tokens_file = value(), have_tokens = true;
      else if (a == "--logits-out") logits_out = value();
      else if (a == "--generate") generate = std::stol(value());
      else if (a == "--help" || a == "-h") return usage(), 0;
      else throw std::invalid_argument("unknown argument " + a);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "vla_tinylm: %s\n", e.what());
      return usage();
    }
  }
  if (model_dir.empty() || !have_tokens || generate < 0) return usage();
  tinylm_example::Request req;
  req.model_dir = model_dir;
  req.generate = generate;
  tinylm_example::Result res;
  try {
    if (!tokens_file.empty()) {
      std::ifstream f(tokens_file);
      if (!f) throw std::invalid_argument(tokens_file + ": cannot be opened");
      std::stringstream s;
      s << f.rdbuf();
      tokens_text = s.str();
    }
    req.prompt = parse_ids(tokens_text, tokens_file.empty() ? "--tokens" : tokens_file);
    if (req.prompt.empty()) throw std::invalid_argument("the prompt is empty");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vla_tinylm: %s\n", e.what());
    return 1;
  }
  int rc = 1;
  if (backend == "cpu") {
    rc = tinylm_example::run_cpu(req, res);
  } else if (backend == "cuda") {
#if defined(VLA_TINYLM_CUDA)
    rc = tinylm_example::run_cuda(req, res);
#else
    res.error = "backend 'cuda' is not in this build (configure with CUDA enabled: cmake/VlaCuda.cmake)";
#endif
  } else {
    res.error = "unknown backend '" + backend + "' (cpu, cuda)";
  }
  if (rc != 0) {
    std::fprintf(stderr, "vla_tinylm: %s\n", res.error.c_str());
    return 1;
  }
  const std::size_t T = req.prompt.size();
  std::printf("model %s (%s): %s, d_model %lld, %lld heads, %lld layers, vocab %lld (loaded in %.1f ms)\n", model_dir.c_str(),
              backend.c_str(), res.kind.c_str(), static_cast<long long>(res.d_model), static_cast<long long>(res.heads),
              static_cast<long long>(res.layers), static_cast<long long>(res.vocab), 1e3 * res.load_s);
  std::printf("prefill: %zu tokens in %.3f ms (%.0f tokens/s)\n", T, 1e3 * res.prefill_s, static_cast<double>(T) / res.prefill_s);
  if (!logits_out.empty()) {
    // float32 little-endian, row-major [T, vocab]: the bytes of the floats on a little-endian host
    // (checked here rather than assumed).
    const std::uint32_t one = 1;
    unsigned char first;
    std::memcpy(&first, &one, 1);
    std::ofstream f(logits_out, std::ios::binary);
    if (first != 1 || !f.write(reinterpret_cast<const char*>(res.logits.data()),
                               static_cast<std::streamsize>(res.logits.size() * sizeof(float)))) {
      std::fprintf(stderr, "vla_tinylm: %s: write failed%s\n", logits_out.c_str(), first != 1 ? " (big-endian host)" : "");
      return 1;
    }
    std::printf("logits [%zu, %lld] written to %s\n", T, static_cast<long long>(res.vocab), logits_out.c_str());
  }
  if (generate > 0) {
    std::printf("generated:");
    for (auto id : res.generated) std::printf(" %lld", static_cast<long long>(id));
    std::printf("\ndecode: %ld steps in %.3f ms (%.0f tokens/s)\n", generate - 1, 1e3 * res.decode_s,
                generate > 1 ? static_cast<double>(generate - 1) / res.decode_s : 0.0);
  }
  return 0;
}
