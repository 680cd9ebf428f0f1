// vla/cuda/detail/chunked_kernel.cuh — the chunked VLA forward (docs/maths.md §4) on tensor cores.
//
// One CTA per (sequence, head) of 16 warps in two roles that run at the same time, the float state
// in shared memory for the whole sequence, tokens in chunks of C = 32 (VLA_CUDA_CHUNKED_C). The S
// part needs only α̂ from the A part, so the 8 A warps run the A chain (Û, K̂ → W̃ = ÛA → Ĝ and
// its LDLᵀ → Z = L⁻¹W̃ → P, the A update → Alpha → α̂) and hand each chunk's α̂ to the 8 S warps
// through a ring of two slots, while those finish the previous chunk (L_k, QA, E, O → o, the S
// update). The host reference of every line is vla/chunked.hpp, in the same order; the design,
// the precision of each product and the measured effect of each choice are in
// include/vla/cuda/README.md, "The chunked kernel".
// The d-sized products run as mma.sync m16n8k8 TF32 with fp32 accumulation; "split" products use
// 3×TF32 (a = a_hi + a_lo, a·b ≈ a_hi b_hi + a_hi b_lo + a_lo b_hi), which carries fp32 accuracy:
// every product for float tokens, none for half/bf16 tokens (VLA_CUDA_CHUNKED_SPLIT_A/_S).
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
// Where the S warps get K̂ from (P1s): 1 = a copy of the A warps' rows (chunks ≥ 1), 0 = their own
// normalisation of the raw k (the same code, so the same bits).
#ifndef VLA_CUDA_CHUNKED_KHAT_FROM_A
#define VLA_CUDA_CHUNKED_KHAT_FROM_A 1
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
#define VLA_CHUNKED_SPHASE(i)                         \
  do {                                                \
    if (tid == NTR && blockIdx.x == 0) {              \
      const long long now_ = clock64();               \
      prof_s_[i] += now_ - prof_last_;                \
      prof_last_ = now_;                              \
    }                                                 \
  } while (0)
#else
#define VLA_CHUNKED_PHASE(i) \
  do {                       \
  } while (0)
#define VLA_CHUNKED_SPHASE(i) \
  do {                        \
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

/// hi = x rounded to TF32; lo = the rest, rounded (Split), else 0: a ≈ hi + lo for 3×TF32.
template <bool Split, int N>
__device__ __forceinline__ void split_tf32(const float (&x)[N], std::uint32_t (&hi)[N], std::uint32_t (&lo)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    hi[i] = to_tf32(x[i]);
    lo[i] = Split ? to_tf32(x[i] - __uint_as_float(hi[i])) : 0u;
  }
}

/// c += a·b with a = ah + al, b = bh + bl: 3×TF32 (al·bh + ah·bl + ah·bh) when Split, else ah·bh.
template <bool Split>
__device__ __forceinline__ void mma_tf32_split(float (&c)[4], const std::uint32_t (&ah)[4], const std::uint32_t (&al)[4],
                                               const std::uint32_t (&bh)[2], const std::uint32_t (&bl)[2]) {
  if (Split) {
    mma_tf32(c, al, bh);
    mma_tf32(c, ah, bl);
  }
  mma_tf32(c, ah, bh);
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
    split_tf32<Split>(af, ah, al);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int n = n0 + 8 * j + g;
      const float bf[2] = {b(k0 + t, n), b(k0 + t + 4, n)};
      std::uint32_t bh[2], bl[2];
      split_tf32<Split>(bf, bh, bl);
      mma_tf32_split<Split>(acc[j], ah, al, bh, bl);
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

/// Rows r0 .. r0 + 7 of x = L⁻¹ b for a unit lower-triangular matrix L (row-major, row stride LC,
/// strictly lower part read), one column of x per group of G consecutive lanes (part = lane mod G),
/// rows < r0 already final in out (row stride LD), written by this call's earlier blocks. The
/// group splits the sum over the earlier rows, x_s = b_s − Σ_{j<r0} L(s, j) x_j (part p takes
/// j ≡ p mod G), adds the parts by a butterfly (so every lane of the group has the same bits),
/// then solves the 8×8 diagonal block redundantly in every lane and stores row i from part i mod G.
/// A caller that solves block after block puts a __syncwarp between them (rows are read by the
/// group's other lanes). Why blocks of 8: the earlier rows' sums are independent FMAs, so only the
/// diagonal block's 28 form a chain.
template <int G, int LC, int LD, class Rhs>
__device__ __forceinline__ void lower_solve_block(const float* L, int r0, Rhs&& b, float* out, int col, int part) {
  float acc[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] = part == 0 ? b(r0 + i) : 0.f;
  for (int j = part; j < r0; j += G) {
    const float xj = out[j * LD + col];
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] = fmaf(-L[(r0 + i) * LC + j], xj, acc[i]);
  }
  if (G > 1)
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] = group_sum<G>(acc[i]);
  float xb[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
#pragma unroll
    for (int m = 0; m < i; ++m) acc[i] = fmaf(-L[(r0 + i) * LC + r0 + m], xb[m], acc[i]);
    xb[i] = acc[i];
    if (i % G == part) out[(r0 + i) * LD + col] = acc[i];
  }
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

