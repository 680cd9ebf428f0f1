// vla/cuda/detail/chunked_kernel.cuh — the chunked VLA forward (docs/maths.md §4) on tensor cores.
//
// One CTA per (sequence, head), 8 warps, the float state (A, S, z) in shared memory for the whole
// sequence. Tokens go through in chunks of C = 32 (VLA_CUDA_CHUNKED_C); for each chunk (the host reference of every
// line is vla/chunked.hpp, in the same order):
//   P1  tokens → Û, K̂, Q, V (rules' scale-safe norms), refresh counts r, r′, z prefix sums
//   P2  X = [Û; K̂] A (+ the refresh terms: X = [W̃; K̂A + ε r′ K̂]),  KSQ = [K̂; Q] Sᵀ,  zᵀq per row
//   P3  Ĝ = I + tril(Û W̃ᵀ) and its LDLᵀ in one warp, a row per lane in registers (pivots D = the
//       steps' δ)
//   P4  Z = L⁻¹ W̃ (forward substitution, one thread per column)
//   P5  P = tril(K̂ Zᵀ) D⁻¹;  A ← A − Zᵀ D⁻¹ Z + ε r′ I (lower tiles, mirrored: A stays symmetric)
//   P6  Alpha = X_K − P Z          P7  α̂ = α/‖α‖ (zero rules)
//   P8  L_k = tril₋(K̂ Α̂ᵀ), QA = tril(Q Α̂ᵀ)
//   P9  (I + L_k) E = V − K̂ Sᵀ (forward substitution, one thread per column)
//   P10 O = QSᵀ + QA E → o (normaliser, huge-q rows flagged);  S ← S + Eᵀ Α̂
// The d-sized products run as mma.sync m16n8k8 TF32 with fp32 accumulation; "split" products use
// 3×TF32 (a = a_hi + a_lo, a·b ≈ a_hi b_hi + a_hi b_lo + a_lo b_hi), which carries fp32 accuracy:
// every product for float tokens, none for half/bf16 tokens (VLA_CUDA_CHUNKED_SPLIT_A/_S).
// Measured cost per chunk and what bounds it: include/vla/cuda/README.md, "The chunked kernel".
// The next chunk's tokens are copied in by cp.async while the current one runs.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "vla/cuda/detail/device_util.cuh"
#include "vla/cuda/detail/recurrent_kernel.cuh"
#include "vla/detail/rules.hpp"
#include "vla/layout.hpp"

// 3×TF32 for the A part's products (Û A, K̂ A, Û W̃ᵀ, K̂ Zᵀ, P Z, Zᵀ D⁻¹ Z): 1 = always, 0 = for float
// tokens only.
#ifndef VLA_CUDA_CHUNKED_SPLIT_A
#define VLA_CUDA_CHUNKED_SPLIT_A 0
#endif
// 3×TF32 for the S part's products: 1 = always, 0 = for float tokens only (half/bf16 tokens carry
// less precision than one TF32 product loses).
// Tokens per chunk (16 or 32).
#ifndef VLA_CUDA_CHUNKED_C
#define VLA_CUDA_CHUNKED_C 32
#endif
#ifndef VLA_CUDA_CHUNKED_SPLIT_S
#define VLA_CUDA_CHUNKED_SPLIT_S 0
#endif

// Phase profile (a measurement build only): with VLA_CUDA_CHUNKED_PROFILE=1, thread 0 of CTA 0
// sums clock64() between the kernel's barriers and prints the cycles per phase at the end.
#ifndef VLA_CUDA_CHUNKED_PROFILE
#define VLA_CUDA_CHUNKED_PROFILE 0
#endif
#if VLA_CUDA_CHUNKED_PROFILE
#define VLA_CHUNKED_PHASE(i)                          \
  do {                                                \
    if (tid == 0 && blockIdx.x == 0) {                \
      const long long now_ = clock64();               \
      prof_[i] += now_ - prof_last_;                  \
      prof_last_ = now_;                              \
    }                                                 \
  } while (0)
#else
#define VLA_CHUNKED_PHASE(i) \
  do {                       \
  } while (0)
#endif

