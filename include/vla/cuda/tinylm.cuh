// vla/cuda/tinylm.cuh — the TinyLM of vla/models/tinylm.hpp on the GPU (include from .cu files; link
// CUDA::cublas and vla::io). Projections are cuBLAS SGEMMs (fp32, no TF32), the elementwise work is a
// few small kernels, the recurrence is the CUDA op (vla/cuda/forward.cuh for a prompt, decode_step
// for one token per sequence), and the per-layer state cache is a vla::cuda::DeviceStates pool
// indexed by sequence slot (docs/layers.md).
//
//   vla::models::TinyLM<vla::backend::Cuda, float> model;
//   vla::cuda::Status st = vla::models::TinyLM<vla::backend::Cuda, float>::load(dir, stream, model);
//   vla::models::TinyLM<vla::backend::Cuda, float>::Cache cache;
//   st = model.make_cache(/*slots*/ 8, stream, cache);
//   st = model.prefill(tokens, /*batch*/ 2, cache, /*first slot*/ 0, stream);   // tokens [2, T]
//   std::vector<float> logits = model.logits_to_host(stream);                    // [2·T, vocab]
//   st = model.decode(next_tokens, cache, slots, stream);                        // one per slot
//
// Every argument is checked on the host before anything is launched (a Status names it). A device
// error in the middle of a call (a failed launch or GEMM) is returned as it comes; the layers before
// it have advanced their slots then, so the caller restores or resets them.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "vla/cuda/vla_cuda.cuh"
#include "vla/io/safetensors.hpp"
#include "vla/models/tinylm_config.hpp"

namespace vla {
namespace models {

template <class Backend, class Scalar>
class TinyLM;

namespace cuda_detail {

enum Act : int { kNone = 0, kEluPlusOne = 1, kGelu = 2, kSigmoidBeta = 3 };

/// y[r, c] = act(y[r, c] + bias[c]) (bias may be null). kSigmoidBeta: DeltaNet's β, a sigmoid floored
/// at the smallest normal float, as the CPU layer does (β must be in (0, 1]).
__global__ void bias_act(float* y, const float* bias, std::int64_t rows, int cols, int act) {
  const std::int64_t n = rows * cols;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    float x = y[i] + (bias ? bias[i % cols] : 0.f);
    if (act == kEluPlusOne) x = fmaxf(x, 0.f) + expf(fminf(x, 0.f));
    if (act == kGelu) x = 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    if (act == kSigmoidBeta) x = fmaxf(1.f / (1.f + expf(-x)), 1.17549435e-38f);
    y[i] = x;
  }
}

/// One warp per row: y = (x − mean) / √(var + eps) · γ + β (biased variance, as nn.LayerNorm).
/// With add_bias, x ← x + add_bias first (written back): the bias of the GEMM whose output was
/// accumulated into x (the residual), folded into the norm that reads x next — one launch fewer.
__global__ void layer_norm(float* x, float* y, const float* g, const float* b, const float* add_bias, std::int64_t rows, int d,
                           float eps) {
  const std::int64_t row = blockIdx.x * static_cast<std::int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  float* xr = x + row * d;
  if (add_bias) {
    for (int c = lane; c < d; c += 32) xr[c] += add_bias[c];
    __syncwarp();
  }
  float s = 0.f;
  for (int c = lane; c < d; c += 32) s += xr[c];
  for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
  const float mean = s / static_cast<float>(d);
  float v = 0.f;
  for (int c = lane; c < d; c += 32) {
    const float t = xr[c] - mean;
    v += t * t;
  }
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  const float inv = rsqrtf(v / static_cast<float>(d) + eps);
  for (int c = lane; c < d; c += 32) y[row * d + c] = (xr[c] - mean) * inv * g[c] + b[c];
}

/// q, k, v (three buffers `stride` floats apart) get their biases (any may be null); q through
/// ELU+1, k through ELU+1 when elu_k (VLA's u is projected from the raw keys first, so not then).
__global__ void qkv_bias_act(float* q, std::int64_t stride, const float* bq, const float* bk, const float* bv, std::int64_t rows,
                             int d, bool elu_k) {
  const std::int64_t n = rows * d;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < 3 * n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int part = static_cast<int>(i / n);
    const std::int64_t j = i - part * n;
    const float* bias = part == 0 ? bq : part == 1 ? bk : bv;
    float x = q[part * stride + j] + (bias ? bias[j % d] : 0.f);
    if (part == 0 || (part == 1 && elu_k)) x = fmaxf(x, 0.f) + expf(fminf(x, 0.f));
    q[part * stride + j] = x;
  }
}

/// x[r] = tok[tokens[r]] + pos[positions[r]].
__global__ void embed(const std::int64_t* tokens, const std::int64_t* positions, const float* tok, const float* pos,
                      float* x, std::int64_t rows, int d) {
  const std::int64_t n = rows * d;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / d, c = i % d;
    x[i] = tok[tokens[r] * d + c] + pos[positions[r] * d + c];
  }
}

inline unsigned grid_for(std::int64_t n) { return static_cast<unsigned>(std::min<std::int64_t>((n + 255) / 256, 4096)); }

}  // namespace cuda_detail