/// P7: rows of the slot Ah from Alpha to α̂ = α/‖α‖ (the rules' scale-safe factor), C/NW rows per
/// warp; a zero k̂ (kz[row] != 0) or a zero α writes nothing (a zero row).
template <int C, int NW, int DK, int LK>
__device__ __forceinline__ void alpha_hat_rows(float* Ah, const float* kz, int warp, int lane) {
  constexpr int J = C / NW;
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
    const float g = kz[warp * J + r] != 0.f ? 0.f : fct[r];
#pragma unroll
    for (int i = 0; i < DK / 32; ++i) Ah[(warp * J + r) * LK + lane + 32 * i] = x[r][i] * g;
  }
}

// ---- layout

/// The chunked kernel's shared memory for head dims (DK, DV), token type In. Two regions, one per
/// role (each role writes only its own; the S warps copy the A warps' K̂ rows between two
/// hand-overs), a ring of two α̂ slots between them, then each role's one stage of raw tokens.
/// Float tiles have padded rows (ld ≡ 4 mod 32 keeps the fragment loads of row-major operands
/// conflict-free).
template <class In, int DK, int DV>
struct ChunkedLayout {
  static constexpr int C = VLA_CUDA_CHUNKED_C;  ///< tokens per chunk
  static constexpr int NWR = 8;                 ///< warps per role
  static constexpr int NTR = 32 * NWR;          ///< threads per role
  static constexpr int NT = 2 * NTR, NW = 2 * NWR;
  static constexpr int LK = DK + 4, LV = DV + 4, LC = C + 4;
  static constexpr int kRing = 2;  ///< α̂ slots: the A warps run up to two chunks ahead
  // float offsets — the A role
  static constexpr int oA = 0;                 // A: DK × LK
  static constexpr int oUK = oA + DK * LK;     // [Û; K̂] of this chunk and of the next: 2 × 2C × LK
  static constexpr int oX = oUK + 4 * C * LK;  // X = [W̃; K̂A + εr′K̂]: 2C × LK
  static constexpr int oZ = oX + 2 * C * LK;   // Z: C × LK
  static constexpr int oG = oZ + C * LK;       // Ĝᵀ, then L (P3–P4), then P (P5–P6): C × LC
  static constexpr int oP = oG;
  static constexpr int oD = oG + C * LC;       // pivots D: C
  static constexpr int oDi = oD + C;           // 1/D: C
  static constexpr int oR = oDi + C;           // r_t (refreshes before step t): 2 × C (this chunk, next)
  static constexpr int oRp = oR + 2 * C;       // r′_t: 2 × C
  static constexpr int oKZ = oRp + 2 * C;      // per row: 1 = k̂ counts as zero: 2 × C
  // the S role
  static constexpr int oS = oKZ + 2 * C;         // S: DV × LK
  static constexpr int oz = oS + DV * LK;        // z: DK
  static constexpr int oKQ = oz + DK;            // [K̂; Q]: 2C × LK
  static constexpr int oV = oKQ + 2 * C * LK;    // V: C × LV
  static constexpr int oKSQ = oV + C * LV;       // [K̂Sᵀ; QSᵀ]: 2C × LV
  static constexpr int oE = oKSQ + 2 * C * LV;   // E: C × LV
  static constexpr int oZp = oE + C * LV;        // z_t = z_c + Σ_{s≤t} k_s per row: C × LK
  static constexpr int oLk = oZp + C * LK;       // L_k: C × LC
  static constexpr int oQA = oLk + C * LC;       // QA: C × LC
  static constexpr int oZQ = oQA + C * LC;       // zᵀq per row: C
  static constexpr int oFlag = oZQ + C;          // per row: 1 = the output needs the huge-q rule; [C] any
  // the ring
  static constexpr int oRing = oFlag + C + 4;    // α̂ of a chunk per slot: kRing × C × LK
  static constexpr int floats = oRing + kRing * C * LK;
  // raw tokens (one stage per role; the next chunk's copy starts once the current one is converted)
  static constexpr std::size_t stageA_elems = std::size_t(2 * C * DK);         // u, k
  static constexpr std::size_t stageS_elems = std::size_t(2 * C * DK + C * DV);  // k, q, v
  static constexpr std::size_t stageA_offset = (std::size_t(floats) * 4 + 15) / 16 * 16;
  static constexpr std::size_t stageS_offset = stageA_offset + (stageA_elems * sizeof(In) + 15) / 16 * 16;
  static constexpr std::size_t bytes = stageS_offset + stageS_elems * sizeof(In);
  // named barriers (0 is __syncthreads)
  static constexpr int kBarA = 1, kBarS = 2;  // named barriers of one role
  static constexpr int kBarL = 3;             // the A warps that run the blocked LDLᵀ (P3–P4)
  static constexpr int kBarH = 4;             // all NT threads: the hand-over (chunk_handover)
  static constexpr int kBarP = 5;             // the two A warps that prepare the next chunk (P1a)
  static_assert(DK % 16 == 0 && DV % 16 == 0, "vla: chunked kernel head dims must be multiples of 16");
  static_assert(2 * C % NWR == 0 && C % NWR == 0, "vla: rows per warp");
};


/// The hand-over of a chunk's α̂ between the roles: named barrier kBarH of all NT threads, which the
/// A warps reach at one instruction and the S warps at another. Neither `__syncthreads` nor
/// `bar.sync` (= barrier.sync.aligned): the CUDA model and the PTX ISA define those only where
/// every thread reaches the same instruction under the same condition, and compute-sanitizer's
/// synccheck reports both here ("divergent thread(s) in block"; include/vla/cuda/README.md,
/// "compute-sanitizer"). `barrier.sync` without .aligned is the barrier defined for threads that
/// arrive from different code; every thread of both roles arrives once per chunk.
template <class Layout>
__device__ __forceinline__ void chunk_handover() {
  named_sync_divergent(Layout::kBarH, Layout::NT);
}

