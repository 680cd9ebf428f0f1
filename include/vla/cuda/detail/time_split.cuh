// vla/cuda/detail/time_split.cuh — the kernels of the GPU time split (docs/maths.md §4b; the host
// algebra it mirrors, and is tested against, is vla/time_split.hpp). Each sequence is cut into R
// spans that become independent sequences of the ordinary forward; these kernels compute the span
// starts in between:
//   span_transfer_kernel   one CTA per (sequence, span, head): the span's A summary M (2dk×2dk) and Σk
//   span_starts_kernel     one CTA per (sequence, head), serial over spans: A_{r+1} = X Y⁻¹ with
//                          [X; Y] = M_r [A_r; I] (Gauss–Jordan, partial pivoting), z, t
//   memory_starts_kernel   one CTA per (sequence, head), serial over spans: S_{r+1} = S_r P_r + Q_r
// The orchestration (which forwards run between them) is forward_time_split in vla/cuda/forward.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "vla/cuda/detail/chunked_kernel.cuh"  // warp_unit_factors (the chunked kernel itself now normalises a row per thread: the same rule, rounding may differ by an ulp)
#include "vla/cuda/detail/device_util.cuh"
#include "vla/detail/rules.hpp"

namespace vla {
namespace cuda {
namespace detail {

/// What the three kernels share: the split's geometry and its workspace (device pointers).
struct TimeSplitParams {
  std::int64_t batch = 0, seq_len = 0, heads = 0, spans = 0;
  const std::int64_t* steps0 = nullptr;  ///< the caller's initial steps [N, H] or null (0)
  const float* A0 = nullptr;             ///< the caller's initial A [N, H, dk, dk] or null (I/λ0)
  const float* S0 = nullptr;             ///< the caller's initial S [N, H, dv, dk] or null (0)
  const float* z0 = nullptr;             ///< the caller's initial z [N, H, dk] or null (0)
  float inv_lambda0 = 10.f, refresh_eps = 1e-3f, inv_sqrt_dk = 0.125f;
  int refresh_period = 20;
  // workspace, span-major like a packed batch of N·R sequences: index ((n·R + r)·H + h)
  float* M = nullptr;               ///< [N·R·H, 2dk, 2dk]
  float* key_sum = nullptr;         ///< [N·R·H, dk]
  float* A_start = nullptr;         ///< [N·R·H, dk, dk]
  float* S_start = nullptr;         ///< [N·R·H, dv, dk]
  float* z_start = nullptr;         ///< [N·R·H, dk]
  std::int64_t* steps_start = nullptr;  ///< [N·R·H]
  float* P_init = nullptr;          ///< [N·R·H, dk, dk]: identity, the P pass's initial "S"
  const float* P = nullptr;         ///< [N·R·H, dk, dk]: each span's P (the P pass's final "S")
  const float* Q = nullptr;         ///< [N·R·H, dv, dk]: each span's Q (the Q pass's final S)
};

/// First token (within its sequence) of span r of a sequence of T tokens cut into R spans.
__host__ __device__ inline std::int64_t span_first(std::int64_t T, std::int64_t R, std::int64_t r) {
  return T * r / R;
}

template <int DK>
struct TransferLayout {
  static constexpr int NT = 256, NW = NT / 32;
  static constexpr int kRows = 32;        ///< û rows per block (a block also ends at a refresh step)
  static constexpr int W2 = 2 * DK, LM = W2 + 4, LU = DK + 4;
  static constexpr int oM = 0, oU = oM + W2 * LM, oProj = oU + kRows * LU, oRed = oProj + kRows * LM;
  static constexpr std::size_t bytes = std::size_t(oRed + NW) * 4;
};

/// One CTA per (sequence n, span r, head h): M = Π (later on the left) of [[I, 0], [B, I]] for each
/// block of Sherman–Morrison steps (B = Σ ûûᵀ) and [[I, εI], [0, I]] for each refresh, rescaled by a
/// power of two (exact) to max |M| ∈ [1, 2) after every block; and Σ k over the span.
template <class In, int DK>
__global__ void __launch_bounds__(TransferLayout<DK>::NT) span_transfer_kernel(const In* __restrict__ u,
                                                                               const In* __restrict__ k,
                                                                               TimeSplitParams p) {
  using L = TransferLayout<DK>;
  extern __shared__ __align__(16) float sm[];
  float* M = sm + L::oM;
  float* U = sm + L::oU;
  float* Pj = sm + L::oProj;
  float* red = sm + L::oRed;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const std::int64_t H = p.heads, R = p.spans, T = p.seq_len;
  const std::int64_t blk = blockIdx.x, h = blk % H, nr = blk / H, r = nr % R, n = nr / R;
  const std::int64_t first = span_first(T, R, r), len = span_first(T, R, r + 1) - first;
  const std::int64_t t0 = (p.steps0 ? p.steps0[n * H + h] : 0) + first;
  const std::int64_t tok0 = n * T + first;  // token index of the span's first step

  for (int i = tid; i < L::W2 * L::W2; i += L::NT) M[(i / L::W2) * L::LM + i % L::W2] = (i / L::W2 == i % L::W2) ? 1.f : 0.f;
  float ks = 0.f;  // Σ k for column tid (tid < DK)
  __syncthreads();

  for (std::int64_t f = 0; f < len;) {
    std::int64_t last = f;
    while (last + 1 < len && last + 1 - f < L::kRows && !rules::refresh_due(t0 + last, p.refresh_period)) ++last;
    const int m = int(last - f + 1);
    // û rows of the block (a zero u gives a zero row: no update), one warp per row.
    for (int row = warp; row < m; row += L::NW) {
      float x[1][DK / 32], ex[1] = {p.inv_sqrt_dk}, fct[1];
      const In* src = u + ((tok0 + f + row) * H + h) * DK;
#pragma unroll
      for (int i = 0; i < DK / 32; ++i) x[0][i] = to_float(src[lane + 32 * i]);
      warp_unit_factors(x, ex, fct);
#pragma unroll
      for (int i = 0; i < DK / 32; ++i) U[row * L::LU + lane + 32 * i] = x[0][i] * fct[0];
    }
    if (tid < DK)
      for (int row = 0; row < m; ++row) ks += to_float(k[((tok0 + f + row) * H + h) * DK + tid]);
    __syncthreads();
    // Proj = Û · M_top  (m × 2dk)
    {
      const int j = tid % L::W2;
      for (int i = tid / L::W2; i < m; i += L::NT / L::W2) {
        float acc = 0.f;
#pragma unroll 8
        for (int c = 0; c < DK; ++c) acc = fmaf(U[i * L::LU + c], M[c * L::LM + j], acc);
        Pj[i * L::LM + j] = acc;
      }
    }
    __syncthreads();
    // M_bot += Ûᵀ · Proj; then, if the block ends at a refresh step, M_top += ε M_bot.
    const bool refresh = rules::refresh_due(t0 + last, p.refresh_period);
    float mx = 0.f;
    {
      const int j = tid % L::W2;
      for (int c = tid / L::W2; c < DK; c += L::NT / L::W2) {
        float acc = M[(DK + c) * L::LM + j];
        for (int i = 0; i < m; ++i) acc = fmaf(U[i * L::LU + c], Pj[i * L::LM + j], acc);
        M[(DK + c) * L::LM + j] = acc;
        float top = M[c * L::LM + j];
        if (refresh) {
          top = fmaf(p.refresh_eps, acc, top);
          M[c * L::LM + j] = top;
        }
        mx = fmaxf(mx, fmaxf(fabsf(acc), fabsf(top)));
      }
    }
    // Rescale by a power of two (exact), so that max |M| ∈ [1, 2).
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if (lane == 0) red[warp] = mx;
    __syncthreads();
    mx = red[0];
#pragma unroll
    for (int w = 1; w < L::NW; ++w) mx = fmaxf(mx, red[w]);
    if (mx > 0.f && (mx >= 2.f || mx < 1.f)) {
      const float s = exp2f(-float(ilogbf(mx)));
      for (int i = tid; i < L::W2 * L::W2; i += L::NT) M[(i / L::W2) * L::LM + i % L::W2] *= s;
    }
    __syncthreads();
    f = last + 1;
  }
  float* Mo = p.M + blk * std::int64_t(L::W2 * L::W2);
  for (int i = tid; i < L::W2 * L::W2; i += L::NT) Mo[i] = M[(i / L::W2) * L::LM + i % L::W2];
  if (tid < DK) p.key_sum[blk * DK + tid] = ks;
}

template <int DK>
struct StartsLayout {
  static constexpr int NT = 256, NW = NT / 32;  // few warps: two CTA barriers per column are the serial cost
  static constexpr int RPW = DK / NW;        ///< rows of [Yᵀ | Xᵀ] per warp (held in registers)
  static constexpr int CPL = 2 * DK / 32;    ///< columns per lane
  static constexpr int W2 = 2 * DK, LM = W2 + 4, LA = DK + 4, LW = 2 * DK + 4;
  static constexpr int oM = 0, oA = oM + W2 * LM, oW = oA + DK * LA, oRow = oW + DK * LW, oRed = oRow + W2,
                       oPiv = oRed + 2 * NW;
  static constexpr std::size_t bytes = std::size_t(oPiv + DK + 4) * 4;
  static_assert(RPW >= 1 && DK % NW == 0, "vla: span starts: dk must be a multiple of 32");
};

/// One CTA per (sequence n, head h), serial over its spans: writes every span's starting A, z,
/// steps (and the identity P_init), from the caller's initial state and the span summaries.
/// A_{r+1} solves A Y = X, i.e. Yᵀ Aᵀ = Xᵀ, by Gauss–Jordan with partial pivoting on [Yᵀ | Xᵀ],
/// whose rows live in registers (RPW rows per warp, CPL columns per lane): per column one pivot
/// search, one broadcast of the pivot row, one rank-1 update; then A is symmetrised.
template <int DK>
__global__ void __launch_bounds__(StartsLayout<DK>::NT) span_starts_kernel(TimeSplitParams p) {
  using L = StartsLayout<DK>;
  constexpr int RPW = L::RPW, CPL = L::CPL;
  extern __shared__ __align__(16) float sm[];
  float* M = sm + L::oM;
  float* A = sm + L::oA;
  float* W = sm + L::oW;
  float* prow = sm + L::oRow;
  float* red = sm + L::oRed;
  int* piv_of = reinterpret_cast<int*>(sm + L::oPiv);  // piv_of[j]: the row that pivoted column j
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const std::int64_t H = p.heads, R = p.spans, T = p.seq_len;
  const std::int64_t nh = blockIdx.x, n = nh / H, h = nh % H;
  for (int i = tid; i < DK * DK; i += L::NT) {
    const int r = i / DK, c = i % DK;
    A[r * L::LA + c] = p.A0 ? p.A0[nh * DK * DK + i] : (r == c ? p.inv_lambda0 : 0.f);
  }
  float z = (tid < DK && p.z0) ? p.z0[nh * DK + tid] : 0.f;
  std::int64_t steps = p.steps0 ? p.steps0[nh] : 0;
  __syncthreads();
  for (std::int64_t r = 0; r < R; ++r) {
    const std::int64_t slot = (n * R + r) * H + h;
    for (int i = tid; i < DK * DK; i += L::NT) {
      p.A_start[slot * DK * DK + i] = A[(i / DK) * L::LA + i % DK];
      p.P_init[slot * DK * DK + i] = (i / DK == i % DK) ? 1.f : 0.f;
    }
    if (tid < DK) p.z_start[slot * DK + tid] = z;
    if (tid == 0) p.steps_start[slot] = steps;
    if (r + 1 == R) break;
    const std::int64_t len = span_first(T, R, r + 1) - span_first(T, R, r);
    if (tid < DK) z += p.key_sum[slot * DK + tid];
    steps += len;
    if (len == 0) continue;
    const float* Mg = p.M + slot * std::int64_t(L::W2 * L::W2);
    for (int i = tid; i < L::W2 * L::W2; i += L::NT) M[(i / L::W2) * L::LM + i % L::W2] = Mg[i];
    __syncthreads();
    // W = [Yᵀ | Xᵀ]: W[i][j] = Y[j][i] = Σ_c M_bl[j][c] A[c][i] + M_br[j][i], W[i][DK + j] = X[j][i].
    for (int e = tid; e < 2 * DK * DK; e += L::NT) {
      const int half = e / (DK * DK), j = (e / DK) % DK, i = e % DK;  // i fastest: A[c][i] across lanes
      const float* Mr = M + (half == 0 ? DK + j : j) * L::LM;        // row j of [M_bl M_br] or [M_tl M_tr]
      float acc = Mr[DK + i];
#pragma unroll 8
      for (int c = 0; c < DK; ++c) acc = fmaf(Mr[c], A[c * L::LA + i], acc);
      W[i * L::LW + (half == 0 ? j : DK + j)] = acc;
    }
    __syncthreads();
    float w[RPW][CPL];
    bool used[RPW];
#pragma unroll
    for (int i = 0; i < RPW; ++i) {
      used[i] = false;
#pragma unroll
      for (int c = 0; c < CPL; ++c) w[i][c] = W[(warp * RPW + i) * L::LW + lane * CPL + c];
    }
    for (int j = 0; j < DK; ++j) {
      // Column j of my rows (it lives in lane j / CPL, element j % CPL).
      const int src = j / CPL, el = j % CPL;
      float v[RPW], best = -1.f;
      int arg = 0;
#pragma unroll
      for (int i = 0; i < RPW; ++i) {
        float mine = w[i][0];
#pragma unroll
        for (int c = 1; c < CPL; ++c) mine = el == c ? w[i][c] : mine;
        v[i] = __shfl_sync(0xffffffffu, mine, src);
        const float a = used[i] ? -1.f : fabsf(v[i]);
        if (a > best) best = a, arg = warp * RPW + i;
      }
      if (lane == 0) red[2 * warp] = best, red[2 * warp + 1] = __int_as_float(arg);
      __syncthreads();
      // Every warp reduces the NW candidates itself (no second barrier): the largest |W[row][j]|
      // over rows not yet used as pivots, ties to the lower row.
      float b = red[0];
      int pr = __float_as_int(red[1]);
#pragma unroll
      for (int q = 1; q < L::NW; ++q) {
        const float b2 = red[2 * q];
        const int a2 = __float_as_int(red[2 * q + 1]);
        if (b2 > b || (b2 == b && a2 < pr)) b = b2, pr = a2;
      }
      if (tid == 0) piv_of[j] = pr;
      if (pr / RPW == warp) {
#pragma unroll
        for (int i = 0; i < RPW; ++i)
          if (warp * RPW + i == pr) {
            used[i] = true;
#pragma unroll
            for (int c = 0; c < CPL; ++c) prow[lane * CPL + c] = w[i][c];
          }
      }
      __syncthreads();
      const float inv = 1.f / prow[j];
      float pc[CPL];
#pragma unroll
      for (int c = 0; c < CPL; ++c) pc[c] = prow[lane * CPL + c];
#pragma unroll
      for (int i = 0; i < RPW; ++i) {
        if (warp * RPW + i == pr) continue;
        const float f = v[i] * inv;
#pragma unroll
        for (int c = 0; c < CPL; ++c) w[i][c] = fmaf(-f, pc[c], w[i][c]);
      }
    }
#pragma unroll
    for (int i = 0; i < RPW; ++i)
#pragma unroll
      for (int c = 0; c < CPL; ++c) W[(warp * RPW + i) * L::LW + lane * CPL + c] = w[i][c];
    __syncthreads();
    // Aᵀ row j = W[piv_of[j]][DK..] / W[piv_of[j]][j]; A ← (A + Aᵀ)/2.
    for (int e = tid; e < DK * DK; e += L::NT) {
      const int i = e / DK, c = e % DK;
      const float a_ic = W[piv_of[c] * L::LW + DK + i] / W[piv_of[c] * L::LW + c];  // A[i][c] = Aᵀ[c][i]
      const float a_ci = W[piv_of[i] * L::LW + DK + c] / W[piv_of[i] * L::LW + i];  // A[c][i]
      A[i * L::LA + c] = 0.5f * (a_ic + a_ci);
    }
    __syncthreads();
  }
}

/// One CTA per (sequence n, head h), serial over spans: S_start of every span from the caller's
/// S0 and each span's (P, Q): S_{r+1} = S_r · P_r + Q_r.
template <int DK, int DV>
__global__ void __launch_bounds__(1024) memory_starts_kernel(TimeSplitParams p) {
  extern __shared__ __align__(16) float sm[];
  constexpr int LS = DK + 4;
  float* S = sm;              // DV × LS
  float* Sn = sm + DV * LS;   // DV × LS
  const int tid = threadIdx.x;
  const std::int64_t H = p.heads, R = p.spans;
  const std::int64_t nh = blockIdx.x, n = nh / H, h = nh % H;
  for (int i = tid; i < DV * DK; i += 1024) S[(i / DK) * LS + i % DK] = p.S0 ? p.S0[nh * DV * DK + i] : 0.f;
  __syncthreads();
  for (std::int64_t r = 0; r < R; ++r) {
    const std::int64_t slot = (n * R + r) * H + h;
    for (int i = tid; i < DV * DK; i += 1024) p.S_start[slot * DV * DK + i] = S[(i / DK) * LS + i % DK];
    if (r + 1 == R) break;
    const float* P = p.P + slot * DK * DK;
    const float* Q = p.Q + slot * DV * DK;
    for (int e = tid; e < DV * DK; e += 1024) {
      const int i = e / DK, j = e % DK;
      float acc = Q[e];
#pragma unroll 8
      for (int c = 0; c < DK; ++c) acc = fmaf(S[i * LS + c], P[c * DK + j], acc);
      Sn[i * LS + j] = acc;
    }
    __syncthreads();
    for (int i = tid; i < DV * DK; i += 1024) S[(i / DK) * LS + i % DK] = Sn[(i / DK) * LS + i % DK];
    __syncthreads();
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace vla