/// TinyLM on the GPU, fp32 throughout (tokens, GEMMs, state). Move-only; owns its device memory
/// and its cuBLAS handle.
template <>
class TinyLM<backend::Cuda, float> {
 public:
  using Status = cuda::Status;

  /// Per-layer state pools and each slot's position (tokens already in it), kept on the host.
  struct Cache {
    std::vector<cuda::DeviceStates> layers;
    std::vector<std::int64_t> positions;
    std::int64_t slots() const { return static_cast<std::int64_t>(positions.size()); }
  };

  TinyLM() = default;
  TinyLM(const TinyLM&) = delete;
  TinyLM& operator=(const TinyLM&) = delete;
  TinyLM(TinyLM&& o) noexcept { swap(o); }
  TinyLM& operator=(TinyLM&& o) noexcept {
    if (this != &o) {
      release();
      swap(o);
    }
    return *this;
  }
  ~TinyLM() { release(); }

  /// Uploads `tensors` (named as the authors' state_dict; docs/layers.md) after checking every
  /// shape against `cfg`. On an error `out` is left as it was.
  static Status create(const TinyLMConfig& cfg, const TensorMap& map, cudaStream_t stream, TinyLM& out) {
    const auto& tensors = map.tensors();
    try {
      cfg.validate();
    } catch (const std::exception& e) {
      return Status::invalid(std::string("vla::models::TinyLM<Cuda>: ") + e.what());
    }
    const std::int64_t d = cfg.d_model, H = cfg.n_heads, dh = d / H;
    if (dh != 32 && dh != 64 && dh != 128)
      return Status::invalid("vla::models::TinyLM<Cuda>: head size " + std::to_string(dh) +
                             " (d_model / n_heads): the CUDA op is built for 32, 64 and 128");
    TinyLM m;
    m.cfg_ = cfg;
    // Every parameter in one device allocation, in the table's order (W_q, W_k, W_v consecutive,
    // d·d floats apart: one strided-batched GEMM projects all three).
    const std::vector<TensorSpec> want = tinylm_tensors(cfg);
    std::size_t total = 0;
    std::vector<std::pair<const HostTensor*, std::size_t>> place;
    for (const TensorSpec& w : want) {
      auto it = tensors.find(w.name);
      if (it == tensors.end()) {
        if (w.required) return Status::invalid("vla::models::TinyLM<Cuda>: no tensor '" + w.name + "'");
        continue;
      }
      if (it->second.shape != w.shape)
        return Status::invalid("vla::models::TinyLM<Cuda>: tensor '" + w.name + "': expected shape " +
                               io::detail::shape_text(w.shape) + ", stored " + io::detail::shape_text(it->second.shape));
      for (float v : it->second.values)
        if (!std::isfinite(v)) return Status::invalid("vla::models::TinyLM<Cuda>: '" + w.name + "' holds a NaN or an infinity");
      m.offset_[w.name] = total;
      place.push_back({&it->second, total});
      total += (it->second.values.size() + 3) / 4 * 4;  // 16-byte aligned, for the op's vector loads
    }
    for (std::int64_t l = 0; l < cfg.n_layers; ++l) {
      const std::string norm = TinyLMNames::attn_module(l, TinyLMNames::attention().out_norm);
      if (tensors.count(TinyLMNames::weight(norm)) != tensors.count(TinyLMNames::bias(norm)))
        return Status::invalid("vla::models::TinyLM<Cuda>: " + norm + " needs both its weight and its bias");
    }
    int devices = 0;
    if (const cudaError_t e0 = cudaGetDeviceCount(&devices); e0 != cudaSuccess || devices == 0)
      return Status::from_cuda(e0 != cudaSuccess ? e0 : cudaErrorNoDevice, "vla::models::TinyLM<Cuda>: no GPU");
    if (cublasCreate(&m.blas_) != CUBLAS_STATUS_SUCCESS) {
      m.blas_ = nullptr;
      return Status::invalid("vla::models::TinyLM<Cuda>: cublasCreate failed");
    }
    cublasSetMathMode(m.blas_, CUBLAS_PEDANTIC_MATH);  // fp32 as written: no TF32, no reduced precision
    cudaError_t e = cudaMalloc(&m.weights_, std::max<std::size_t>(total, 1) * sizeof(float));
    if (e != cudaSuccess) {
      m.weights_ = nullptr;
      return Status::from_cuda(e, "vla::models::TinyLM<Cuda>: weights");
    }
    for (auto& [t, at] : place) {
      e = cudaMemcpyAsync(m.weights_ + at, t->values.data(), t->values.size() * sizeof(float), cudaMemcpyHostToDevice, stream);
      if (e != cudaSuccess) return Status::from_cuda(e, "vla::models::TinyLM<Cuda>: weights upload");
    }
    e = cudaStreamSynchronize(stream);  // the host tensors may go away when this returns
    if (e != cudaSuccess) return Status::from_cuda(e, "vla::models::TinyLM<Cuda>: weights upload");
    out = std::move(m);
    return {};
  }