/// Copies rows [0, n) of a chunk (from token index `tok`) of up to three token arrays, each
/// of head dim d_i, into a stage laid out [array 0 | array 1 | array 2], C rows each, with cp.async,
/// spread over the role's NTR threads (rt = the thread's index in its role).
template <class In, int C, int NTR>
__device__ __forceinline__ void stage_rows(In* st, std::int64_t H, std::int64_t h, std::int64_t tok, int n, int rt,
                                           const In* a0, int d0, const In* a1, int d1, const In* a2, int d2) {
  constexpr int EPV = 16 / sizeof(In);  // elements per 16-byte copy
  const int v0 = d0 / EPV, v1 = d1 / EPV, v2 = a2 ? d2 / EPV : 0, per_row = v0 + v1 + v2;
  for (int i = rt; i < n * per_row; i += NTR) {
    const int row = i / per_row, r = i % per_row;
    const std::int64_t t = tok + row;
    if (r < v0) {
      cp_async16(st + row * d0 + r * EPV, a0 + (t * H + h) * d0 + r * EPV);
    } else if (r < v0 + v1) {
      const int c = (r - v0) * EPV;
      cp_async16(st + C * d0 + row * d1 + c, a1 + (t * H + h) * d1 + c);
    } else {
      const int c = (r - v0 - v1) * EPV;
      cp_async16(st + C * (d0 + d1) + row * d2 + c, a2 + (t * H + h) * d2 + c);
    }
  }
}

/// One row of raw tokens (DK wide, 16-byte aligned) normalised by one thread with the rules'
/// scale-safe factor (docs/maths.md §2: m = max|x|, s = Σ (x/m)², factor = extra/(m·√s), 0 where x
/// counts as zero), written as floats to dst (16-byte aligned); live = false writes a zero row.
/// Three passes over the row (max, scaled sum of squares, scale) so that no row is held in
/// registers; four partial accumulators per pass shorten the dependent chains. Returns the factor.
/// Why a thread per row: a warp per row spends its time in two five-level shuffle trees and two
/// divisions per row (≈ 0.5–0.7 k cycles a row, run 9's profile); one thread per row has the same
/// divisions and no shuffles, and 32 rows take the time of one.
template <class In, int DK>
__device__ __forceinline__ float unit_row_thread(const In* src, bool live, float extra, float* dst) {
  constexpr int EPV = 16 / sizeof(In), NP = DK / EPV;
  struct alignas(16) Pack {
    In v[EPV];
  };
  static_assert(DK % 4 == 0 && DK % EPV == 0, "vla: row width");
  const Pack* const s = reinterpret_cast<const Pack*>(src);
  float fct = 0.f;
  if (live) {
    float m[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int i = 0; i < NP; ++i) {
      const Pack w = s[i];
#pragma unroll
      for (int e = 0; e < EPV; ++e) m[e & 3] = fmaxf(m[e & 3], fabsf(to_float(w.v[e])));
    }
    const float im = rules::inverse_max<float>(fmaxf(fmaxf(m[0], m[1]), fmaxf(m[2], m[3])));
    float a[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int i = 0; i < NP; ++i) {
      const Pack w = s[i];
#pragma unroll
      for (int e = 0; e < EPV; ++e) {
        const float y = to_float(w.v[e]) * im;
        a[e & 3] = fmaf(y, y, a[e & 3]);
      }
    }
    fct = im == 0.f ? 0.f : rules::normalize_factor<float>(im, (a[0] + a[1]) + (a[2] + a[3]), extra);
  }
#pragma unroll
  for (int i = 0; i < NP; ++i) {
    const Pack w = s[i];
    float x[EPV];
#pragma unroll
    for (int e = 0; e < EPV; ++e) x[e] = live ? to_float(w.v[e]) * fct : 0.f;
#pragma unroll
    for (int e = 0; e < EPV; e += 4) st4(dst + i * EPV + e, make_float4(x[e], x[e + 1], x[e + 2], x[e + 3]));
  }
  return fct;
}

