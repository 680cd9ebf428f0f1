// vla/cuda/detail/device_util.cuh — element conversion, group reductions and cp.async wrappers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace vla {
namespace cuda {
namespace detail {

// ---- token element types: float, __half, __nv_bfloat16 (state and arithmetic are always float)
template <class In>
struct IsTokenType
    : std::integral_constant<bool, std::is_same<In, float>::value || std::is_same<In, __half>::value ||
                                       std::is_same<In, __nv_bfloat16>::value> {};

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class In>
__device__ __forceinline__ In from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// ---- reductions over a group of W consecutive lanes (W a power of two ≤ 32, groups aligned to W).
// The xor butterfly gives every lane of the group the bitwise-same result (float + is commutative),
// so scalars derived from a reduction agree in every thread that computes them.
template <int W>
__device__ __forceinline__ float group_sum(float x) {
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
/// N independent group sums at once, level by level, so that their shuffles overlap in flight
/// instead of running one dependent chain after another (each sum bitwise as group_sum's).
template <int W, int N>
__device__ __forceinline__ void group_sum_n(float (&x)[N]) {
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1)
#pragma unroll
    for (int n = 0; n < N; ++n) x[n] += __shfl_xor_sync(0xffffffffu, x[n], o);
}
template <int W>
__device__ __forceinline__ float group_max(float x) {
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

/// zᵀq̃ with q̃ = q / max|q| over one warp (lane owns entries lane + 32·i, i < KPL): the huge-q
/// path of docs/maths.md §2.6's normaliser (rules::rescaled_output), shared by the VLA and baseline kernels.
template <int KPL>
__device__ __forceinline__ float scaled_dot_warp(const float* q, const float* z, int lane) {
  float qv[KPL], m = 0.f;
#pragma unroll
  for (int i = 0; i < KPL; ++i) qv[i] = q[lane + 32 * i], m = fmaxf(m, fabsf(qv[i]));
  m = group_max<32>(m);
  float a2 = 0.f;
#pragma unroll
  for (int i = 0; i < KPL; ++i) a2 += z[lane + 32 * i] * (qv[i] / m);
  return group_sum<32>(a2);
}

/// The same over the aligned group of W lanes named by `mask` (W < 32: the other lanes of the
/// warp need not take part), for code that only that group runs.
template <int W>
__device__ __forceinline__ float group_sum_masked(float x, unsigned mask) {
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1) x += __shfl_xor_sync(mask, x, o);
  return x;
}
template <int W>
__device__ __forceinline__ float group_max_masked(float x, unsigned mask) {
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(mask, x, o));
  return x;
}
/// The lane mask of this lane's aligned group of W lanes.
template <int W>
__device__ __forceinline__ unsigned group_mask(int lane) {
  return W >= 32 ? 0xffffffffu : (((1u << (W < 32 ? W : 1)) - 1u) << (lane & ~(W - 1)));
}
__device__ __forceinline__ float max_abs4(float4 a) {
  return fmaxf(fmaxf(fabsf(a.x), fabsf(a.y)), fmaxf(fabsf(a.z), fabsf(a.w)));
}

// ---- cp.async (sm_80+): 16-byte global → shared copies that complete in the background.
__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gmem_src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem_src) : "memory");
#else
  *static_cast<uint4*>(smem_dst) = *static_cast<const uint4*>(gmem_src);
#endif
}
/// 8-byte variant (cp.async.ca), for the step counter.
__device__ __forceinline__ void cp_async8(void* smem_dst, const void* gmem_src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(dst), "l"(gmem_src) : "memory");
#else
  *static_cast<uint2*>(smem_dst) = *static_cast<const uint2*>(gmem_src);
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
/// Waits until at most N of this thread's cp.async groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

__device__ __forceinline__ float4 ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ void st4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }

}  // namespace detail
}  // namespace cuda
}  // namespace vla