  /// A model directory (config.json + model.safetensors). A bad directory is an invalid Status
  /// with the file and tensor named, as the CPU model's FormatError.
  static Status load(const std::string& dir, cudaStream_t stream, TinyLM& out) {
    try {
      const TinyLMConfig cfg = read_config(dir);
      const io::Safetensors f = io::Safetensors::open(dir + "/model.safetensors");
      Status st = create(cfg, TensorMap::from(f), stream, out);
      if (!st) st.message = f.source() + ": " + st.message;
      return st;
    } catch (const std::exception& e) {
      return Status::invalid(e.what());
    }
  }

  const TinyLMConfig& config() const { return cfg_; }

  Status make_cache(std::int64_t slots, cudaStream_t stream, Cache& out) const {
    if (slots <= 0) return Status::invalid("vla::models::TinyLM<Cuda>::make_cache: slots must be > 0");
    Cache c;
    for (std::int64_t l = 0; l < cfg_.n_layers; ++l) {
      cuda::DeviceStates p;
      if (Status st = cuda::DeviceStates::create(slots, cfg_.n_heads, head_dim(), head_dim(), cfg_.op, stream, p); !st) return st;
      c.layers.push_back(std::move(p));
    }
    c.positions.assign(static_cast<std::size_t>(slots), 0);
    out = std::move(c);
    return {};
  }

