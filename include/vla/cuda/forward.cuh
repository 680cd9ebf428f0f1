// vla/cuda/forward.cuh — the batched forward on the GPU: host-side checks, then one fused launch.
//
//   vla::cuda::Status st = vla::cuda::forward<vla::op::Vla>(args, cfg, stream);
//   // or, through the backend trait:  vla::forward<vla::backend::Cuda>(args, cfg, stream)
//
// args holds device pointers in the layouts of vla/layout.hpp ([B, T, H, D] or packed varlen with
// device cu_seqlens); token type In ∈ {float, __half, __nv_bfloat16}; state and arithmetic float.
// Everything that can be checked on the host is checked before the launch and returned as an
// error Status; the launch itself is asynchronous on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <exception>
#include <string>
#include <type_traits>
#include <vector>

#include "vla/backend/backend.hpp"
#include "vla/config.hpp"
#include "vla/layout.hpp"
#include "vla/cuda/detail/dispatch.cuh"
#include "vla/cuda/detail/baseline_kernel.cuh"
#include "vla/cuda/detail/chunked_kernel.cuh"
#include "vla/cuda/detail/decode_kernel.cuh"
#include "vla/cuda/detail/recurrent_kernel.cuh"
#include "vla/cuda/status.cuh"

namespace vla {
namespace cuda {

/// Options of a CUDA forward. The defaults need nothing.
struct Options {
  /// A host copy of args.cu_seqlens (N+1 entries). When given, cu_seqlens is checked on the host
  /// without touching the stream; when not, the device array is copied back and the call waits
  /// for `stream` once (see docs/cuda.md).
  const std::int64_t* host_cu_seqlens = nullptr;
  /// Scan q, k, v, u for non-finite entries and β for values outside (0, 1] before the launch (one
  /// extra read of the inputs and one wait for `stream`). Off by default: the kernel itself never
  /// traps, and non-finite inputs give non-finite outputs.
  bool check_inputs = false;
  /// Recurrent (docs/maths.md §2, token by token) or chunked (§4, tensor cores; VLA only). `automatic`
  /// takes the chunked path for VLA when the longest sequence has at least kChunkedFrom tokens and
  /// the head dims fit its shared memory (docs/cuda.md), else the recurrent one.
  Path path = Path::automatic;
  /// Tokens per chunk. Recurrent path: tokens staged per shared-memory chunk, 0 picks the default
  /// (32 for head dims ≤ 64, else 16). Chunked path: 0 or the one size built (ChunkedLayout::C, 32 by default; VLA_CUDA_CHUNKED_C).
  int chunk = 0;

