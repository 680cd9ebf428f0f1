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
#include "vla/cuda/detail/time_split.cuh"
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
  /// Time split (VLA, fixed-length layout, dk = dv ≤ 64 — docs/maths.md §4b): cut every sequence into
  /// this many spans that run as independent chains — for batches with too few (sequence, head)
  /// pairs to fill the GPU. 0 or 1: off. Costs three forwards over the spans (the P and Q summaries
  /// of S, then the rerun) plus the span starts (≈ 70 µs of serial work per span, measured), and
  /// workspace of 2 token buffers and about 11·dk² floats per (span, head), allocated on `stream`
  /// (cudaMallocAsync). Measured best R: 16–32 at T = 4k–64k (docs/cuda.md).
  int time_split = 0;

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
/// be set; it is lowered while the shared memory it needs exceeds the device's opt-in limit. CKPT: the
/// kernel instance that can write the backward's checkpoints (recurrent_kernel).
template <class Op, class In, int DK, int DV, bool CKPT = false>
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
  auto kernel = &recurrent_kernel<Op, In, DK, DV, CKPT>;
  st = prepare_kernel<KernelTag<Op, In, DK, DV, CKPT ? 9 : 0>>(kernel, G::NT, smem);
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

/// The token count and the longest sequence of a launch: B·T, or from cu_seqlens, read from
/// `host_copy` when the caller gave one and otherwise copied back from the device (one wait for
/// `stream`), then checked on the host (vla::detail::check_cu_seqlens). Shared by forward and backward.
template <class In, class St>
Status token_extents(const ForwardArgs<In, St>& a, const std::int64_t* host_copy, cudaStream_t stream,
                     std::int64_t& tokens, std::int64_t& longest) {
  tokens = a.batch * a.seq_len, longest = a.seq_len;
  if (!a.varlen()) return {};
  std::vector<std::int64_t> copy;
  const std::int64_t* cu = host_copy;
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
  return {};
}

}  // namespace detail