namespace vla {
namespace cuda {
namespace detail {

// ---- tensor-core products on shared-memory operands

__device__ __forceinline__ std::uint32_t to_tf32(float x) {
  std::uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}

__device__ __forceinline__ void mma_tf32(float (&c)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  (void)c, (void)a, (void)b;
#endif
}

/// A matrix operand in shared memory: element (r, c) at p[r·rs + c·cs] (a transpose swaps rs, cs).
struct Operand {
  const float* p;
  int rs, cs;
  __device__ __forceinline__ float operator()(int r, int c) const { return p[r * rs + c * cs]; }
};

/// acc (a 16×16 tile at (m0, n0), as two m16n8 fragments) += A(m0.., 0..K) · B(0..K, n0..), K a
/// multiple of 8 known at compile time (the loop unrolls, so the loads of step k+1 overlap the
/// products of step k). Split: 3×TF32.
template <bool Split, int K>
__device__ __forceinline__ void tile_product(Operand a, Operand b, int m0, int n0, float (&acc)[2][4], int lane) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int k0 = 0; k0 < K; k0 += 8) {
    const float af[4] = {a(m0 + g, k0 + t), a(m0 + g + 8, k0 + t), a(m0 + g, k0 + t + 4), a(m0 + g + 8, k0 + t + 4)};
    std::uint32_t ah[4], al[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      ah[i] = to_tf32(af[i]);
      al[i] = Split ? to_tf32(af[i] - __uint_as_float(ah[i])) : 0u;
    }
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int n = n0 + 8 * j + g;
      const float bf[2] = {b(k0 + t, n), b(k0 + t + 4, n)};
      std::uint32_t bh[2], bl[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        bh[i] = to_tf32(bf[i]);
        bl[i] = Split ? to_tf32(bf[i] - __uint_as_float(bh[i])) : 0u;
      }
      if (Split) {
        mma_tf32(acc[j], al, bh);
        mma_tf32(acc[j], ah, bl);
      }
      mma_tf32(acc[j], ah, bh);
    }
  }
}

/// out = A(M×K)·B(K×N) over the warps [warp0, warp0 + nwarps), tile by tile; epi(r, c, value) stores
/// each element. M, N multiples of 16. Tiles for which skip(m0, n0) holds are not computed.
template <bool Split, int K, class Epi, class Skip>
__device__ __forceinline__ void product(Operand a, Operand b, int M, int N, int warp, int nwarps, int lane,
                                        Epi&& epi, Skip&& skip) {
  const int tn = N / 16, tiles = (M / 16) * tn;
  const int g = lane >> 2, t = lane & 3;
  for (int tile = warp; tile < tiles; tile += nwarps) {
    const int m0 = (tile / tn) * 16, n0 = (tile % tn) * 16;
    if (skip(m0, n0)) continue;
    float acc[2][4] = {};
    tile_product<Split, K>(a, b, m0, n0, acc, lane);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int c = n0 + 8 * j + 2 * t;
      epi(m0 + g, c, acc[j][0]);
      epi(m0 + g, c + 1, acc[j][1]);
      epi(m0 + g + 8, c, acc[j][2]);
      epi(m0 + g + 8, c + 1, acc[j][3]);
    }
  }
}
template <bool Split, int K, class Epi>
__device__ __forceinline__ void product(Operand a, Operand b, int M, int N, int warp, int nwarps, int lane, Epi&& epi) {
  product<Split, K>(a, b, M, N, warp, nwarps, lane, static_cast<Epi&&>(epi), [](int, int) { return false; });
}