  static constexpr std::int64_t kChunkedFrom = 256;
};

namespace detail {

template <class T>
bool aligned16(const T* p) {
  return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0;
}

template <class In>
__global__ void check_inputs_kernel(const In* x, std::int64_t n, unsigned* flags, unsigned bit, int is_beta) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const float f = to_float(x[i]);
    const bool bad = is_beta ? !(f > 0.f && f <= 1.f) : !(f - f == 0.f);
    if (bad) {
      atomicOr(flags, bit);
      return;
    }
  }
}

template <class In>
Status scan_inputs(const In* const* bufs, const std::int64_t* counts, const char* const* names, int nbufs,
                   int beta_index, cudaStream_t stream) {
  unsigned* dflag = nullptr;
  cudaError_t e = cudaMallocAsync(&dflag, sizeof(unsigned), stream);
  if (e != cudaSuccess) return Status::from_cuda(e, "vla::cuda: input check (allocation)");
  e = cudaMemsetAsync(dflag, 0, sizeof(unsigned), stream);
  for (int i = 0; i < nbufs && e == cudaSuccess; ++i) {
    if (!bufs[i] || counts[i] == 0) continue;
    const int grid = static_cast<int>(std::min<std::int64_t>((counts[i] + 255) / 256, 4096));
    check_inputs_kernel<In><<<grid, 256, 0, stream>>>(bufs[i], counts[i], dflag, 1u << i, i == beta_index);
    e = cudaGetLastError();
  }
  unsigned hflag = 0;
  if (e == cudaSuccess) e = cudaMemcpyAsync(&hflag, dflag, sizeof(unsigned), cudaMemcpyDeviceToHost, stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
  cudaFreeAsync(dflag, stream);
  if (e != cudaSuccess) return Status::from_cuda(e, "vla::cuda: input check");
  for (int i = 0; i < nbufs; ++i)
    if (hflag & (1u << i))
      return Status::invalid(std::string("vla::forward: ") + names[i] +
                             (i == beta_index ? " has an entry outside (0, 1]" : " has a non-finite entry"));
  return {};
}

/// Default tokens per chunk for head dims (dk, dv): VLA's role-split kernel 32 (16 above d = 64),
/// the baselines' single-role kernel 64 (32), as measured (bench/gpu/RESULTS.md).
template <class Op>
int default_chunk(std::int64_t dk, std::int64_t dv) {
  const bool single_role = !Op::uses_A && VLA_CUDA_BASELINE_SINGLE_ROLE;
  return std::max(dk, dv) <= 64 ? (single_role ? 64 : 32) : (single_role ? 32 : 16);
}

/// What a launch needs to know about the current device, queried once per device and cached
/// (the queries cost microseconds, a decode step itself only a few).
struct DeviceInfo {
  int optin_smem = 0, sms = 0;
};
inline Status device_info(DeviceInfo& out) {
  constexpr int kMaxDevices = 64;
  static DeviceInfo cache[kMaxDevices];
  static std::atomic<bool> known[kMaxDevices];
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return Status::from_cuda(e, "vla::cuda: cudaGetDevice");
  if (device >= 0 && device < kMaxDevices && known[device].load(std::memory_order_acquire)) {
    out = cache[device];
    return {};
  }
  DeviceInfo d;
  e = cudaDeviceGetAttribute(&d.optin_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess) return Status::from_cuda(e, "vla::cuda: querying the device");
  if (device >= 0 && device < kMaxDevices) {
    cache[device] = d;  // idempotent: racing writers store the same values
    known[device].store(true, std::memory_order_release);
  }
  out = d;
  return {};
}

/// Names one kernel instantiation (its cache below is per instantiation, not per signature).
template <class Op, class In, int DK, int DV, int Kind>
struct KernelTag {};

/// Per kernel and device: the dynamic shared memory it has been allowed (cudaFuncSetAttribute) and
/// how many of its CTAs fit on an SM with that much. Set once per (kernel, device, size).
template <class Tag, class Kernel>
Status prepare_kernel(Kernel kernel, int threads, std::size_t smem, int* per_sm = nullptr) {
  constexpr int kMaxDevices = 64;
  struct Entry {
    std::atomic<std::size_t> smem{0};
    std::atomic<int> per_sm{0};
  };
  static Entry cache[kMaxDevices];
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return Status::from_cuda(e, "vla::cuda: cudaGetDevice");
  Entry* entry = (device >= 0 && device < kMaxDevices) ? &cache[device] : nullptr;
  if (entry && entry->smem.load(std::memory_order_acquire) == smem + 1) {
    if (per_sm) *per_sm = entry->per_sm.load(std::memory_order_relaxed);
    return {};
  }
  if (smem > 48 * 1024) {
    e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return Status::from_cuda(e, "vla::cuda: cudaFuncSetAttribute");
  }
  int n = 0;
  e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem);
  if (e != cudaSuccess) return Status::from_cuda(e, "vla::cuda: occupancy query");
  if (entry) {
    entry->per_sm.store(n, std::memory_order_relaxed);
    entry->smem.store(smem + 1, std::memory_order_release);
  }
  if (per_sm) *per_sm = n;
  return {};
}

/// Launches the forward kernel for op Op on (DK, DV): one CTA per (sequence, head). p.chunk must
/// be set; it is lowered while the shared memory it needs exceeds the device's opt-in limit.
template <class Op, class In, int DK, int DV>
Status launch_recurrent(RecurrentParams<In> p, std::int64_t blocks, cudaStream_t stream) {
  if (blocks == 0) return {};
  if (blocks > 0x7fffffffLL) return Status::invalid("vla::cuda: batch × heads exceeds the grid limit (2^31 − 1)");
  DeviceInfo dev;
  Status st = device_info(dev);
  if (!st) return st;
#if VLA_CUDA_BASELINE_SINGLE_ROLE
  if constexpr (!Op::uses_A) {  // the baselines: single-role kernel (baseline_kernel.cuh)
    using BG = BaselineGeometry<DK, DV>;
    using BL = BaselineLayout<In, DK, DV, Op::uses_z>;
    while (p.chunk > 1 && BL(p.chunk).bytes() > static_cast<std::size_t>(dev.optin_smem)) p.chunk /= 2;
    const std::size_t smem = BL(p.chunk).bytes();
    if (smem > static_cast<std::size_t>(dev.optin_smem))
      return Status::invalid("vla::cuda: the kernel needs more shared memory than this device offers");
    auto kernel = &baseline_kernel<Op, In, DK, DV>;
    st = prepare_kernel<KernelTag<Op, In, DK, DV, 3>>(kernel, BG::NT, smem);
    if (!st) return st;
    kernel<<<static_cast<unsigned>(blocks), BG::NT, smem, stream>>>(p);
    return Status::from_cuda(cudaGetLastError(), "vla::cuda: kernel launch");
  } else
#endif
  {
  using G = GeometryOf<Op, DK, DV>;
  using Lay = SmemLayout<Op, In, DK, DV>;
  while (p.chunk > 1 && Lay(p.chunk).bytes() > static_cast<std::size_t>(dev.optin_smem)) p.chunk /= 2;
  const std::size_t smem = Lay(p.chunk).bytes();
  if (smem > static_cast<std::size_t>(dev.optin_smem))
    return Status::invalid("vla::cuda: the kernel needs more shared memory than this device offers");
  auto kernel = &recurrent_kernel<Op, In, DK, DV>;
  st = prepare_kernel<KernelTag<Op, In, DK, DV, 0>>(kernel, G::NT, smem);
  if (!st) return st;
  kernel<<<static_cast<unsigned>(blocks), G::NT, smem, stream>>>(p);
  return Status::from_cuda(cudaGetLastError(), "vla::cuda: kernel launch");
  }
}

/// The largest dynamic shared memory any supported device offers a CTA (sm_90: 227 KiB); kernels
/// that need more are not instantiated.
inline constexpr std::size_t kMaxOptinSmem = 232448;

/// Whether the chunked kernel for (In, DK, DV) is built (its shared memory fits some device).
template <class In, int DK, int DV>
constexpr bool chunked_built() {
  return ChunkedLayout<In, DK, DV>::bytes <= kMaxOptinSmem;
}

/// Launches the chunked VLA kernel (one CTA per (sequence, head)); `fits` is set to whether the
/// kernel exists and fits this device's shared memory (nothing is launched when it does not).
template <class In, int DK, int DV>
Status launch_chunked(const RecurrentParams<In>& p, std::int64_t blocks, cudaStream_t stream, bool& fits) {
  using L = ChunkedLayout<In, DK, DV>;
  fits = false;
  if constexpr (!chunked_built<In, DK, DV>()) {
    return {};
  } else {
    DeviceInfo dev;
    Status st = device_info(dev);
    if (!st) return st;
    if (L::bytes > static_cast<std::size_t>(dev.optin_smem)) return {};
    fits = true;
    if (blocks == 0) return {};
    if (blocks > 0x7fffffffLL) return Status::invalid("vla::cuda: batch × heads exceeds the grid limit (2^31 − 1)");
    auto kernel = &chunked_vla_kernel<In, DK, DV>;
    st = prepare_kernel<KernelTag<op::Vla, In, DK, DV, 4>>(kernel, L::NT, L::bytes);
    if (!st) return st;
    kernel<<<static_cast<unsigned>(blocks), L::NT, L::bytes, stream>>>(p);
    return Status::from_cuda(cudaGetLastError(), "vla::cuda: chunked kernel launch");
  }
}

/// Launches the decode kernel: p.pairs (sequence, head) pairs over as many persistent CTAs as fit.
template <class Op, class In, int DK, int DV>
Status launch_decode(RecurrentParams<In> p, cudaStream_t stream) {
  if (p.pairs == 0) return {};
  DeviceInfo dev;
  Status st = device_info(dev);
  if (!st) return st;
#if VLA_CUDA_DECODE_WARP
  {  // one warp per pair, as many warps (slots) per CTA as fit, one CTA per SM (decode_kernel.cuh)
    using W = WarpDecodeLayout<Op, In, DK, DV>;
    const int nw = static_cast<int>(std::min<std::size_t>(16, static_cast<std::size_t>(dev.optin_smem) / W::bytes));
    if (nw < 1) return Status::invalid("vla::cuda: the decode kernel needs more shared memory than this device offers");
    const std::size_t smem = std::size_t(nw) * W::bytes;
    auto kernel = &decode_warp_kernel<Op, In, DK, DV>;
    st = prepare_kernel<KernelTag<Op, In, DK, DV, 2>>(kernel, 32 * nw, smem);
    if (!st) return st;
    const std::int64_t blocks = std::min<std::int64_t>((p.pairs + nw - 1) / nw, dev.sms);
    kernel<<<static_cast<unsigned>(blocks), 32 * nw, smem, stream>>>(p);
    return Status::from_cuda(cudaGetLastError(), "vla::cuda: decode kernel launch");
  }
#else
  using G = GeometryOf<Op, DK, DV>;
  using D = DecodeLayout<Op, In, DK, DV>;
  const std::size_t smem = D::bytes();
  if (smem > static_cast<std::size_t>(dev.optin_smem))
    return Status::invalid("vla::cuda: the decode kernel needs more shared memory than this device offers");
  auto kernel = &decode_kernel<Op, In, DK, DV>;
  int per_sm = 0;
  st = prepare_kernel<KernelTag<Op, In, DK, DV, 1>>(kernel, G::NT, smem, &per_sm);
  if (!st) return st;
  const std::int64_t blocks = std::min<std::int64_t>(p.pairs, std::int64_t(std::max(per_sm, 1)) * dev.sms);
  kernel<<<static_cast<unsigned>(blocks), G::NT, smem, stream>>>(p);
  return Status::from_cuda(cudaGetLastError(), "vla::cuda: decode kernel launch");
#endif
}

/// The kernel parameters for a forward's buffers and config: tokens, both states, and the config's
/// constants rounded to float once (as the CPU float backend does). The forward and the decode step
/// (a T = 1 forward over a pool) both start from this.
template <class In>
RecurrentParams<In> make_params(const ForwardArgs<In, float>& a, const Config& cfg) {
  RecurrentParams<In> p;
  p.heads = a.heads;
  p.seq_len = a.varlen() ? 0 : a.seq_len;
  p.cu_seqlens = a.cu_seqlens;
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.u = a.u;
  p.beta = a.beta;
  p.o = a.o;
  p.A0 = a.initial_state.A;
  p.S0 = a.initial_state.S;
  p.z0 = a.initial_state.z;
  p.steps0 = a.initial_state.steps;
  p.A1 = a.final_state.A;
  p.S1 = a.final_state.S;
  p.z1 = a.final_state.z;
  p.steps1 = a.final_state.steps;
  p.inv_lambda0 = 1.f / static_cast<float>(cfg.lambda0);
  p.stab_eps = static_cast<float>(cfg.stab_eps);
  p.refresh_eps = static_cast<float>(cfg.refresh_eps);
  p.denom_eps = static_cast<float>(cfg.denom_eps);
  p.inv_sqrt_dk = 1.f / std::sqrt(static_cast<float>(a.dk));
  p.refresh_period = cfg.refresh_period;
  p.normalize = cfg.normalize_output ? 1 : 0;
  return p;
}

inline std::int64_t pow2_at_least(std::int64_t x) {
  std::int64_t c = 1;
  while (c < x) c *= 2;
  return c;
}

}  // namespace detail