/// The chunked VLA forward: one CTA per (sequence, head) of two warp-specialised roles that run
/// concurrently, chunk by chunk, joined by a ring of α̂ slots (docs/maths.md §4: the S part needs
/// only α̂ from the A part):
///   A warps (0–7):  P2a W̃ = ÛA + refresh terms · P3 Ĝ · P3–P4 the blocked LDLᵀ and
///                   Z = L⁻¹W̃ (warps 0–5; warps 6–7: the next chunk's Û, K̂ rows, r, r′, then
///                   X's K̂ rows K̂A + εr′K̂) · P5 P, A update · P6 Alpha → ring · P7 α̂ (zero
///                   rules) · hand-over
///   S warps (8–15): P1s K̂ (the A warps' rows, copied), Q, V, z prefix · P2s [K̂; Q]Sᵀ, zᵀq ·
///                   hand-over · P8 L_k, QA · P9 E · P10 O → o, S update · P11 huge-q rows
/// The hand-over is one CTA barrier per chunk; the S warps, whose chain is the shorter, reach it
/// first, so the A chain hardly waits.
template <class In, int DK, int DV>
__global__ void __launch_bounds__(ChunkedLayout<In, DK, DV>::NT, 1) chunked_vla_kernel(const RecurrentParams<In> p) {
  using L = ChunkedLayout<In, DK, DV>;
  constexpr int C = L::C, NW = L::NWR, NTR = L::NTR, LK = L::LK, LV = L::LV, LC = L::LC;
  constexpr bool kSplitA = VLA_CUDA_CHUNKED_SPLIT_A != 0 || std::is_same<In, float>::value;
  constexpr bool kSplitS = VLA_CUDA_CHUNKED_SPLIT_S != 0 || std::is_same<In, float>::value;
  extern __shared__ __align__(16) unsigned char smem[];
  float* const f = reinterpret_cast<float*>(smem);
  float* const ring = f + L::oRing;

  const int tid = threadIdx.x, lane = tid & 31;
  const bool a_role = tid < NTR;
  const int rt = tid % NTR, warp = rt >> 5;  // index within the role
  const std::int64_t H = p.heads, pair = blockIdx.x, seq = pair / H, h = pair % H;
  const TokenSpan span = token_span(p.cu_seqlens, p.seq_len, seq);
  const std::int64_t len = span.length;
  const std::int64_t nchunks = (len + C - 1) / C;
  auto ntok = [&](std::int64_t c) { return static_cast<int>(len - c * C < C ? len - c * C : C); };
  const bool has_init = p.S0 != nullptr;
  std::int64_t steps = has_init ? p.steps0[pair] : 0;
#if VLA_CUDA_CHUNKED_PROFILE
  long long prof_[12] = {}, prof_s_[10] = {}, prof_last_ = clock64();
#endif

  if (a_role) {
    // =============================== the A warps ===============================
    float *const As = f + L::oA, *const X = f + L::oX;
    float *const Zm = f + L::oZ, *const Gt = f + L::oG, *const Pm = f + L::oP, *const Dp = f + L::oD;
    float* const Di = f + L::oDi;
    In* const st = reinterpret_cast<In*>(smem + L::stageA_offset);
    auto stage = [&](std::int64_t c) {  // by every A thread
      stage_rows<In, C, NTR>(st, H, h, span.first + c * C, ntok(c), rt, p.u, DK, p.k, DK, nullptr, 0);
    };
    // The stage of chunks ≥ 1 is copied, waited for and read by the two prep warps alone (below),
    // so that the copy's latency is no other warp's wait.
    constexpr int kPrepWarp0 = NW - 2, kPrepThreads = 32 * (NW - kPrepWarp0);
    const bool prep_warp = warp >= kPrepWarp0;
    auto stage_by_prep = [&](std::int64_t c) {
      stage_rows<In, C, kPrepThreads>(st, H, h, span.first + c * C, ntok(c), rt - 32 * kPrepWarp0, p.u, DK, p.k, DK,
                                      nullptr, 0);
    };
    // P1a for chunk cc into buffer b: Û, K̂ (zero rows where they count as zero, and past the
    // sequence's end), a thread per row (unit_row_thread), and the refresh counts r, r′ from
    // ph = (steps before cc) mod P: the refreshes at steps j ∈ [steps, steps + t) are those with
    // (j + 1) a multiple of P, floor((steps + t)/P) − floor(steps/P) = (ph + t)/P.
    // Who does it: every A warp for chunk 0; for the next chunk, the last two A warps (one row
    // per lane: warp NW − 2 the Û rows, warp NW − 1 the K̂ rows and the counts) while the others
    // run the blocked LDLᵀ and Z (P3–P4). A thread per row costs a warp the same instructions for
    // one row as for 32, so the rows are packed into full warps.
    enum class Prep { all, next };
    auto prep = [&](std::int64_t cc, int b, int ph, Prep part) {
      const int n = ntok(cc);
      float* const Ub = f + L::oUK + b * 2 * C * LK;  // Û rows 0 .. C − 1, then K̂
      int job = -1;
      if (part == Prep::all)
        job = lane < 2 * C / NW ? warp + NW * lane : -1;
      else if (lane < C)
        job = (warp == NW - 2 ? 0 : C) + lane;
      if (job >= 0) {
        const bool is_u = job < C;
        const int row = is_u ? job : job - C;
        const float fct = unit_row_thread<In, DK>(st + (is_u ? 0 : C * DK) + row * DK, row < n,
                                                  is_u ? p.inv_sqrt_dk : 1.f, Ub + job * LK);
        if (!is_u) f[L::oKZ + b * C + row] = fct == 0.f ? 1.f : 0.f;
      }
      const int i = part == Prep::all ? rt : (warp == NW - 1 ? lane : -1);
      if (i >= 0 && i < C) {
        const int P = p.refresh_period;
        const int t = i < n ? i : n - 1;
        f[L::oR + b * C + i] = P > 0 ? float((ph + t) / P) : 0.f;
        f[L::oRp + b * C + i] = P > 0 ? float((ph + t + 1) / P) : 0.f;
      }
    };
    if (len > 0) stage(0);
    cp_async_commit();
    for (int i = rt; i < DK * DK; i += NTR) {  // the state: given, or fresh (A = I/λ0)
      const int r = i / DK, c = i % DK;
      As[r * LK + c] = has_init ? p.A0[pair * DK * DK + i] : (r == c ? p.inv_lambda0 : 0.f);
    }
    // steps mod refresh_period, carried chunk to chunk (one 64-bit remainder for the whole sequence)
    int phase = p.refresh_period > 0 ? static_cast<int>(steps % p.refresh_period) : 0;
#define VLA_SYNC_A() named_sync(L::kBarA, NTR)
    if (len > 0) {  // chunk 0's P1a by every A warp; later chunks' P1a overlap the previous LDLᵀ
      cp_async_wait_all();
      VLA_SYNC_A();
      prep(0, 0, phase, Prep::all);
      VLA_SYNC_A();
      if (prep_warp && nchunks > 1) stage_by_prep(1);
      cp_async_commit();
    }
    for (std::int64_t c = 0; c < nchunks; ++c) {
      const int n = ntok(c), slot = static_cast<int>(c % L::kRing), b = static_cast<int>(c & 1);
      float* const Ah = ring + slot * C * LK;
      float *const Uh = f + L::oUK + b * 2 * C * LK, *const Kh = Uh + C * LK;
      const float *const Rb = f + L::oR + b * C, *const Ra = f + L::oRp + b * C;
      const int phase_next = p.refresh_period > 0 ? (phase + n) % p.refresh_period : 0;
      VLA_SYNC_A();  // the previous chunk is done with every tile
      VLA_CHUNKED_PHASE(0);
      VLA_CHUNKED_PHASE(1);

      // P2a: X = [Û; K̂] A with the refresh terms, rows r0 .. r0 + rows − 1 of [Û; K̂] by the
      // warps [w0, w0 + nw). A is symmetric: B(k, n) = A(k, n) is read as As[n][k], the
      // conflict-free order. Only W̃ = X's Û rows is on the A chain (Ĝ, Z need it now); its K̂ rows
      // (K̂A + εr′K̂, needed by Alpha in P6) are formed by the two prep warps beside the LDLᵀ, from
      // the same A_c, which P5 updates only after it.
      auto x_rows = [&](int r0, int rows, int w0, int nw) {
        product<kSplitA, DK>(Operand{Uh + r0 * LK, LK, 1}, Operand{As, 1, LK}, rows, DK, warp - w0, nw, lane,
                             [&](int rr, int col, float v) {
                               const int r = r0 + rr;
                               const float* hat = Uh + r * LK + col;  // Û (r < C) or K̂ (r ≥ C)
                               const float cnt = r < C ? Rb[r] : Ra[r - C];
                               X[r * LK + col] = cnt != 0.f ? v + p.refresh_eps * cnt * *hat : v;
                             });
      };
      x_rows(0, C, 0, NW);
      VLA_SYNC_A();
      VLA_CHUNKED_PHASE(2);

      // P3: Ĝ = I + tril(Û W̃ᵀ) (tensor cores, the lower tiles, a tile per warp), mirrored into
      // both triangles.
      product<kSplitA, DK>(
          Operand{Uh, LK, 1}, Operand{X, 1, LK}, C, C, warp, NW, lane,
          [&](int r, int col, float v) {
            if (col > r) return;
            v += r == col ? 1.f : 0.f;
            Gt[col * LC + r] = v;
            Gt[r * LC + col] = v;
          },
          [](int m0, int n0) { return n0 > m0; });
      VLA_SYNC_A();
      VLA_CHUNKED_PHASE(8);  // (the profile's P8: Ĝ's product; P3: the LDLᵀ and the next chunk's P1a)
      // P3–P4: L D Lᵀ = Ĝ and Z = L⁻¹ W̃, blocked by 8 pivots (docs/maths.md §4; the derivation
      // is include/vla/cuda/README.md, "The blocked LDLᵀ"). For each block column kb (r0 = 8·kb):
      //   panel (warp 0): lane i ≥ r0 holds row i of the current Schur complement's block column
      //     (8 entries, in registers); pivot j comes from lane r0 + j by shuffles, and every lane
      //     i > r0 + j eliminates it: L(i, r0 + j) = G(i, r0 + j)/D, G(i, m) −= L(i, r0 + j)·G(r0 + j, m)
      //     for the block's later columns m. Lane i stores its L(i, r0 ..) over Ĝ's row i, and
      //     (i ≥ r0 + 8) the values before the division, Y(i, j) = L(i, r0 + j)·D_{r0+j}, at Ĝ's
      //     (r0 + j, i), an entry above the diagonal that nothing reads again; D and 1/D.
      //     Beside the whole of P3–P4 the last two A warps prepare the next chunk (prep); the
      //     others (warps 0 .. NW − 3) meet at barrier kBarL.
      //   update: warps 2 .. NW − 3 subtract L Yᵀ (rank 8) from the trailing square (lower
      //     triangle and diagonal blocks: what later panels read), while warps 0–1 solve Z's rows
      //     r0 .. r0 + 7, a thread per column (lower_solve_block), z_s = W̃_s − Σ_{j<s} L(s, j) z_j
      //     in j order, the forward substitution's order.
      // Run 9's kernel did the 32 pivots with full 32-wide rows through shared memory (10.8 k
      // cycles per chunk) and then Z on two warps (5.7 k).
      static_assert(C % 8 == 0 && C <= 32, "vla: the blocked LDLt takes one row per lane");
      constexpr int kLdlWarps = NW - 2, kLdlThreads = 32 * kLdlWarps;  // warps 0 .. NW − 3
      static_assert(kLdlWarps >= 3, "vla: the blocked LDLt needs a panel warp, Z warps and update warps");
#pragma unroll
      for (int kb = 0; kb < C / 8; ++kb) {
        if (warp >= kLdlWarps) break;  // (uniform per warp; the loop unrolls)
        const int r0 = 8 * kb;
        if (warp == 0) {
#if VLA_CUDA_CHUNKED_PROFILE
          const long long pan0_ = clock64();
#endif
          const bool mine = lane >= r0 && lane < C;
          float pv[8];
          {
            const float4 x0 = mine ? ld4(Gt + lane * LC + r0) : make_float4(0.f, 0.f, 0.f, 0.f);
            const float4 x1 = mine ? ld4(Gt + lane * LC + r0 + 4) : make_float4(0.f, 0.f, 0.f, 0.f);
            pv[0] = x0.x, pv[1] = x0.y, pv[2] = x0.z, pv[3] = x0.w, pv[4] = x1.x, pv[5] = x1.y, pv[6] = x1.z, pv[7] = x1.w;
          }
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            const float piv = __shfl_sync(0xffffffffu, pv[j], r0 + j);
            const float d = rules::sm_denominator<float>(piv, p.stab_eps);
            float rd;
            asm("rcp.approx.f32 %0, %1;\n" : "=f"(rd) : "f"(d));  // MUFU.RCP, ≤ 1 ulp, no branch
            const bool below = lane > r0 + j && lane < C;
            const float y = pv[j];
            const float lij = y * rd;
#pragma unroll
            for (int m = j + 1; m < 8; ++m) {
              const float rowv = __shfl_sync(0xffffffffu, pv[m], r0 + j);
              if (below) pv[m] = fmaf(-lij, rowv, pv[m]);
            }
            if (lane >= r0 + 8 && lane < C) Gt[(r0 + j) * LC + lane] = y;
            if (below) pv[j] = lij;
            if (lane == r0 + j) {
              Dp[r0 + j] = d;
              Di[r0 + j] = rd;
            }
          }
          if (mine) {
            st4(Gt + lane * LC + r0, make_float4(pv[0], pv[1], pv[2], pv[3]));
            st4(Gt + lane * LC + r0 + 4, make_float4(pv[4], pv[5], pv[6], pv[7]));
          }
#if VLA_CUDA_CHUNKED_PROFILE
          if (tid == 0 && blockIdx.x == 0) prof_[10] += clock64() - pan0_;
#endif
        }
        named_sync(L::kBarL, kLdlThreads);
        if (warp < 2) {
          for (int col = rt; col < DK; col += 64)
            lower_solve_block<1, LC, LK>(Gt, r0, [&](int s) { return X[s * LK + col]; }, Zm, col, 0);
        } else if (kb + 1 < C / 8) {
          constexpr int kUpd = kLdlThreads - 64;  // the updating threads (warps 2 .. NW − 3)
          const int nt = C - r0 - 8, e0 = rt - 64;
          for (int e = e0; e < nt * nt; e += kUpd) {
            const int i = r0 + 8 + e / nt, jj = r0 + 8 + e % nt;
            if (jj > i && (jj >> 3) != (i >> 3)) continue;  // above the diagonal blocks: never read
            const float4 la = ld4(Gt + i * LC + r0), lb = ld4(Gt + i * LC + r0 + 4);
            const float* const yc = Gt + r0 * LC + jj;  // Y(jj, m) at (r0 + m, jj)
            float g = Gt[i * LC + jj];
            g = fmaf(-la.x, yc[0 * LC], g);
            g = fmaf(-la.y, yc[1 * LC], g);
            g = fmaf(-la.z, yc[2 * LC], g);
            g = fmaf(-la.w, yc[3 * LC], g);
            g = fmaf(-lb.x, yc[4 * LC], g);
            g = fmaf(-lb.y, yc[5 * LC], g);
            g = fmaf(-lb.z, yc[6 * LC], g);
            g = fmaf(-lb.w, yc[7 * LC], g);
            Gt[i * LC + jj] = g;
          }
        }
        named_sync(L::kBarL, kLdlThreads);
      }
      static_assert(kPrepWarp0 == kLdlWarps, "vla: the prep warps are the ones beside the LDLt");
      if (prep_warp) {
        if (c + 1 < nchunks) {
          cp_async_wait_all();  // chunk c + 1's raw tokens (copied by these two warps)
          named_sync(L::kBarP, kPrepThreads);
          prep(c + 1, b ^ 1, phase_next, Prep::next);
          named_sync(L::kBarP, kPrepThreads);  // the stage has been read
          if (c + 2 < nchunks) stage_by_prep(c + 2);
          cp_async_commit();
        }
        x_rows(C, C, kLdlWarps, NW - kLdlWarps);  // X's K̂ rows (P2a), read first by P6
      }
      VLA_SYNC_A();
      VLA_CHUNKED_PHASE(3);  // the whole of P3–P4 (prof_[10]: warp 0's panels within it)
      VLA_CHUNKED_PHASE(4);

      // P5: P = tril(K̂ Zᵀ) D⁻¹; A ← A − Zᵀ D⁻¹ Z + ε r′ I on the lower tiles, mirrored.
      product<kSplitA, DK>(Operand{Kh, LK, 1}, Operand{Zm, 1, LK}, C, C, warp, NW, lane,
                           [&](int r, int col, float v) { Pm[r * LC + col] = col <= r ? v * Di[col] : 0.f; });
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
            split_tf32<kSplitA>(af, ah, al);
#pragma unroll
            for (int j = 0; j < 2; ++j) {
              const int nn = n0 + 8 * j + g;
              const float bf[2] = {Zm[(k0 + t) * LK + nn] * s0, Zm[(k0 + t + 4) * LK + nn] * s1};
              std::uint32_t bh[2], bl[2];
              split_tf32<kSplitA>(bf, bh, bl);
              mma_tf32_split<kSplitA>(acc[j], ah, al, bh, bl);
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
      VLA_SYNC_A();
      VLA_CHUNKED_PHASE(5);

      // P6: Alpha = X_K − P Z, into the ring.
      product<kSplitA, C>(Operand{Pm, LC, 1}, Operand{Zm, LK, 1}, C, DK, warp, NW, lane,
                          [&](int r, int col, float v) { Ah[r * LK + col] = X[(C + r) * LK + col] - v; });
      VLA_SYNC_A();
      VLA_CHUNKED_PHASE(6);
      // P7: α̂ in the slot (alpha_hat_rows). Measured: P7 in the S warps after the hand-over made
      // the S chain the longer one and the kernel 6–12 % slower (include/vla/cuda/README.md).
      alpha_hat_rows<C, NW, DK, LK>(Ah, f + L::oKZ + b * C, warp, lane);

      // The hand-over (chunk_handover: barrier kBarH of the whole CTA, both roles). The S warps
      // reach it once they are done with chunk c − 1, so the slot the A warps fill next (chunk
      // c + 1's) was last read two hand-overs ago: two slots need no "empty" barrier.
      chunk_handover<L>();
      VLA_CHUNKED_PHASE(7);
      steps += n;
      phase = phase_next;
    }
    cp_async_wait_all();
    VLA_SYNC_A();
#undef VLA_SYNC_A
    if (p.A1)
      for (int i = rt; i < DK * DK; i += NTR) p.A1[pair * DK * DK + i] = As[(i / DK) * LK + i % DK];
  } else {
    // =============================== the S warps ===============================
    float *const Ss = f + L::oS, *const zs = f + L::oz, *const Kh = f + L::oKQ, *const Qs = Kh + C * LK;
    float *const Vs = f + L::oV, *const KSQ = f + L::oKSQ, *const E = f + L::oE, *const Zp = f + L::oZp;
    float *const Lk = f + L::oLk, *const QA = f + L::oQA, *const ZQ = f + L::oZQ, *const Flag = f + L::oFlag;
    In* const st = reinterpret_cast<In*>(smem + L::stageS_offset);
    auto stage = [&](std::int64_t c) {
      stage_rows<In, C, NTR>(st, H, h, span.first + c * C, ntok(c), rt, p.k, DK, p.q, DK, p.v, DV);
    };
    if (len > 0) stage(0);
    cp_async_commit();
    for (int i = rt; i < DV * DK; i += NTR) Ss[(i / DK) * LK + i % DK] = has_init ? p.S0[pair * DV * DK + i] : 0.f;
    for (int i = rt; i < DK; i += NTR) zs[i] = has_init ? p.z0[pair * DK + i] : 0.f;
#define VLA_SYNC_S() named_sync(L::kBarS, NTR)
    for (std::int64_t c = 0; c < nchunks; ++c) {
      const int n = ntok(c), slot = static_cast<int>(c % L::kRing);
      const std::int64_t tok = span.first + c * C;
      const float* const Ah = ring + slot * C * LK;
      cp_async_wait_all();
      VLA_SYNC_S();
      VLA_CHUNKED_SPHASE(0);

      // P1s: K̂ (as the A warps form it), Q, V; z prefix sums.
      const In* const sk = st;
      const In* const sq = st + C * DK;
      const In* const sv = st + 2 * C * DK;
      if (VLA_CUDA_CHUNKED_KHAT_FROM_A && c > 0) {
        // The A warps' K̂ rows of chunk c (their P1a, buffer c mod 2), copied: they were written
        // before the A warps' hand-over of chunk c − 1, which this thread has passed, and are
        // overwritten (P1a of chunk c + 2) only after the hand-over of chunk c, which it has not.
        const float* const KhA = f + L::oUK + (c & 1) * 2 * C * LK + C * LK;
        for (int i = rt; i < C * DK / 4; i += NTR) {
          const int row = i / (DK / 4), col = 4 * (i % (DK / 4));
          st4(Kh + row * LK + col, ld4(KhA + row * LK + col));
        }
      } else if (warp == NW - 1 && lane < C) {  // a row per lane of one warp; the A warps' code, so K̂'s bits agree
        unit_row_thread<In, DK>(sk + lane * DK, lane < n, 1.f, Kh + lane * LK);
      }
      for (int i = rt; i < C * DK; i += NTR) {
        const int row = i / DK, col = i % DK;
        Qs[row * LK + col] = row < n ? to_float(sq[i]) : 0.f;
      }
      for (int i = rt; i < C * DV; i += NTR) {
        const int row = i / DV, col = i % DV;
        Vs[row * LV + col] = row < n ? to_float(sv[i]) : 0.f;
      }
      if (rt <= C) Flag[rt] = 0.f;
      for (int col = rt; col < DK; col += NTR) {  // z_t = z_c + Σ_{s≤t} k_s, sequential like the reference
        float run = zs[col];
#pragma unroll
        for (int row = 0; row < C; ++row) {
          if (row < n) run += to_float(sk[row * DK + col]);
          Zp[row * LK + col] = run;
        }
        zs[col] = run;
      }
      VLA_SYNC_S();
      if (c + 1 < nchunks) stage(c + 1);
      cp_async_commit();

      // P2s: KSQ = [K̂; Q] Sᵀ; zᵀq per row.
      product<kSplitS, DK>(Operand{Kh, LK, 1}, Operand{Ss, 1, LK}, 2 * C, DV, warp, NW, lane,
                           [&](int r, int col, float v) { KSQ[r * LV + col] = v; });
      for (int row = warp; row < C; row += NW) {
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < DK / 32; ++i) s += Qs[row * LK + lane + 32 * i] * Zp[row * LK + lane + 32 * i];
        s = group_sum<32>(s);
        if (lane == 0) ZQ[row] = s;
      }
      VLA_CHUNKED_SPHASE(1);
      chunk_handover<L>();  // α̂ of chunk c is in the ring (and every S warp is past P2s)
      VLA_CHUNKED_SPHASE(2);

      // P8: L_k = tril₋(K̂ Α̂ᵀ), QA = tril(Q Α̂ᵀ), in one product (K̂ and Q are consecutive rows).
      product<kSplitS, DK>(Operand{Kh, LK, 1}, Operand{Ah, 1, LK}, 2 * C, C, warp, NW, lane, [&](int r, int col, float v) {
        if (r < C)
          Lk[r * LC + col] = col < r ? v : 0.f;
        else
          QA[(r - C) * LC + col] = col <= r - C ? v : 0.f;
      });
      VLA_SYNC_S();
      VLA_CHUNKED_SPHASE(4);

      // P9: (I + L_k) E = V − K̂ Sᵀ, G lanes per column (4 for dv ≤ 64), in blocks of 8 rows.
      {
        constexpr int G = 4 * DV <= NTR ? 4 : 2 * DV <= NTR ? 2 : 1, kCols = NTR / G;
        static_assert(DV % kCols == 0 || DV < kCols, "vla: whole warps per column group");
        for (int col = rt / G; col < DV; col += kCols)
#pragma unroll 1
          for (int r0 = 0; r0 < C; r0 += 8) {
            lower_solve_block<G, LC, LV>(
                Lk, r0, [&](int s) { return Vs[s * LV + col] - KSQ[s * LV + col]; }, E, col, rt % G);
            __syncwarp();
          }
      }
      VLA_SYNC_S();
      VLA_CHUNKED_SPHASE(5);

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
      VLA_SYNC_S();
      VLA_CHUNKED_SPHASE(6);

      // P11 (rare): rows whose S q or zᵀq overflowed (huge finite q), by rules::rescaled_output from
      // q̃ = q/max|q|: S_t q̃ = S_end q̃ − Σ_{s>t} e_s (α̂_sᵀ q̃), z_tᵀ q̃ from the prefix sums.
      if (Flag[C] != 0.f) {
        for (int row = warp; row < n; row += NW) {
          if (Flag[row] == 0.f) continue;
          float m = 0.f;
          for (int i = lane; i < DK; i += 32) m = fmaxf(m, fabsf(Qs[row * LK + i]));
          m = group_max<32>(m);
          float acc = 0.f;
          for (int i = lane; i < DK; i += 32) acc += Zp[row * LK + i] * (Qs[row * LK + i] / m);
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
        VLA_SYNC_S();
      }
      VLA_CHUNKED_SPHASE(7);
      steps += n;
    }
    cp_async_wait_all();
    VLA_SYNC_S();
#undef VLA_SYNC_S
    if (p.S1) {
      for (int i = rt; i < DV * DK; i += NTR) p.S1[pair * DV * DK + i] = Ss[(i / DK) * LK + i % DK];
      for (int i = rt; i < DK; i += NTR) p.z1[pair * DK + i] = zs[i];
      if (rt == 0) p.steps1[pair] = steps;
    }
  }
#if VLA_CUDA_CHUNKED_PROFILE
  if (tid == NTR && blockIdx.x == 0 && nchunks > 0) {
    const long long n = nchunks;
    printf("chunked profile (CTA 0, S warps), cycles per chunk: top wait %lld, K/Q/V+z+[K;Q]S^T %lld, "
           "hand-over wait %lld, Lk+QA %lld, E solve %lld, O+S update %lld, huge-q %lld\n",
           prof_s_[0] / n, prof_s_[1] / n, prof_s_[2] / n, prof_s_[4] / n, prof_s_[5] / n,
           prof_s_[6] / n, prof_s_[7] / n);
  }
  if (tid == 0 && blockIdx.x == 0 && nchunks > 0) {
    long long tot = 0;
    for (int i = 0; i < 9; ++i) tot += prof_[i];
    const long long n = nchunks;
    printf("chunked profile (CTA 0, A warps, %lld chunks), cycles per chunk: top wait %lld, W=UA %lld, G %lld, "
           "blocked LDLt+Z %lld (panels %lld), P+A update %lld, Alpha %lld, alpha-hat+hand-over %lld | total %lld\n",
           n, prof_[0] / n, prof_[2] / n, prof_[8] / n, prof_[3] / n, prof_[10] / n, prof_[5] / n, prof_[6] / n, prof_[7] / n, tot / n);
  }
#endif
}

}  // namespace detail
}  // namespace cuda
}  // namespace vla