/// warp_unit_factor for R vectors at once (their reductions interleaved, so their latencies overlap).
template <int R, int N>
__device__ __forceinline__ void warp_unit_factors(const float (&x)[R][N], const float (&extra)[R], float (&f)[R]) {
  float m[R], s[R], im[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    m[r] = 0.f;
#pragma unroll
    for (int i = 0; i < N; ++i) m[r] = fmaxf(m[r], fabsf(x[r][i]));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
#pragma unroll
    for (int r = 0; r < R; ++r) m[r] = fmaxf(m[r], __shfl_xor_sync(0xffffffffu, m[r], o));
#pragma unroll
  for (int r = 0; r < R; ++r) {
    im[r] = rules::inverse_max<float>(m[r]);
    s[r] = 0.f;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const float y = x[r][i] * im[r];
      s[r] += y * y;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
#pragma unroll
    for (int r = 0; r < R; ++r) s[r] += __shfl_xor_sync(0xffffffffu, s[r], o);
#pragma unroll
  for (int r = 0; r < R; ++r) f[r] = im[r] == 0.f ? 0.f : rules::normalize_factor<float>(im[r], s[r], extra[r]);
}

// ---- layout

/// The chunked kernel's shared memory for head dims (DK, DV), token type In: float tiles with
/// padded rows (ld ≡ 4 mod 32 keeps the fragment loads of row-major operands conflict-free), then
/// two stages of raw tokens.
template <class In, int DK, int DV>
struct ChunkedLayout {
  static constexpr int C = VLA_CUDA_CHUNKED_C;  ///< tokens per chunk
  static constexpr int NT = 256, NW = NT / 32;
  static constexpr int LK = DK + 4, LV = DV + 4, LC = C + 4;
  // float offsets
  static constexpr int oA = 0;                     // A: DK × LK
  static constexpr int oS = oA + DK * LK;          // S: DV × LK
  static constexpr int oz = oS + DV * LK;          // z: DK
  static constexpr int oUKQ = oz + DK;             // [Û; K̂; Q]: 3C × LK
  static constexpr int oV = oUKQ + 3 * C * LK;     // V: C × LV
  static constexpr int oX = oV + C * LV;           // X = [W̃; K̂A + εr′K̂]: 2C × LK; later E (C × LV) over W̃
  static constexpr int oKSQ = oX + 2 * C * (LK > LV ? LK : LV);  // [K̂Sᵀ; QSᵀ]: 2C × LV
  static constexpr int oZ = oKSQ + 2 * C * LV;     // z prefix sums (P1–P2), then Z: C × LK
  static constexpr int oAh = oZ + C * LK;          // Alpha, then α̂: C × LK
  static constexpr int oG = oAh + C * LK;          // Ĝ → L: C × LC
  static constexpr int oP = oG + C * LC;           // P: C × LC
  static constexpr int oLk = oP + C * LC;          // L_k: C × LC
  static constexpr int oQA = oLk + C * LC;         // QA: C × LC
  static constexpr int oD = oQA + C * LC;          // pivots D: C
  static constexpr int oR = oD + C;                // r_t (refreshes before step t): C
  static constexpr int oRp = oR + C;               // r′_t: C
  static constexpr int oZQ = oRp + C;              // zᵀq per row: C
  static constexpr int oFlag = oZQ + C;            // per row: 1 = the output needs the huge-q rule; [C] any
  static constexpr int oKZ = oFlag + C + 4;         // per row: 1 = k̂ counts as zero
  static constexpr int floats = oKZ + C;
  static constexpr std::size_t stage_elems = std::size_t(3 * C * DK + C * DV);  // u, k, q, v
  static constexpr std::size_t stage_bytes = stage_elems * sizeof(In);
  static constexpr std::size_t raw_offset = (std::size_t(floats) * 4 + 15) / 16 * 16;
  static constexpr std::size_t bytes = raw_offset + 2 * stage_bytes;
  static_assert(DK % 16 == 0 && DV % 16 == 0, "vla: chunked kernel head dims must be multiples of 16");
};

/// Copies rows [0, n) of chunk tokens (from token index `tok`) of u, k, q (DK) and v (DV) into a
/// stage with cp.async: [u | k | q | v], each C rows.
template <class In, int DK, int DV>
__device__ __forceinline__ void stage_tokens(In* st, const RecurrentParams<In>& p, std::int64_t tok, std::int64_t h,
                                             int n) {
  using L = ChunkedLayout<In, DK, DV>;
  constexpr int EPV = 16 / sizeof(In);  // elements per 16-byte copy
  constexpr int KV = DK / EPV, VV = DV / EPV;
  const std::int64_t H = p.heads;
  const int total = n * (3 * KV + VV);
  for (int i = threadIdx.x; i < total; i += L::NT) {
    const int row = i / (3 * KV + VV), r = i % (3 * KV + VV);
    const std::int64_t t = tok + row;
    if (r < 3 * KV) {
      const int which = r / KV, c = (r % KV) * EPV;
      const In* src = (which == 0 ? p.u : which == 1 ? p.k : p.q) + (t * H + h) * DK + c;
      cp_async16(st + which * L::C * DK + row * DK + c, src);
    } else {
      const int c = (r - 3 * KV) * EPV;
      cp_async16(st + 3 * L::C * DK + row * DV + c, p.v + (t * H + h) * DV + c);
    }
  }
}

template <class In, int DK, int DV>
__global__ void __launch_bounds__(ChunkedLayout<In, DK, DV>::NT, 1) chunked_vla_kernel(const RecurrentParams<In> p) {
  using L = ChunkedLayout<In, DK, DV>;
  constexpr int C = L::C, NW = L::NW, LK = L::LK, LV = L::LV, LC = L::LC;
  constexpr bool kSplitA = VLA_CUDA_CHUNKED_SPLIT_A != 0 || std::is_same<In, float>::value;
  constexpr bool kSplitS = VLA_CUDA_CHUNKED_SPLIT_S != 0 || std::is_same<In, float>::value;
  extern __shared__ __align__(16) unsigned char smem[];
  float* const f = reinterpret_cast<float*>(smem);
  In* const stage0 = reinterpret_cast<In*>(smem + L::raw_offset);
  float *const As = f + L::oA, *const Ss = f + L::oS, *const zs = f + L::oz;
  float *const Uh = f + L::oUKQ, *const Kh = Uh + C * LK, *const Qs = Kh + C * LK;
  float *const Vs = f + L::oV, *const X = f + L::oX, *const E = f + L::oX, *const KSQ = f + L::oKSQ;
  float *const Zm = f + L::oZ, *const Ah = f + L::oAh, *const Gm = f + L::oG, *const Pm = f + L::oP;
  float *const Lk = f + L::oLk, *const QA = f + L::oQA, *const Dp = f + L::oD, *const Rb = f + L::oR;
  float *const Ra = f + L::oRp, *const ZQ = f + L::oZQ, *const Flag = f + L::oFlag, *const KZ = f + L::oKZ;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const std::int64_t H = p.heads, pair = blockIdx.x, seq = pair / H, h = pair % H;
  const TokenSpan span = token_span(p.cu_seqlens, p.seq_len, seq);
  const std::int64_t len = span.length;
  const std::int64_t nchunks = (len + C - 1) / C;
  auto ntok = [&](std::int64_t c) { return static_cast<int>(len - c * C < C ? len - c * C : C); };

  if (len > 0) stage_tokens<In, DK, DV>(stage0, p, span.first, h, ntok(0));
  cp_async_commit();

  // The state: given, or fresh (A = I/λ0, S = 0, z = 0, t = 0).
  const bool has_init = p.S0 != nullptr;
  for (int i = tid; i < DK * DK; i += L::NT) {
    const int r = i / DK, c = i % DK;
    As[r * LK + c] = has_init ? p.A0[pair * DK * DK + i] : (r == c ? p.inv_lambda0 : 0.f);
  }
  for (int i = tid; i < DV * DK; i += L::NT) Ss[(i / DK) * LK + i % DK] = has_init ? p.S0[pair * DV * DK + i] : 0.f;
  for (int i = tid; i < DK; i += L::NT) zs[i] = has_init ? p.z0[pair * DK + i] : 0.f;
  std::int64_t steps = has_init ? p.steps0[pair] : 0;
#if VLA_CUDA_CHUNKED_PROFILE
  long long prof_[12] = {}, prof_last_ = clock64();
#endif

  for (std::int64_t c = 0; c < nchunks; ++c) {
    const int n = ntok(c);
    const std::int64_t tok = span.first + c * C;
    In* const st = stage0 + (c & 1) * L::stage_elems;
    if (c + 1 < nchunks) stage_tokens<In, DK, DV>(stage0 + ((c + 1) & 1) * L::stage_elems, p, tok + C, h, ntok(c + 1));
    cp_async_commit();
    cp_async_wait_group<1>();
    __syncthreads();
    VLA_CHUNKED_PHASE(0);

    // P1: Û, K̂ (zero rows where they count as zero, and past the sequence's end), Q, V; r, r′; z prefix.
    const In* const su = st;
    const In* const sk = st + C * DK;
    const In* const sq = st + 2 * C * DK;
    const In* const sv = st + 3 * C * DK;
    {  // rows warp·J .. warp·J + J − 1 of [Û; K̂], normalised together
      constexpr int J = 2 * C / NW;
      static_assert(2 * C % NW == 0, "vla: rows per warp");
      float x[J][DK / 32], extra[J], fct[J];
#pragma unroll
      for (int r = 0; r < J; ++r) {
        const int job = warp * J + r, row = job % C;
        const In* src = (job < C ? su : sk) + row * DK;
        extra[r] = job < C ? p.inv_sqrt_dk : 1.f;
#pragma unroll
        for (int i = 0; i < DK / 32; ++i) x[r][i] = row < n ? to_float(src[lane + 32 * i]) : 0.f;
      }
      warp_unit_factors(x, extra, fct);
#pragma unroll
      for (int r = 0; r < J; ++r) {
        const int job = warp * J + r, row = job % C;
        float* dst = (job < C ? Uh : Kh) + row * LK;
#pragma unroll
        for (int i = 0; i < DK / 32; ++i) dst[lane + 32 * i] = x[r][i] * fct[r];
        if (job >= C && lane == 0) KZ[row] = fct[r] == 0.f ? 1.f : 0.f;
      }
    }
    for (int i = tid; i < C * DK; i += L::NT) {
      const int row = i / DK, col = i % DK;
      Qs[row * LK + col] = row < n ? to_float(sq[i]) : 0.f;
    }
    for (int i = tid; i < C * DV; i += L::NT) {
      const int row = i / DV, col = i % DV;
      Vs[row * LV + col] = row < n ? to_float(sv[i]) : 0.f;
    }
    if (tid < C) {
      // refreshes at steps j ∈ [steps, steps + t) are those with (j + 1) a multiple of the period
      // with ph = steps mod P (one 64-bit remainder): floor((steps + t)/P) − floor(steps/P) = (ph + t)/P
      const int P = p.refresh_period;
      const int t = tid < n ? tid : n - 1;
      const int ph = P > 0 ? static_cast<int>(steps % P) : 0;
      Rb[tid] = P > 0 ? float((ph + t) / P) : 0.f;
      Ra[tid] = P > 0 ? float((ph + t + 1) / P) : 0.f;
      Flag[tid] = 0.f;
      if (tid == 0) Flag[C] = 0.f;
    }
    for (int col = tid; col < DK; col += L::NT) {  // z_t = z_c + Σ_{s≤t} k_s, kept for zᵀq
      float run = zs[col];
#pragma unroll
      for (int row = 0; row < C; ++row) {
        if (row < n) run += to_float(sk[row * DK + col]);
        Zm[row * LK + col] = run;
      }
      zs[col] = run;
    }
    __syncthreads();
    VLA_CHUNKED_PHASE(1);

    // P2: X = [Û; K̂] A with the refresh terms; KSQ = [K̂; Q] Sᵀ; zᵀq per row.
    // A is symmetric: B(k, n) = A(k, n) is read as As[n][k], the conflict-free order.
    product<kSplitA, DK>(Operand{Uh, LK, 1}, Operand{As, 1, LK}, 2 * C, DK, warp, NW, lane, [&](int r, int col, float v) {
      const float* hat = Uh + r * LK + col;  // Û (r < C) or K̂ (r ≥ C)
      const float cnt = r < C ? Rb[r] : Ra[r - C];
      X[r * LK + col] = cnt != 0.f ? v + p.refresh_eps * cnt * *hat : v;
    });
    product<kSplitS, DK>(Operand{Kh, LK, 1}, Operand{Ss, 1, LK}, 2 * C, DV, warp, NW, lane,
                     [&](int r, int col, float v) { KSQ[r * LV + col] = v; });
    for (int row = warp; row < C; row += NW) {
      float s = 0.f;
#pragma unroll
      for (int i = 0; i < DK / 32; ++i) s += Qs[row * LK + lane + 32 * i] * Zm[row * LK + lane + 32 * i];
      s = group_sum<32>(s);
      if (lane == 0) ZQ[row] = s;
    }
    __syncthreads();
    VLA_CHUNKED_PHASE(2);

    // P3: Ĝ = I + tril(Û W̃ᵀ) (tensor cores, a tile per warp); then L D Lᵀ = Ĝ in warp 0 (L below
    // the diagonal of Gm, D in Dp).
    product<kSplitA, DK>(Operand{Uh, LK, 1}, Operand{X, 1, LK}, C, C, warp, NW, lane, [&](int r, int col, float v) {
      Gm[r * LC + col] = col <= r ? v + (r == col ? 1.f : 0.f) : 0.f;
    });
    __syncthreads();
    if (warp == 0) {
      // L D Lᵀ with lane i holding row i of Ĝ in registers (right-looking, fully unrolled): the
      // column-j pivot and entries come by shuffles; the reciprocal of each pivot is formed once.
      float gr[C];
#pragma unroll
      for (int m = 0; m < C; ++m) gr[m] = lane < C ? Gm[lane * LC + m] : 0.f;
#pragma unroll
      for (int j = 0; j < C; ++j) {
        const float d = rules::sm_denominator<float>(__shfl_sync(0xffffffffu, gr[j], j), p.stab_eps);
        const float rd = 1.f / d;
        const float gij = gr[j];  // this lane's (unscaled) column-j entry
#pragma unroll
        for (int m = j + 1; m < C; ++m) gr[m] -= gij * __shfl_sync(0xffffffffu, gr[j], m) * rd;
        if (lane > j) gr[j] = gij * rd;  // L(i, j)
        if (lane == 0) Dp[j] = d;
      }
      if (lane < C)
#pragma unroll
        for (int m = 0; m < C; ++m) Gm[lane * LC + m] = gr[m];
    }
    __syncthreads();
    VLA_CHUNKED_PHASE(3);

    // P4: Z = L⁻¹ W̃, one thread per column.
    for (int col = tid; col < DK; col += L::NT) {
      float zc[C];
#pragma unroll
      for (int s = 0; s < C; ++s) {
        float w = X[s * LK + col];
#pragma unroll
        for (int j = 0; j < s; ++j) w -= Gm[s * LC + j] * zc[j];
        zc[s] = w;
        Zm[s * LK + col] = w;
      }
    }
    __syncthreads();
    VLA_CHUNKED_PHASE(4);

    // P5: P = tril(K̂ Zᵀ) D⁻¹ (warp 0); A ← A − Zᵀ D⁻¹ Z + ε r′ I on the lower tiles, mirrored.
    product<kSplitA, DK>(Operand{Kh, LK, 1}, Operand{Zm, 1, LK}, C, C, warp, NW, lane,
                         [&](int r, int col, float v) { Pm[r * LC + col] = col <= r ? v / Dp[col] : 0.f; });
    {
      const float refresh = n > 0 ? p.refresh_eps * Ra[n - 1] : 0.f;
      // Zᵀ D⁻¹ Z as (D^{-1/2} Z)ᵀ (D^{-1/2} Z), lower tiles only; each element is written once
      // and mirrored, so A stays exactly symmetric.
      for (int tile = warp; tile < (DK / 16) * (DK / 16); tile += NW) {
        const int m0 = (tile / (DK / 16)) * 16, n0 = (tile % (DK / 16)) * 16;
        if (n0 > m0) continue;
        float acc[2][4] = {};
        const int g = lane >> 2, t = lane & 3;
        for (int k0 = 0; k0 < C; k0 += 8) {
          // A(m, k) = Z[k][m]·s_k, B(k, n) = Z[k][n]·s_k with s_k = D_k^{-1/2}
          const float s0 = rsqrtf(Dp[k0 + t]), s1 = rsqrtf(Dp[k0 + t + 4]);
          const float af[4] = {Zm[(k0 + t) * LK + m0 + g] * s0, Zm[(k0 + t) * LK + m0 + g + 8] * s0,
                               Zm[(k0 + t + 4) * LK + m0 + g] * s1, Zm[(k0 + t + 4) * LK + m0 + g + 8] * s1};
          std::uint32_t ah[4], al[4];
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            ah[i] = to_tf32(af[i]);
            al[i] = kSplitA ? to_tf32(af[i] - __uint_as_float(ah[i])) : 0u;
          }
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            const int nn = n0 + 8 * j + g;
            const float bf[2] = {Zm[(k0 + t) * LK + nn] * s0, Zm[(k0 + t + 4) * LK + nn] * s1};
            std::uint32_t bh[2], bl[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
              bh[i] = to_tf32(bf[i]);
              bl[i] = kSplitA ? to_tf32(bf[i] - __uint_as_float(bh[i])) : 0u;
            }
            if (kSplitA) {
              mma_tf32(acc[j], al, bh);
              mma_tf32(acc[j], ah, bl);
            }
            mma_tf32(acc[j], ah, bh);
          }
        }
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int r = m0 + g + (i >= 2 ? 8 : 0), col = n0 + 8 * j + 2 * t + (i & 1);
            if (col > r) continue;
            const float v = As[r * LK + col] - acc[j][i] + (r == col ? refresh : 0.f);
            As[r * LK + col] = v;
            if (col != r) As[col * LK + r] = v;
          }
      }
    }
    __syncthreads();
    VLA_CHUNKED_PHASE(5);

    // P6: Alpha = X_K − P Z.
    product<kSplitA, C>(Operand{Pm, LC, 1}, Operand{Zm, LK, 1}, C, DK, warp, NW, lane,
                     [&](int r, int col, float v) { Ah[r * LK + col] = X[(C + r) * LK + col] - v; });
    __syncthreads();
    VLA_CHUNKED_PHASE(6);

    // P7: α̂ = α/‖α‖; a zero k̂ or a zero α writes nothing (a zero row).
    {
      constexpr int J = C / NW;
      static_assert(C % NW == 0, "vla: rows per warp");
      float x[J][DK / 32], one[J], fct[J];
#pragma unroll
      for (int r = 0; r < J; ++r) {
        one[r] = 1.f;
#pragma unroll
        for (int i = 0; i < DK / 32; ++i) x[r][i] = Ah[(warp * J + r) * LK + lane + 32 * i];
      }
      warp_unit_factors(x, one, fct);
#pragma unroll
      for (int r = 0; r < J; ++r) {
        const float g = KZ[warp * J + r] != 0.f ? 0.f : fct[r];
#pragma unroll
        for (int i = 0; i < DK / 32; ++i) Ah[(warp * J + r) * LK + lane + 32 * i] = x[r][i] * g;
      }
    }
    __syncthreads();
    VLA_CHUNKED_PHASE(7);

    // P8: L_k = tril₋(K̂ Α̂ᵀ), QA = tril(Q Α̂ᵀ).
    // [K̂; Q] Α̂ᵀ in one product (K̂ and Q are consecutive rows of UKQ).
    product<kSplitS, DK>(Operand{Kh, LK, 1}, Operand{Ah, 1, LK}, 2 * C, C, warp, NW, lane, [&](int r, int col, float v) {
      if (r < C)
        Lk[r * LC + col] = col < r ? v : 0.f;
      else
        QA[(r - C) * LC + col] = col <= r - C ? v : 0.f;
    });
    __syncthreads();
    VLA_CHUNKED_PHASE(8);

    // P9: (I + L_k) E = V − K̂ Sᵀ, one thread per column (E over W̃, which is no longer read).
    for (int col = tid; col < DV; col += L::NT) {
      float ec[C];
#pragma unroll
      for (int s = 0; s < C; ++s) {
        float w = Vs[s * LV + col] - KSQ[s * LV + col];
#pragma unroll
        for (int j = 0; j < s; ++j) w -= Lk[s * LC + j] * ec[j];
        ec[s] = w;
      }
#pragma unroll
      for (int s = 0; s < C; ++s) E[s * LV + col] = ec[s];
    }
    __syncthreads();
    VLA_CHUNKED_PHASE(9);

    // P10: O = QSᵀ + QA E → o; S ← S + Eᵀ Α̂.
    In* const o = p.o;
    product<kSplitS, C>(Operand{QA, LC, 1}, Operand{E, LV, 1}, C, DV, warp, NW, lane, [&](int r, int col, float v) {
      if (r >= n) return;
      const float num = KSQ[(C + r) * LV + col] + v;
      float out = num;
      if (p.normalize) {
        const float zq = ZQ[r];
        if (!(rules::is_finite(num) && rules::is_finite(zq))) {
          Flag[r] = 1.f;
          Flag[C] = 1.f;
          return;
        }
        out = num / rules::output_denominator<float>(zq, p.denom_eps);
      }
      o[((tok + r) * H + h) * DV + col] = from_float<In>(out);
    });
    product<kSplitS, C>(Operand{E, 1, LV}, Operand{Ah, LK, 1}, DV, DK, warp, NW, lane,
                     [&](int r, int col, float v) { Ss[r * LK + col] += v; });
    __syncthreads();
    VLA_CHUNKED_PHASE(10);

    // P11 (rare): rows whose S q or zᵀq overflowed (huge finite q), by rules::rescaled_output from
    // q̃ = q/max|q|: S_t q̃ = S_end q̃ − Σ_{s>t} e_s (α̂_sᵀ q̃).
    if (Flag[C] != 0.f) {
      for (int row = warp; row < n; row += NW) {
        if (Flag[row] == 0.f) continue;
        float m = 0.f;
        for (int i = lane; i < DK; i += 32) m = fmaxf(m, fabsf(Qs[row * LK + i]));
        m = group_max<32>(m);
        // z_t = z_end − Σ_{s>t} k_s
        float acc = 0.f;
        for (int i = lane; i < DK; i += 32) {
          float zt = zs[i];
          for (int s = row + 1; s < n; ++s) zt -= to_float(sk[s * DK + i]);
          acc += zt * (Qs[row * LK + i] / m);
        }
        const float zq_scaled = group_sum<32>(acc);
        for (int i = 0; i < DV; ++i) {
          float part = 0.f;
          for (int j = lane; j < DK; j += 32) part += Ss[i * LK + j] * (Qs[row * LK + j] / m);
          float sqs = group_sum<32>(part);
          for (int s = row + 1; s < n; ++s) {
            float a = 0.f;
            for (int j = lane; j < DK; j += 32) a += Ah[s * LK + j] * (Qs[row * LK + j] / m);
            sqs -= E[s * LV + i] * group_sum<32>(a);
          }
          if (lane == 0)
            o[((tok + row) * H + h) * DV + i] =
                from_float<In>(rules::rescaled_output<float>(sqs, zq_scaled, m, p.denom_eps));
        }
      }
      __syncthreads();
    }
    steps += n;
  }
  cp_async_wait_all();
#if VLA_CUDA_CHUNKED_PROFILE
  if (tid == 0 && blockIdx.x == 0 && nchunks > 0) {
    long long tot = 0;
    for (int i = 0; i < 11; ++i) tot += prof_[i];
    printf("chunked profile (CTA 0, %lld chunks), cycles per chunk:", (long long)nchunks);
    for (int i = 0; i < 11; ++i) printf(" P%d %lld", i, prof_[i] / nchunks);
    printf(" | total %lld\n", tot / nchunks);
  }
#endif

  if (p.S1) {
    __syncthreads();
    for (int i = tid; i < DK * DK; i += L::NT) p.A1[pair * DK * DK + i] = As[(i / DK) * LK + i % DK];
    for (int i = tid; i < DV * DK; i += L::NT) p.S1[pair * DV * DK + i] = Ss[(i / DK) * LK + i % DK];
    for (int i = tid; i < DK; i += L::NT) p.z1[pair * DK + i] = zs[i];
    if (tid == 0) p.steps1[pair] = steps;
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace vla