namespace detail {
template <class In>
Status forward_time_split(const ForwardArgs<In, float>& a, const Config& cfg, cudaStream_t stream, const Options& opt);
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
  std::int64_t tokens = 0, longest = 0;
  {
    const Status ext = detail::token_extents(a, opt.host_cu_seqlens, stream, tokens, longest);
    if (!ext) return ext;
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

  if (opt.time_split < 0) return Status::invalid("vla::cuda::Options::time_split must be >= 0");
  if (opt.time_split > 1) {
    if (!kHasChunked) return Status::invalid(std::string(Op::name) + ": no time split on the GPU (it is for VLA)");
    if (a.varlen()) return Status::invalid("vla::cuda: the time split needs the fixed-length layout (no cu_seqlens)");
    if (a.dk != a.dv || a.dk > 64)
      return Status::invalid("vla::cuda: the time split is built for dk = dv ≤ 64 (got dk = " + std::to_string(a.dk) +
                             ", dv = " + std::to_string(a.dv) + ")");
    if (a.seq_len >= 2) return detail::forward_time_split<In>(a, cfg, stream, opt);
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

namespace detail {

/// The time split's head dims: one instantiation of its three kernels per supported d ≤ 64.
template <class Fn>
Status dispatch_split_dim(std::int64_t d, Fn&& fn) {
  if (d == 32) return fn(std::integral_constant<int, 32>{});
  return fn(std::integral_constant<int, 64>{});
}

/// docs/maths.md §4b on the GPU, for a fixed-length batch (validated by forward): every sequence
/// becomes R = min(opt.time_split, T) spans, which are the sequences of three ordinary forwards on a
/// packed batch of N·R sequences (cu_seqlens = the span boundaries, the token buffers unchanged):
///   1. span_transfer_kernel: each span's A summary and Σk;   2. span_starts_kernel: A, z, t at
///   every span start;   3. forward "P": from (A_start, S = I), values 0 → each span's P;
///   4. forward "Q": from (A_start, S = 0), the values → each span's Q;   5. memory_starts_kernel:
///   S at every span start;   6. forward: every span from its full start state → o and, from the
///   last span of each sequence, the final state. Everything is ordered on `stream`.
template <class In>
Status forward_time_split(const ForwardArgs<In, float>& a, const Config& cfg, cudaStream_t stream, const Options& opt) {
  const std::int64_t N = a.batch, T = a.seq_len, H = a.heads, d = a.dk;
  const std::int64_t R = std::min<std::int64_t>(opt.time_split, T), NRH = N * R * H, tokens = N * T;
  // Span boundaries on the token axis, on the host (for the forwards' checks) and on the device.
  std::vector<std::int64_t> cu(static_cast<std::size_t>(N * R + 1));
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t r = 0; r < R; ++r) cu[std::size_t(n * R + r)] = n * T + span_first(T, R, r);
  cu[std::size_t(N * R)] = N * T;
  // One workspace: floats, then steps and cu_seqlens (int64), then two token buffers (In).
  const std::size_t f_M = std::size_t(NRH) * 4 * d * d, f_ks = std::size_t(NRH) * d, f_dd = std::size_t(NRH) * d * d;
  const std::size_t floats = f_M + f_ks + 7 * f_dd + 2 * f_ks;  // M, Σk; A_start P_init P Q S_start A_fin S_fin; z_start z_fin
  const std::size_t i64 = std::size_t(NRH) * 2 + cu.size();
  const std::size_t tok_elems = std::size_t(tokens) * H * d;
  const std::size_t bytes = floats * 4 + i64 * 8 + 2 * tok_elems * sizeof(In) + 64;
  char* ws = nullptr;
  cudaError_t e = cudaMallocAsync(reinterpret_cast<void**>(&ws), bytes, stream);
  if (e != cudaSuccess) return Status::from_cuda(e, "vla::cuda: time split workspace");
  auto fail = [&](Status s) {
    cudaFreeAsync(ws, stream);
    return s;
  };
  float* fp = reinterpret_cast<float*>(ws);
  TimeSplitParams sp;
  sp.batch = N, sp.seq_len = T, sp.heads = H, sp.spans = R;
  sp.steps0 = a.initial_state.steps, sp.A0 = a.initial_state.A, sp.S0 = a.initial_state.S, sp.z0 = a.initial_state.z;
  sp.inv_lambda0 = 1.f / static_cast<float>(cfg.lambda0);
  sp.refresh_eps = static_cast<float>(cfg.refresh_eps);
  sp.inv_sqrt_dk = 1.f / std::sqrt(static_cast<float>(d));
  sp.refresh_period = cfg.refresh_period;
  sp.M = fp, fp += f_M;
  sp.key_sum = fp, fp += f_ks;
  sp.A_start = fp, fp += f_dd;
  sp.P_init = fp, fp += f_dd;
  float* P = fp;
  fp += f_dd;
  float* Q = fp;
  fp += f_dd;
  sp.S_start = fp, fp += f_dd;
  float* A_fin = fp;
  fp += f_dd;
  float* S_fin = fp;
  fp += f_dd;
  sp.z_start = fp, fp += f_ks;
  float* z_fin = fp;
  fp += f_ks;
  sp.P = P, sp.Q = Q;
  std::int64_t* ip = reinterpret_cast<std::int64_t*>(fp);
  sp.steps_start = ip, ip += NRH;
  std::int64_t* steps_fin = ip;
  ip += NRH;
  std::int64_t* dcu = ip;
  ip += cu.size();
  In* zeros = reinterpret_cast<In*>((reinterpret_cast<std::uintptr_t>(ip) + 15) / 16 * 16);
  In* scratch = zeros + (tok_elems + 7) / 8 * 8;
  if (reinterpret_cast<char*>(scratch + tok_elems) > ws + bytes)  // the carving above must fit what was allocated
    return fail(Status::invalid("vla::cuda: time split workspace layout (internal error)"));

  e = cudaMemcpyAsync(dcu, cu.data(), cu.size() * 8, cudaMemcpyHostToDevice, stream);
  if (e == cudaSuccess) e = cudaMemsetAsync(zeros, 0, tok_elems * sizeof(In), stream);
  if (e == cudaSuccess) e = cudaMemsetAsync(sp.S_start, 0, f_dd * 4, stream);  // the Q pass's S = 0
  if (e != cudaSuccess) return fail(Status::from_cuda(e, "vla::cuda: time split setup"));

  Status st = dispatch_split_dim(d, [&](auto d_c) -> Status {
    constexpr int D = decltype(d_c)::value;
    auto k1 = &span_transfer_kernel<In, D>;
    Status s = prepare_kernel<KernelTag<op::Vla, In, D, D, 5>>(k1, TransferLayout<D>::NT, TransferLayout<D>::bytes);
    if (!s) return s;
    k1<<<static_cast<unsigned>(NRH), TransferLayout<D>::NT, TransferLayout<D>::bytes, stream>>>(a.u, a.k, sp);
    s = Status::from_cuda(cudaGetLastError(), "vla::cuda: span transfer launch");
    if (!s) return s;
    // Tagged by In although the kernel is not: each token type's instances live in their own
    // translation unit, whose copy of the kernel needs its own cudaFuncSetAttribute (prepare_kernel's
    // cache is shared by all of them).
    auto k2 = &span_starts_kernel<D>;
    s = prepare_kernel<KernelTag<op::Vla, In, D, D, 6>>(k2, StartsLayout<D>::NT, StartsLayout<D>::bytes);
    if (!s) return s;
    k2<<<static_cast<unsigned>(N * H), StartsLayout<D>::NT, StartsLayout<D>::bytes, stream>>>(sp);
    return Status::from_cuda(cudaGetLastError(), "vla::cuda: span starts launch");
  });
  if (!st) return fail(st);

  ForwardArgs<In, float> b = a;  // the spans as a packed batch of N·R sequences
  b.batch = N * R;
  b.seq_len = 0;
  b.cu_seqlens = dcu;
  b.o = scratch;
  Options o2 = opt;
  o2.time_split = 0;
  o2.host_cu_seqlens = cu.data();
  o2.check_inputs = false;  // forward checked them already when asked
  // 3. P: "S" = P from I with zero values (dv = dk).
  b.v = zeros;
  b.initial_state = {sp.A_start, sp.P_init, sp.z_start, sp.steps_start};
  b.final_state = {A_fin, P, z_fin, steps_fin};  // A, z, t: scratch (a final state is all parts or none)
  st = ::vla::cuda::forward<op::Vla, In>(b, cfg, stream, o2);
  if (!st) return fail(st);
  // 4. Q: S from 0 with the values.
  b.v = a.v;
  b.initial_state = {sp.A_start, sp.S_start, sp.z_start, sp.steps_start};
  b.final_state = {A_fin, Q, z_fin, steps_fin};
  st = ::vla::cuda::forward<op::Vla, In>(b, cfg, stream, o2);
  if (!st) return fail(st);
  // 5. S at every span start.
  st = dispatch_split_dim(d, [&](auto d_c) -> Status {
    constexpr int D = decltype(d_c)::value;
    constexpr std::size_t smem = std::size_t(2) * D * (D + 4) * 4;
    auto k3 = &memory_starts_kernel<D, D>;
    Status s = prepare_kernel<KernelTag<op::Vla, In, D, D, 7>>(k3, 1024, smem);
    if (!s) return s;
    k3<<<static_cast<unsigned>(N * H), 1024, smem, stream>>>(sp);
    return Status::from_cuda(cudaGetLastError(), "vla::cuda: memory starts launch");
  });
  if (!st) return fail(st);
  // 6. Every span from its start; the last span of each sequence holds the final state.
  b.o = a.o;
  b.initial_state = {sp.A_start, sp.S_start, sp.z_start, sp.steps_start};
  const bool want_final = a.final_state.A || a.final_state.S || a.final_state.z || a.final_state.steps;
  b.final_state = want_final ? StateBuffers<float>{A_fin, S_fin, z_fin, steps_fin} : StateBuffers<float>{};
  st = ::vla::cuda::forward<op::Vla, In>(b, cfg, stream, o2);
  if (!st) return fail(st);
  if (want_final) {
    // span-major [N·R, H, x] → [N, H, x]: sequence n's last span is slot n·R + R − 1.
    auto copy_last = [&](void* dst, const void* src, std::size_t per_head_bytes) {
      const std::size_t row = std::size_t(H) * per_head_bytes;
      return cudaMemcpy2DAsync(dst, row, static_cast<const char*>(src) + std::size_t(R - 1) * row, row * std::size_t(R),
                               row, static_cast<std::size_t>(N), cudaMemcpyDeviceToDevice, stream);
    };
    e = cudaSuccess;
    if (a.final_state.A) e = copy_last(a.final_state.A, A_fin, std::size_t(d) * d * 4);
    if (e == cudaSuccess && a.final_state.S) e = copy_last(a.final_state.S, S_fin, std::size_t(d) * d * 4);
    if (e == cudaSuccess && a.final_state.z) e = copy_last(a.final_state.z, z_fin, std::size_t(d) * 4);
    if (e == cudaSuccess && a.final_state.steps) e = copy_last(a.final_state.steps, steps_fin, 8);
    if (e != cudaSuccess) return fail(Status::from_cuda(e, "vla::cuda: time split final state"));
  }
  e = cudaFreeAsync(ws, stream);
  return Status::from_cuda(e, "vla::cuda: time split workspace release");
}

}  // namespace detail
}  // namespace cuda
}  // namespace vla