  /// B prompts of T tokens each (tokens: [B, T] row-major) continuing slots first .. first + B − 1.
  /// The logits of every position ([B·T, vocab], row b·T + t) stay on the device: logits(), logits_to_host().
  Status prefill(const std::vector<std::int64_t>& tokens, std::int64_t batch, Cache& cache, std::int64_t first,
                 cudaStream_t stream) {
    if (batch <= 0 || tokens.size() % static_cast<std::size_t>(batch) != 0)
      return Status::invalid("vla::models::TinyLM<Cuda>::prefill: " + std::to_string(tokens.size()) +
                             " tokens are not batch (" + std::to_string(batch) + ") prompts of one length");
    const std::int64_t T = static_cast<std::int64_t>(tokens.size()) / batch;
    if (first < 0 || first + batch > cache.slots())
      return Status::invalid("vla::models::TinyLM<Cuda>::prefill: slots " + std::to_string(first) + ".." +
                             std::to_string(first + batch - 1) + " are out of range (" + std::to_string(cache.slots()) + " slots)");
    std::vector<std::int64_t> positions(tokens.size());
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t t = 0; t < T; ++t) positions[static_cast<std::size_t>(b * T + t)] = cache.positions[static_cast<std::size_t>(first + b)] + t;
    if (Status st = check(cache, tokens, positions, "prefill"); !st) return st;
    if (Status st = run(tokens, positions, cache, batch, T, first, nullptr, stream); !st) return st;
    for (std::int64_t b = 0; b < batch; ++b) cache.positions[static_cast<std::size_t>(first + b)] += T;
    return {};
  }

  /// One token per sequence: tokens[b] continues slots[b] (distinct). Logits [B, vocab] on the device.
  Status decode(const std::vector<std::int64_t>& tokens, Cache& cache, const std::vector<std::int64_t>& slots,
                cudaStream_t stream) {
    if (tokens.size() != slots.size() || tokens.empty())
      return Status::invalid("vla::models::TinyLM<Cuda>::decode: " + std::to_string(tokens.size()) + " tokens for " +
                             std::to_string(slots.size()) + " slots");
    std::vector<std::int64_t> sorted = slots, positions(slots.size());
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t i = 0; i < sorted.size(); ++i) {
      if (sorted[i] < 0 || sorted[i] >= cache.slots())
        return Status::invalid("vla::models::TinyLM<Cuda>::decode: slot " + std::to_string(sorted[i]) + " is out of range");
      if (i > 0 && sorted[i] == sorted[i - 1])
        return Status::invalid("vla::models::TinyLM<Cuda>::decode: slot " + std::to_string(sorted[i]) + " is given twice");
    }
    for (std::size_t b = 0; b < slots.size(); ++b) positions[b] = cache.positions[static_cast<std::size_t>(slots[b])];
    if (Status st = check(cache, tokens, positions, "decode"); !st) return st;
    const std::int64_t B = static_cast<std::int64_t>(slots.size());
    bool done = false;
    if (decode_graphs && !graph_failed_) {
      const Status st = decode_through_graph(tokens, positions, cache, slots, stream);
      if (!st && !graph_failed_) return st;  // the graph's launch itself failed
      done = st.ok();                        // else no graph could be made: plain launches below
    }
    if (!done)
      if (Status st = run(tokens, positions, cache, B, 1, 0, &slots, stream); !st) return st;
    for (std::int64_t s : slots) ++cache.positions[static_cast<std::size_t>(s)];
    return {};
  }

  /// One slot of every layer on the host (rolling a sequence back, moving it between caches).
  struct Snapshot {
    struct Head {
      std::vector<float> A, S, z;
      std::int64_t steps = 0;
    };
    std::vector<std::vector<Head>> layers;  ///< [layer][head]
    std::int64_t position = 0;
  };

  /// Copies slot `slot` of every layer to the host (waits for `stream`).
  Status save(const Cache& cache, std::int64_t slot, cudaStream_t stream, Snapshot& out) const {
    if (Status st = check_cache_slot(cache, slot, "save"); !st) return st;
    const std::int64_t dh = head_dim();
    Snapshot s;
    for (const auto& pool : cache.layers) {
      std::vector<Snapshot::Head> heads(static_cast<std::size_t>(cfg_.n_heads));
      for (std::int64_t h = 0; h < cfg_.n_heads; ++h) {
        auto& hd = heads[static_cast<std::size_t>(h)];
        hd.A.resize(static_cast<std::size_t>(dh * dh));
        hd.S.resize(static_cast<std::size_t>(dh * dh));
        hd.z.resize(static_cast<std::size_t>(dh));
        if (Status st = pool.download(slot, h, {hd.A.data(), hd.S.data(), hd.z.data(), &hd.steps}, stream); !st) return st;
      }
      s.layers.push_back(std::move(heads));
    }
    s.position = cache.positions[static_cast<std::size_t>(slot)];
    out = std::move(s);
    return {};
  }
  /// Slot `slot` back to a snapshot of this model. Every head is checked (finite, A symmetric positive
  /// definite, sizes) before any is written: a refused snapshot changes nothing.
  Status restore(Cache& cache, std::int64_t slot, const Snapshot& s, cudaStream_t stream) const {
    if (Status st = check_cache_slot(cache, slot, "restore"); !st) return st;
    const std::int64_t dh = head_dim();
    bool shape = s.layers.size() == cache.layers.size() && s.position >= 0 && s.position <= cfg_.max_seq_len;
    for (const auto& heads : s.layers) {
      shape = shape && static_cast<std::int64_t>(heads.size()) == cfg_.n_heads;
      for (const auto& hd : heads)
        shape = shape && static_cast<std::int64_t>(hd.A.size()) == dh * dh && static_cast<std::int64_t>(hd.S.size()) == dh * dh &&
                static_cast<std::int64_t>(hd.z.size()) == dh;
    }
    if (!shape) return Status::invalid("vla::models::TinyLM<Cuda>::restore: the snapshot is not one of this model");
    for (std::size_t l = 0; l < s.layers.size(); ++l)
      for (std::size_t h = 0; h < s.layers[l].size(); ++h) {
        const auto& hd = s.layers[l][h];
        const std::string bad = cuda::detail::state_violation(hd.A.data(), hd.S.data(), hd.z.data(), hd.steps, dh, dh);
        if (!bad.empty())
          return Status::invalid("vla::models::TinyLM<Cuda>::restore: layer " + std::to_string(l) + ", head " + std::to_string(h) +
                                 ": " + bad);
      }
    for (std::size_t l = 0; l < s.layers.size(); ++l)
      for (std::size_t h = 0; h < s.layers[l].size(); ++h) {
        const auto& hd = s.layers[l][h];
        if (Status st = cache.layers[l].upload(slot, static_cast<std::int64_t>(h), {hd.A.data(), hd.S.data(), hd.z.data(), &hd.steps},
                                               stream);
            !st)
          return st;
      }
    cache.positions[static_cast<std::size_t>(slot)] = s.position;
    return {};
  }
  /// Slot `slot` back to empty: fresh states, position 0.
  Status reset(Cache& cache, std::int64_t slot, cudaStream_t stream) const {
    if (Status st = check_cache_slot(cache, slot, "reset"); !st) return st;
    for (auto& pool : cache.layers)
      if (Status st = pool.reset(slot, stream); !st) return st;
    cache.positions[static_cast<std::size_t>(slot)] = 0;
    return {};
  }

  /// Decode steps through a CUDA graph: the step's ~26 launches captured once per (batch, slots,
  /// cache) and replayed, the tokens read from the pinned staging at each replay. On by default;
  /// if capture fails (it is refused on some drivers or under tools) the model falls back to plain
  /// launches for good, and says so in graph_note().
  bool decode_graphs = true;
  const std::string& graph_note() const { return graph_note_; }

  /// The last call's logits on the device, [rows, vocab], valid until the next call.
  const float* logits() const { return buf_ + off_logits_; }
  std::int64_t logits_rows() const { return rows_; }
  std::vector<float> logits_to_host(cudaStream_t stream) const {
    std::vector<float> h(static_cast<std::size_t>(rows_ * cfg_.vocab_size));
    if (!h.empty() && cudaMemcpyAsync(h.data(), logits(), h.size() * sizeof(float), cudaMemcpyDeviceToHost, stream) == cudaSuccess)
      cudaStreamSynchronize(stream);
    return h;
  }

 private:
  std::int64_t head_dim() const { return cfg_.d_model / cfg_.n_heads; }
  const float* w(const std::string& name) const {
    auto it = offset_.find(name);
    return it == offset_.end() ? nullptr : weights_ + it->second;
  }

  Status check_cache_slot(const Cache& cache, std::int64_t slot, const char* fn) const {
    if (Status st = check(cache, {}, {}, fn); !st) return st;
    if (slot < 0 || slot >= cache.slots())
      return Status::invalid(std::string("vla::models::TinyLM<Cuda>::") + fn + ": slot " + std::to_string(slot) + " is out of range");
    return {};
  }
  Status check(const Cache& cache, const std::vector<std::int64_t>& tokens, const std::vector<std::int64_t>& positions,
               const char* fn) const {
    const std::string where = std::string("vla::models::TinyLM<Cuda>::") + fn + ": ";
    if (!blas_) return Status::invalid(where + "the model is empty (create or load it)");
    bool ok = static_cast<std::int64_t>(cache.layers.size()) == cfg_.n_layers;
    for (const auto& p : cache.layers) ok = ok && p.slots() == cache.slots() && p.heads() == cfg_.n_heads && p.dk() == head_dim();
    if (!ok) return Status::invalid(where + "the cache is not one of this model (use make_cache)");
    for (std::int64_t t : tokens)
      if (t < 0 || t >= cfg_.vocab_size)
        return Status::invalid(where + "token id " + std::to_string(t) + " is outside the vocabulary (0.." +
                               std::to_string(cfg_.vocab_size - 1) + ")");
    for (std::int64_t p : positions)
      if (p >= cfg_.max_seq_len)
        return Status::invalid(where + "position " + std::to_string(p) + " is past max_seq_len (" + std::to_string(cfg_.max_seq_len) +
                               "): the position embedding ends there");
    return {};
  }

  // One decode step by replaying the captured graph (capturing it first when the batch, the slots,
  // the cache or the buffers changed). Returns invalid with graph_failed_ set when no graph could be
  // made (the caller then launches plainly); other errors are the launch's.
  Status decode_through_graph(const std::vector<std::int64_t>& tokens, const std::vector<std::int64_t>& positions, Cache& cache,
                              const std::vector<std::int64_t>& slots, cudaStream_t stream) {
    if (graph_failed_) return Status::invalid("graphs off");
    const std::int64_t B = static_cast<std::int64_t>(slots.size());
    if (Status st = reserve(B); !st) return st;
    std::vector<const void*> key_ptrs = {buf_, staging_};
    for (const auto& p : cache.layers) key_ptrs.push_back(p.buffers().A);
    const bool same = graph_exec_ && graph_slots_ == slots && graph_ptrs_ == key_ptrs;
    rows_ = B;
    stage(tokens, positions, &slots, B);
    if (!same) {
      if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
      graph_exec_ = nullptr;
      cudaError_t e = cap_stream_ ? cudaSuccess : cudaStreamCreateWithFlags(&cap_stream_, cudaStreamNonBlocking);
      if (e == cudaSuccess && !graph_done_) e = cudaEventCreateWithFlags(&graph_done_, cudaEventDisableTiming);
      cudaGraph_t g = nullptr;
      Status st;
      if (e == cudaSuccess) e = cudaStreamBeginCapture(cap_stream_, cudaStreamCaptureModeThreadLocal);
      if (e == cudaSuccess) {
        st = device_part(cache, B, 1, 0, true, cap_stream_, /*record_upload=*/false);
        e = cudaStreamEndCapture(cap_stream_, &g);
      }
      if (e == cudaSuccess && st) e = cudaGraphInstantiate(&graph_exec_, g, 0ull);
      if (g) cudaGraphDestroy(g);
      if (e != cudaSuccess || !st) {
        graph_note_ = "decode graphs off: " + (st ? std::string(cudaGetErrorString(e)) : st.message);
        (void)cudaGetLastError();
        graph_exec_ = nullptr;
        graph_failed_ = true;
        return Status::invalid(graph_note_);
      }
      graph_slots_ = slots;
      graph_ptrs_ = key_ptrs;
      graph_note_ = "decode graphs on";
    }
    cudaError_t e = cudaGraphLaunch(graph_exec_, stream);
    if (e == cudaSuccess) e = cudaEventRecord(graph_done_, stream);
    return Status::from_cuda(e, "vla::models::TinyLM<Cuda>: decode graph launch");
  }

  // Grows the activation buffer to `rows` token rows (synchronous cudaMalloc when it grows).
  Status reserve(std::int64_t rows) {
    if (rows <= cap_rows_) return {};
    const std::int64_t d = cfg_.d_model, wide = std::max(cfg_.d_ff, cfg_.vocab_size);
    // x, h, q, k, v, u, o: d each; f: max(d_ff, vocab); beta: H; logits: vocab; ids: 2 + slots (int64).
    const std::int64_t per_row = 7 * d + wide + cfg_.n_heads + cfg_.vocab_size + 8;
    float* b = nullptr;
    cudaError_t e = cudaMalloc(&b, static_cast<std::size_t>(rows * per_row + 64) * sizeof(float));
    if (e != cudaSuccess) return Status::from_cuda(e, "vla::models::TinyLM<Cuda>: activations");
    std::int64_t* staging = nullptr;
    e = cudaMallocHost(&staging, static_cast<std::size_t>(rows * 3) * sizeof(std::int64_t));
    if (e != cudaSuccess) {
      cudaFree(b);
      return Status::from_cuda(e, "vla::models::TinyLM<Cuda>: staging");
    }
    if (!upload_done_ && (e = cudaEventCreateWithFlags(&upload_done_, cudaEventDisableTiming)) != cudaSuccess) {
      cudaFree(b);
      cudaFreeHost(staging);
      return Status::from_cuda(e, "vla::models::TinyLM<Cuda>: event");
    }
    cudaDeviceSynchronize();  // work in flight may still read the old buffers
    if (buf_) cudaFree(buf_);
    if (staging_) cudaFreeHost(staging_);
    buf_ = b;
    staging_ = staging;
    cap_rows_ = rows;
    std::int64_t at = 0;
    auto take = [&](std::int64_t n) {
      const std::int64_t r = at;
      at += (n + 3) / 4 * 4;
      return r;
    };
    off_x_ = take(rows * d), off_h_ = take(rows * d), off_q_ = take(rows * d), off_k_ = take(rows * d);
    off_v_ = take(rows * d), off_u_ = take(rows * d), off_o_ = take(rows * d);
    off_f_ = take(rows * wide), off_beta_ = take(rows * cfg_.n_heads), off_logits_ = take(rows * cfg_.vocab_size);
    off_ids_ = take(rows * 8);  // tokens, positions (int64) and decode slots (int32)
    return {};
  }

  // y[rows, out] = x[rows, in] · Wᵀ (+ beta·y), W row-major [out, in]: in cuBLAS's column-major
  // terms yᵀ (out × rows) = W (op T of the in × out column-major Wᵀ) · xᵀ (in × rows).
  Status gemm(const float* x, const float* W, float* y, std::int64_t rows, std::int64_t in, std::int64_t out, float beta) const {
    const float alpha = 1.f;
    const cublasStatus_t s = cublasSgemm(blas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out), static_cast<int>(rows),
                                         static_cast<int>(in), &alpha, W, static_cast<int>(in), x, static_cast<int>(in), &beta, y,
                                         static_cast<int>(out));
    return s == CUBLAS_STATUS_SUCCESS ? Status{} : Status::invalid("vla::models::TinyLM<Cuda>: cublasSgemm failed (status " + std::to_string(static_cast<int>(s)) + ")");
  }
  // q, k, v = x W_qᵀ, x W_kᵀ, x W_vᵀ in one strided-batched call: the weights lie d·d floats apart
  // (create() places them so), the outputs `out_stride` floats apart.
  Status gemm_qkv(const float* x, const float* Wq, float* q, std::int64_t out_stride, std::int64_t rows, std::int64_t d) const {
    const float alpha = 1.f, beta = 0.f;
    const int n = static_cast<int>(d);
    const cublasStatus_t s = cublasSgemmStridedBatched(blas_, CUBLAS_OP_T, CUBLAS_OP_N, n, static_cast<int>(rows), n, &alpha, Wq, n,
                                                       d * d, x, n, 0, &beta, q, n, out_stride, 3);
    return s == CUBLAS_STATUS_SUCCESS ? Status{} : Status::invalid("vla::models::TinyLM<Cuda>: cublasSgemmStridedBatched failed (status " + std::to_string(static_cast<int>(s)) + ")");
  }
  Status launched(const char* what) const { return Status::from_cuda(cudaGetLastError(), what); }

  template <class Op>
  Status op_call(float* q, float* k, float* v, float* u, float* beta, float* o, Cache& cache, std::int64_t l, std::int64_t batch,
                 std::int64_t T, std::int64_t first, const std::int32_t* d_slots, cudaStream_t stream) const {
    auto& pool = cache.layers[static_cast<std::size_t>(l)];
    if (d_slots) {
      cuda::DecodeArgs<float> a;
      a.batch = batch, a.heads = cfg_.n_heads, a.dk = a.dv = head_dim();
      a.q = q, a.k = k, a.v = v, a.o = o;
      if (Op::uses_u) a.u = u;
      if (Op::uses_beta) a.beta = beta;
      a.state = pool.buffers();
      a.state_index = d_slots;
      a.pool_size = pool.slots();
      return cuda::decode_step<Op>(a, cfg_.op, stream);
    }
    ForwardArgs<float, float> a;
    a.batch = batch, a.seq_len = T, a.heads = cfg_.n_heads, a.dk = a.dv = head_dim();
    a.q = q, a.k = k, a.v = v, a.o = o;
    if (Op::uses_u) a.u = u;
    if (Op::uses_beta) a.beta = beta;
    const StateBuffers<float> s = pool.slots_from(first);
    a.initial_state = {s.A, s.S, s.z, s.steps};
    a.final_state = s;
    return cuda::forward<Op, float>(a, cfg_.op, stream);
  }

  // Tokens, positions and slots into the pinned staging owned by the model (the device part copies
  // them up), so a call does not wait for the GPU: only for the last upload (or decode graph) that
  // read the staging, normally long done.
  void stage(const std::vector<std::int64_t>& tokens, const std::vector<std::int64_t>& positions,
             const std::vector<std::int64_t>* slots, std::int64_t R) {
    if (upload_done_) cudaEventSynchronize(upload_done_);
    if (graph_done_) cudaEventSynchronize(graph_done_);
    std::copy(tokens.begin(), tokens.end(), staging_);
    std::copy(positions.begin(), positions.end(), staging_ + R);
    if (slots) {
      auto* s32 = reinterpret_cast<std::int32_t*>(staging_ + 2 * R);
      for (std::size_t i = 0; i < slots->size(); ++i) s32[i] = static_cast<std::int32_t>((*slots)[i]);
    }
  }

  Status run(const std::vector<std::int64_t>& tokens, const std::vector<std::int64_t>& positions, Cache& cache,
             std::int64_t batch, std::int64_t T, std::int64_t first, const std::vector<std::int64_t>* slots, cudaStream_t stream) {
    const std::int64_t R = batch * T;
    if (Status st = reserve(R); !st) return st;
    rows_ = R;
    stage(tokens, positions, slots, R);
    return device_part(cache, batch, T, first, slots != nullptr, stream, /*record_upload=*/true);
  }

  // Everything on the device for R = batch·T rows whose ids are in the staging: the upload, the
  // layers, the head. Also what a decode graph captures (record_upload false: the graph's end is
  // recorded instead).
  Status device_part(Cache& cache, std::int64_t batch, std::int64_t T, std::int64_t first, bool decode, cudaStream_t stream,
                     bool record_upload) {
    const std::int64_t R = batch * T, d = cfg_.d_model, H = cfg_.n_heads;
    cublasSetStream(blas_, stream);
    float *x = buf_ + off_x_, *h = buf_ + off_h_, *q = buf_ + off_q_, *k = buf_ + off_k_, *v = buf_ + off_v_, *u = buf_ + off_u_,
          *o = buf_ + off_o_, *f = buf_ + off_f_, *beta = buf_ + off_beta_, *lg = buf_ + off_logits_;
    auto* ids = reinterpret_cast<std::int64_t*>(buf_ + off_ids_);
    auto* d_slots = reinterpret_cast<std::int32_t*>(ids + 2 * R);
    const std::size_t bytes = (2 * R + (decode ? (R + 1) / 2 : 0)) * sizeof(std::int64_t);
    cudaError_t e = cudaMemcpyAsync(ids, staging_, bytes, cudaMemcpyHostToDevice, stream);
    if (e == cudaSuccess && record_upload) e = cudaEventRecord(upload_done_, stream);
    if (e != cudaSuccess) return Status::from_cuda(e, "vla::models::TinyLM<Cuda>: token upload");
    using cuda_detail::grid_for;
    const unsigned ln_grid = static_cast<unsigned>((R + 7) / 8);
    using N = TinyLMNames;
    const io::AttentionNames an = N::attention();
    cuda_detail::embed<<<grid_for(R * d), 256, 0, stream>>>(ids, ids + R, w(N::weight(N::tok())), w(N::weight(N::pos())), x, R,
                                                            static_cast<int>(d));
    if (Status st = launched("vla::models::TinyLM<Cuda>: embed"); !st) return st;
    const float eps = static_cast<float>(cfg_.norm_eps);
    for (std::int64_t l = 0; l < cfg_.n_layers; ++l) {
      auto attn = [&](const std::string& name) { return N::attn_module(l, name); };
      // The previous block's ff.2 bias is added to x here (none before the first block).
      const float* pending = l == 0 ? nullptr : w(N::bias(N::ff2(l - 1)));
      cuda_detail::layer_norm<<<ln_grid, 256, 0, stream>>>(x, h, w(N::weight(N::ln1(l))), w(N::bias(N::ln1(l))), pending, R,
                                                           static_cast<int>(d), eps);
      Status st = launched("vla::models::TinyLM<Cuda>: ln1");
      if (st) st = gemm_qkv(h, w(N::weight(attn(an.q))), q, off_k_ - off_q_, R, d);
      const bool vla_kind = cfg_.attention == layers::AttentionKind::vla;
      if (st)
        cuda_detail::qkv_bias_act<<<grid_for(3 * R * d), 256, 0, stream>>>(q, off_k_ - off_q_, w(N::bias(attn(an.q))),
                                                                            w(N::bias(attn(an.k))), w(N::bias(attn(an.v))), R, static_cast<int>(d),
                                                                            cfg_.attention == layers::AttentionKind::linear_attention);
      if (st && vla_kind) st = gemm(k, w(N::weight(attn(an.u))), u, R, d, d, 0.f);  // from the raw keys
      if (st && vla_kind) cuda_detail::bias_act<<<grid_for(R * d), 256, 0, stream>>>(k, nullptr, R, static_cast<int>(d), cuda_detail::kEluPlusOne);
      if (st && cfg_.attention == layers::AttentionKind::deltanet) {
        st = gemm(h, w(N::weight(attn(an.beta))), beta, R, d, H, 0.f);
        if (st) cuda_detail::bias_act<<<grid_for(R * H), 256, 0, stream>>>(beta, w(N::bias(attn(an.beta))), R, static_cast<int>(H), cuda_detail::kSigmoidBeta);
      }
      if (st) st = launched("vla::models::TinyLM<Cuda>: projections");
      const std::int32_t* ds = decode ? d_slots : nullptr;
      if (st) {
        switch (cfg_.attention) {
          case layers::AttentionKind::vla: st = op_call<op::Vla>(q, k, v, u, beta, o, cache, l, batch, T, first, ds, stream); break;
          case layers::AttentionKind::linear_attention:
            st = op_call<op::LinearAttention>(q, k, v, u, beta, o, cache, l, batch, T, first, ds, stream);
            break;
          case layers::AttentionKind::deltanet: st = op_call<op::DeltaNet>(q, k, v, u, beta, o, cache, l, batch, T, first, ds, stream); break;
        }
      }
      if (st && w(N::weight(attn(an.out_norm)))) {
        cuda_detail::layer_norm<<<ln_grid, 256, 0, stream>>>(o, o, w(N::weight(attn(an.out_norm))), w(N::bias(attn(an.out_norm))),
                                                             nullptr, R, static_cast<int>(d), eps);
        st = launched("vla::models::TinyLM<Cuda>: norm_o");
      }
      // x += o W_oᵀ + b_o, then x += W₂ GELU(W₁ LN₂(x) + b₁) + b₂: the residuals through GEMM's beta = 1,
      // b_o and b₂ added by the norm that reads x next (layer_norm's add_bias).
      if (st) st = gemm(o, w(N::weight(attn(an.o))), x, R, d, d, 1.f);
      if (st) cuda_detail::layer_norm<<<ln_grid, 256, 0, stream>>>(x, h, w(N::weight(N::ln2(l))), w(N::bias(N::ln2(l))),
                                                                   w(N::bias(attn(an.o))), R, static_cast<int>(d), eps);
      if (st) st = gemm(h, w(N::weight(N::ff1(l))), f, R, d, cfg_.d_ff, 0.f);
      if (st) cuda_detail::bias_act<<<grid_for(R * cfg_.d_ff), 256, 0, stream>>>(f, w(N::bias(N::ff1(l))), R, static_cast<int>(cfg_.d_ff), cuda_detail::kGelu);
      if (st) st = gemm(f, w(N::weight(N::ff2(l))), x, R, cfg_.d_ff, d, 1.f);
      if (st) st = launched("vla::models::TinyLM<Cuda>: block");
      if (!st) return st;
    }
    const float* pending = cfg_.n_layers == 0 ? nullptr : w(N::bias(N::ff2(cfg_.n_layers - 1)));
    cuda_detail::layer_norm<<<ln_grid, 256, 0, stream>>>(x, h, w(N::weight(N::ln_f())), w(N::bias(N::ln_f())), pending, R,
                                                         static_cast<int>(d), eps);
    if (Status st = launched("vla::models::TinyLM<Cuda>: ln_f"); !st) return st;
    const float* head = w(N::weight(N::head()));
    return gemm(h, head ? head : w(N::weight(N::tok())), lg, R, d, cfg_.vocab_size, 0.f);
  }

  void swap(TinyLM& o) noexcept {
    std::swap(cfg_, o.cfg_);
    std::swap(offset_, o.offset_);
    std::swap(weights_, o.weights_);
    std::swap(blas_, o.blas_);
    std::swap(buf_, o.buf_);
    std::swap(staging_, o.staging_);
    std::swap(upload_done_, o.upload_done_);
    std::swap(decode_graphs, o.decode_graphs);
    std::swap(graph_exec_, o.graph_exec_);
    std::swap(graph_done_, o.graph_done_);
    std::swap(cap_stream_, o.cap_stream_);
    std::swap(graph_failed_, o.graph_failed_);
    std::swap(graph_slots_, o.graph_slots_);
    std::swap(graph_ptrs_, o.graph_ptrs_);
    std::swap(graph_note_, o.graph_note_);
    std::swap(cap_rows_, o.cap_rows_);
    std::swap(rows_, o.rows_);
    std::swap(off_x_, o.off_x_), std::swap(off_h_, o.off_h_), std::swap(off_q_, o.off_q_), std::swap(off_k_, o.off_k_);
    std::swap(off_v_, o.off_v_), std::swap(off_u_, o.off_u_), std::swap(off_o_, o.off_o_);
    std::swap(off_f_, o.off_f_), std::swap(off_beta_, o.off_beta_), std::swap(off_logits_, o.off_logits_), std::swap(off_ids_, o.off_ids_);
  }
  void release() {
    if (weights_) cudaFree(weights_);
    if (buf_) cudaFree(buf_);
    if (blas_) cublasDestroy(blas_);
    if (staging_) cudaFreeHost(staging_);
    if (upload_done_) cudaEventDestroy(upload_done_);
    if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
    if (graph_done_) cudaEventDestroy(graph_done_);
    if (cap_stream_) cudaStreamDestroy(cap_stream_);
    graph_exec_ = nullptr;
    graph_done_ = nullptr;
    cap_stream_ = nullptr;
    weights_ = buf_ = nullptr;
    blas_ = nullptr;
    staging_ = nullptr;
    upload_done_ = nullptr;
  }

  TinyLMConfig cfg_;
  std::map<std::string, std::size_t> offset_;
  float* weights_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  float* buf_ = nullptr;
  std::int64_t* staging_ = nullptr;  // pinned: tokens, positions, slots of the call being uploaded
  cudaEvent_t upload_done_ = nullptr;
  cudaGraphExec_t graph_exec_ = nullptr;  // the captured decode step
  cudaEvent_t graph_done_ = nullptr;      // recorded after each replay: the staging is free again
  cudaStream_t cap_stream_ = nullptr;     // capture needs a stream of its own (not the legacy default)
  bool graph_failed_ = false;
  std::vector<std::int64_t> graph_slots_;
  std::vector<const void*> graph_ptrs_;
  std::string graph_note_;
  std::int64_t cap_rows_ = 0, rows_ = 0;
  std::int64_t off_x_ = 0, off_h_ = 0, off_q_ = 0, off_k_ = 0, off_v_ = 0, off_u_ = 0, off_o_ = 0, off_f_ = 0,
               off_beta_ = 0, off_logits_ = 0, off_ids_ = 0;
};

}  // namespace models
}  // namespace vla