/// The batched forward of op `Op` (op::Vla, op::LinearAttention, op::DeltaNet) on the GPU.
/// Checks (on the host, before any launch): the config, extents and required pointers
/// (vla::detail::check_args), head dims ∈ {32, 64, 128}, 16-byte alignment of the token and state
/// buffers, cu_seqlens (see Options). The initial and final state may be the same buffers.
template <class Op, class In>
Status forward(const ForwardArgs<In, float>& a, const Config& cfg, cudaStream_t stream, const Options& opt = {}) {
  static_assert(detail::IsTokenType<In>::value, "vla::cuda: token type must be float, __half or __nv_bfloat16");
  try {
    cfg.validate_for<float>();  // also: no floor underflows, 1/lambda0 finite, in float
    vla::detail::check_args<Op>(a);
  } catch (const std::exception& ex) {
    return Status::invalid(ex.what());
  }
  if (!detail::supported_head_dim(a.dk) || !detail::supported_head_dim(a.dv))
    return detail::dispatch_head_dims(a.dk, a.dv, [](auto, auto) { return Status{}; });
  if (opt.chunk < 0) return Status::invalid("vla::cuda::Options::chunk must be >= 0");
  constexpr bool kHasChunked = std::is_same<Op, op::Vla>::value;
  if (opt.path == Path::chunked && !kHasChunked)
    return Status::invalid(std::string(Op::name) + ": no chunked path on the GPU (Path::chunked is for VLA)");
  if (opt.path == Path::chunked && opt.chunk != 0 && opt.chunk != detail::ChunkedLayout<In, 64, 64>::C)
    return Status::invalid("vla::cuda: the chunked path is built for chunk = " +
                           std::to_string(detail::ChunkedLayout<In, 64, 64>::C) + " (or 0, the default)");
  const bool aligned = detail::aligned16(a.q) && detail::aligned16(a.k) && detail::aligned16(a.v) &&
                       detail::aligned16(a.o) && (!Op::uses_u || detail::aligned16(a.u)) &&
                       detail::aligned16(a.initial_state.A) && detail::aligned16(a.initial_state.S) &&
                       detail::aligned16(a.final_state.A) && detail::aligned16(a.final_state.S);
  if (!aligned)
    return Status::invalid(std::string(Op::name) + ": q, k, v, u, o and the state buffers A, S must be 16-byte aligned");

  // Token count and the longest sequence: from cu_seqlens (checked on the host) or B·T.
  std::int64_t tokens = a.batch * a.seq_len, longest = a.seq_len;
  if (a.varlen()) {
    std::vector<std::int64_t> copy;
    const std::int64_t* cu = opt.host_cu_seqlens;
    if (!cu) {
      copy.resize(static_cast<std::size_t>(a.batch + 1));
      cudaError_t e = cudaMemcpyAsync(copy.data(), a.cu_seqlens, copy.size() * sizeof(std::int64_t),
                                      cudaMemcpyDeviceToHost, stream);
      if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
      if (e != cudaSuccess) return Status::from_cuda(e, "vla::cuda: reading cu_seqlens back");
      cu = copy.data();
    }
    try {
      tokens = vla::detail::check_cu_seqlens(cu, a.batch);
    } catch (const std::exception& ex) {
      return Status::invalid(ex.what());
    }
    longest = 0;
    for (std::int64_t i = 0; i < a.batch; ++i) longest = std::max(longest, cu[i + 1] - cu[i]);
  }
  if (a.batch == 0) return {};

  if (opt.check_inputs) {
    const In* bufs[] = {a.q, a.k, a.v, Op::uses_u ? a.u : nullptr, Op::uses_beta ? a.beta : nullptr};
    const std::int64_t counts[] = {tokens * a.heads * a.dk, tokens * a.heads * a.dk, tokens * a.heads * a.dv,
                                   tokens * a.heads * a.dk, tokens * a.heads};
    const char* names[] = {"q", "k", "v", "u", "beta"};
    Status st = detail::scan_inputs<In>(bufs, counts, names, 5, 4, stream);
    if (!st) return st;
  }

  detail::RecurrentParams<In> p = detail::make_params(a, cfg);
  if (kHasChunked && (opt.path == Path::chunked || (opt.path == Path::automatic && longest >= Options::kChunkedFrom))) {
    bool fits = false;
    Status st = detail::dispatch_head_dims(a.dk, a.dv, [&](auto dk_c, auto dv_c) {
      return detail::launch_chunked<In, decltype(dk_c)::value, decltype(dv_c)::value>(p, a.batch * a.heads, stream, fits);
    });
    if (!st || fits) return st;
    if (opt.path == Path::chunked)
      return Status::invalid("vla::cuda: the chunked path does not fit this device's shared memory for dk = " +
                             std::to_string(a.dk) + ", dv = " + std::to_string(a.dv) + " (use Path::recurrent)");
  }
  const int chunk = opt.chunk > 0 ? opt.chunk : detail::default_chunk<Op>(a.dk, a.dv);
  p.chunk = static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(chunk, detail::pow2_at_least(longest))));
  const std::int64_t blocks = a.batch * a.heads;
  return detail::dispatch_head_dims(a.dk, a.dv, [&](auto dk_c, auto dv_c) {
    return detail::launch_recurrent<Op, In, decltype(dk_c)::value, decltype(dv_c)::value>(p, blocks, stream);
  });
}

}  // namespace cuda
}  // namespace vla
