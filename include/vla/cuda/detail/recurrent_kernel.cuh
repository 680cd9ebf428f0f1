// vla/cuda/detail/recurrent_kernel.cuh — the fused recurrent kernels: one CTA per (sequence, head)
// for the forward, a persistent pipelined CTA per SM slot for the decode step; the whole docs/maths.md §2 step
// fused, the state (A, S, z, t) on chip for the whole sequence.
//
// The three recurrences (VLA, linear attention, DeltaNet) are policies of these templates; the
// derivation and the measurements behind the layout are in vla/cuda/README.md. In short:
//   * Two warp roles. "A warps" run the A-scan of VLA: A (dk×dk) in registers, 8 rows per warp,
//     4 lanes per row; per token they produce the unit write direction α̂ = A_new k̂ / ‖·‖ and the
//     scalar α̂ᵀq. "S warps" run the S-scan: S (dv×dk) in registers; per token e = v − S k̂,
//     S ← S + e α̂ᵀ, o = (S q + e α̂ᵀq) / max(zᵀq, ε). The A-scan never reads S, so the two scans run
//     concurrently, a chunk apart: the A warps scan chunk c while the S warps scan chunk c−1 and
//     then prepare chunk c+1. Linear attention and DeltaNet have S warps only.
//   * An A step has one barrier (among the A warps only): w = A û and y = A k̂ in one pass over the
//     registers, then every row group reduces δ = max(1 + ûᵀw, ε) and sᵀk̂ itself (s = w/√δ), and
//     A ← A − s sᵀ (+ r I) with s_i s_j == s_j s_i, so A stays exactly symmetric;
//     α = A_new k̂ = y − s (sᵀk̂) + r k̂. The norm of α is finished one token later, off the chain.
//   * An S step has no barrier at all. Tokens are staged through shared memory in chunks: cp.async
//     brings raw chunk c+2 while chunk c+1 is prepared and chunks c, c−1 are scanned. The
//     input-only work (k̂, û, the refresh flags, z and max(zᵀq, ε)) is done per chunk, in parallel.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "vla/backend/backend.hpp"
#include "vla/detail/rules.hpp"
#include "vla/cuda/detail/device_util.cuh"

// Tuning knobs (compile time; the defaults are what bench/gpu/RESULTS.md measured best, run 4:
// 512 / 2 against 1024 / 1 gave 1.08× on the VLA forward and 1.3–1.6× on the decode step):
//   VLA_CUDA_VLA_S_BUDGET       rows × dk budget of one S warp for VLA at dk ≤ 64 (rows per S warp =
//                               budget / dk, at most 32): 512 → 8 S warps at dk = dv = 64.
//   VLA_CUDA_DECODE_MIN_BLOCKS  CTAs per SM the decode kernel is compiled for (__launch_bounds__),
//                               applied to CTAs of at most 512 threads (larger ones get 1).
#ifndef VLA_CUDA_VLA_S_BUDGET
#define VLA_CUDA_VLA_S_BUDGET 512
#endif
#ifndef VLA_CUDA_DECODE_MIN_BLOCKS
#define VLA_CUDA_DECODE_MIN_BLOCKS 2
#endif
//   VLA_CUDA_ALPHA_RING         buffers of α (and its partial sums) between the A and the S warps of
//                               the VLA forward (default 2: a buffer is rewritten two chunks after
//                               it was written, one CTA barrier after its last read — enough, see
//                               vla/cuda/README.md, "racecheck"). 3 was tried against racecheck's
//                               report at dk = 128 and does not remove it (run 6).
#ifndef VLA_CUDA_ALPHA_RING
#define VLA_CUDA_ALPHA_RING 2
#endif

namespace vla {
namespace cuda {
namespace detail {

/// Everything a launch needs: plain pointers and extents (device memory), constants in float.
template <class In>
struct RecurrentParams {
  std::int64_t heads = 0;
  std::int64_t seq_len = 0;                    ///< fixed-length T (cu_seqlens == nullptr)
  const std::int64_t* cu_seqlens = nullptr;    ///< device, N+1 offsets, or null
  const In* q = nullptr;
  const In* k = nullptr;
  const In* v = nullptr;
  const In* u = nullptr;
  const In* beta = nullptr;
  In* o = nullptr;
  const float* A0 = nullptr;  ///< initial state; null: the fresh state
  const float* S0 = nullptr;
  const float* z0 = nullptr;
  const std::int64_t* steps0 = nullptr;
  float* A1 = nullptr;  ///< final state; null: not written (may alias the initial state)
  float* S1 = nullptr;
  float* z1 = nullptr;
  std::int64_t* steps1 = nullptr;
  const std::int32_t* state_index = nullptr;  ///< decode: sequence n uses state slot state_index[n]
  std::int64_t pool_size = 0;                 ///< slots in the pool (state_index only)
  std::int64_t pairs = 0;                     ///< decode: sequences × heads
  float inv_lambda0 = 10.f, stab_eps = 1e-4f, refresh_eps = 1e-3f, denom_eps = 1e-4f, inv_sqrt_dk = 0.125f;
  int refresh_period = 20;
  int normalize = 1;
  int chunk = 32;  ///< tokens per shared-memory chunk (forward)
  /// Checkpoints for the backward (vla/cuda/backward.cuh; null: none): the state at tokens 0, L, 2L,
  /// … < len of every pair, L = ckpt_every (a multiple of chunk), checkpoint c of pair p at
  /// [p·ckpt_stride + c] of ckA (dk²), ckS (dv·dk), ckz (dk). Read only by the CKPT instance of
  /// recurrent_kernel, which also skips the output when o is null; the plain forward ignores them.
  float* ckA = nullptr;
  float* ckS = nullptr;
  float* ckz = nullptr;
  std::int64_t ckpt_stride = 0;
  int ckpt_every = 0;
};

/// The thread layout for head dims (DK, DV) and op. NA A warps own 8 rows of A each (4 lanes per
/// row, CA columns per lane as GA float4 groups); NS S warps own RS rows of S each (LS lanes per
/// row, CS columns per lane as GS float4 groups).
template <int DK, int DV, bool HasA>
struct Geometry {
  static constexpr int NA = HasA ? DK / 8 : 0;
  static constexpr int RA = 8, LA = 4, CA = DK / LA, GA = CA / 4;
  static constexpr int S_budget = HasA ? (DK <= 64 ? VLA_CUDA_VLA_S_BUDGET : 1024) : 512;
  static constexpr int RS_want = S_budget / DK < 32 ? S_budget / DK : 32;
  static constexpr int RS_cap = HasA ? DV : (DV / 4 < 32 ? DV / 4 : 32);
  static constexpr int RS = RS_want < RS_cap ? RS_want : RS_cap;
  static constexpr int NS = DV / RS;
  static constexpr int LS = 32 / RS, CS = DK / LS, GS = CS / 4;
  static constexpr int NW = NA + NS, NT = 32 * NW;
  static constexpr int NST = 32 * NS;  // S threads
  static_assert(DK % 32 == 0 && DV % 32 == 0, "vla: head dims must be multiples of 32");
  static_assert(RS >= 1 && 32 % RS == 0 && DV % RS == 0, "vla: S rows per warp must divide 32 and dv");
  static_assert(CS % 4 == 0 && GS >= 1 && GA >= 1, "vla: columns per lane must be float4 groups");
  static_assert(NST >= DK, "vla: the S warps hold z, one column per thread");
  static_assert(NT <= 1024, "vla: too many threads per CTA");
};

template <class Op, int DK, int DV>
using GeometryOf = Geometry<DK, DV, Op::uses_A>;

/// Shared memory of the forward kernel, for a chunk of C tokens. Offsets in bytes, 16-byte aligned.
///   raw tokens (In, one buffer):            q[C][DK] k[C][DK] (u[C][DK]) v[C][DV]
///   prepared (float, two buffers):          q, k̂ (or k), (û), v, then den, beta, kq, refresh flag, zs
///                                           (zs: zᵀq, or zᵀq̃ where zᵀq is not finite; see prepare_den)
///   α (float, two buffers, VLA):            [C][DK] and per A warp (Σα², Σαq, max|α|) [C][NA][4]
///   outputs (float, two buffers):           [C][DV];  scratch zⱼqⱼ [C][DK];  w/y [2][2][DK] (VLA)
template <class Op, class In, int DK, int DV>
struct SmemLayout {
  static constexpr int NKQ = Op::uses_u ? 3 : 2;
  int C;
  __host__ __device__ explicit SmemLayout(int c) : C(c) {}
  __host__ __device__ static constexpr std::size_t r16(std::size_t b) { return (b + 15) / 16 * 16; }
  __host__ __device__ std::size_t c4() const { return (std::size_t(C) + 3) / 4 * 4; }
  __host__ __device__ std::size_t raw_bytes() const { return r16(std::size_t(C) * (NKQ * DK + DV) * sizeof(In)); }
  // one prepared buffer, in floats
  __host__ __device__ std::size_t prep_floats() const { return std::size_t(C) * (NKQ * DK + DV) + 5 * c4(); }
  __host__ __device__ std::size_t p_qf(int b) const { return b * prep_floats(); }
  __host__ __device__ std::size_t p_kh(int b) const { return p_qf(b) + std::size_t(C) * DK; }
  __host__ __device__ std::size_t p_uh(int b) const { return p_kh(b) + std::size_t(C) * DK; }
  __host__ __device__ std::size_t p_vf(int b) const { return p_kh(b) + std::size_t(C) * DK * (NKQ - 1); }
  __host__ __device__ std::size_t p_den(int b) const { return p_vf(b) + std::size_t(C) * DV; }
  __host__ __device__ std::size_t p_beta(int b) const { return p_den(b) + c4(); }
  __host__ __device__ std::size_t p_kq(int b) const { return p_beta(b) + c4(); }
  __host__ __device__ std::size_t p_rf(int b) const { return p_kq(b) + c4(); }
  __host__ __device__ std::size_t p_zs(int b) const { return p_rf(b) + c4(); }
  // further float regions, after the two prepared buffers
  static constexpr int NA = Op::uses_A ? DK / 8 : 0;  // A warps (Geometry::NA)
  __host__ __device__ std::size_t al_floats() const { return std::size_t(C) * DK + std::size_t(C) * NA * 4; }
  __host__ __device__ std::size_t f_al(int b) const { return 2 * prep_floats() + b * al_floats(); }
  __host__ __device__ std::size_t f_part(int b) const { return f_al(b) + std::size_t(C) * DK; }
  static constexpr int NAL = VLA_CUDA_ALPHA_RING;  // α buffers (a ring)
  __host__ __device__ std::size_t f_o(int b) const {
    return 2 * prep_floats() + (Op::uses_A ? NAL * al_floats() : 0) + b * std::size_t(C) * DV;
  }
  __host__ __device__ std::size_t f_p() const { return f_o(2); }
  __host__ __device__ std::size_t f_w() const { return f_p() + std::size_t(C) * DK; }
  __host__ __device__ std::size_t floats() const { return f_w() + (Op::uses_A ? 4 * DK : 0); }
  __host__ __device__ std::size_t bytes() const { return raw_bytes() + 4 * floats(); }
};

/// Shared memory of the decode kernel: NSTAGE stages of one (sequence, head)'s state and token
/// (cp.async targets), then the forward layout for one token.
template <class Op, class In, int DK, int DV>
struct DecodeLayout {
  static constexpr int NKQ = Op::uses_u ? 3 : 2;
  static constexpr std::size_t state_floats = (Op::uses_A ? DK * DK : 0) + DV * DK + DK + 4;  // A, S, z, steps
  static constexpr std::size_t stage_bytes =
      SmemLayout<Op, In, DK, DV>::r16(4 * state_floats + (NKQ * DK + DV) * sizeof(In) + 16);
  static constexpr int NSTAGE = stage_bytes <= 48 * 1024 ? 2 : 1;
  __host__ __device__ static std::size_t stage(int s) { return s * stage_bytes; }
  __host__ __device__ static std::size_t off_A() { return 0; }
  __host__ __device__ static std::size_t off_S() { return 4 * (Op::uses_A ? DK * DK : 0); }
  __host__ __device__ static std::size_t off_z() { return off_S() + 4 * DV * DK; }
  __host__ __device__ static std::size_t off_steps() { return off_z() + 4 * DK; }
  __host__ __device__ static std::size_t off_tok() { return off_steps() + 16; }
  __host__ __device__ static std::size_t off_beta() { return off_tok() + (NKQ * DK + DV) * sizeof(In); }
  __host__ __device__ static std::size_t base() { return NSTAGE * stage_bytes; }
  __host__ __device__ static std::size_t bytes() { return base() + SmemLayout<Op, In, DK, DV>(1).bytes(); }
};

/// Scale factor f with x̂ = f·x for a vector spread over a warp (N entries per lane), by the shared
/// rules (vla/detail/rules.hpp): 0 when x counts as zero.
template <int N>
__device__ __forceinline__ float warp_unit_factor(const float (&x)[N], float extra) {
  float m = 0.f;
#pragma unroll
  for (int i = 0; i < N; ++i) m = fmaxf(m, fabsf(x[i]));
  m = group_max<32>(m);
  const float im = rules::inverse_max<float>(m);
  if (im == 0.f) return 0.f;
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const float y = x[i] * im;
    s += y * y;
  }
  s = group_sum<32>(s);
  return rules::normalize_factor<float>(im, s, extra);
}

/// Converts EPV = 16/sizeof(In) floats and stores them as 16 bytes.
template <class In>
__device__ __forceinline__ void store16(In* dst, const float* src) {
  constexpr int EPV = 16 / sizeof(In);
  union {
    uint4 u;
    In e[EPV];
  } pack;
#pragma unroll
  for (int i = 0; i < EPV; ++i) pack.e[i] = from_float<In>(src[i]);
  *reinterpret_cast<uint4*>(dst) = pack.u;
}

/// Named barrier `id` of `threads` threads, all reaching it at this one instruction (bar.sync is
/// barrier.sync.aligned: the PTX ISA asks that every participating thread execute the same one).
__device__ __forceinline__ void named_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
/// The same barrier for threads that reach it at different instructions — two roles' branches
/// (warp specialisation): barrier.sync without .aligned, which the PTX ISA defines for that.
__device__ __forceinline__ void named_sync_divergent(int id, int threads) {
  asm volatile("barrier.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ float dot4(float4 a, float4 b, float acc) {
  acc = fmaf(a.x, b.x, acc);
  acc = fmaf(a.y, b.y, acc);
  acc = fmaf(a.z, b.z, acc);
  return fmaf(a.w, b.w, acc);
}

/// The recurrence of one (sequence, head), shared by the forward and the decode kernel.
template <class Op, class In, int DK, int DV>
struct Recurrence {
  using G = GeometryOf<Op, DK, DV>;
  static constexpr bool kVla = Op::uses_A;
  static constexpr bool kDelta = Op::uses_beta;
  static constexpr bool kUnitKey = kVla || kDelta;  // VLA and DeltaNet write along k̂ = k/‖k‖
  static constexpr bool kZ = Op::uses_z;
  static constexpr int NKQ = Op::uses_u ? 3 : 2;
  static constexpr int KPL = DK / 32, VPL = DV / 32;
  static constexpr int BAR_A = 1, BAR_S = 2;

  // Views of one prepared buffer (C tokens).
  struct Prep {
    float *qf, *kh, *uh, *vf, *den, *beta, *kq, *rf, *zs;
  };
  struct Raw {
    const In *q, *k, *u, *v;  // [C][D] each, token-major
  };

  // ---- identity of this thread
  int tid, warp, lane;
  bool is_a;
  // A role
  int rowA, cA;
  // S role
  int st, rowS, cS;

  // ---- state in registers
  float4 a[kVla ? G::GA : 1];
  float4 s[G::GS];
  float zj;  // z[st] for S threads st < DK
  int parity;
  // the output rule (docs/maths.md §2.6), read by s_scan
  int normalize = 1;
  float denom_eps = 1e-4f;

  __device__ Recurrence() {
    tid = threadIdx.x;
    warp = tid / 32;
    lane = tid % 32;
    is_a = warp < G::NA;
    rowA = warp * G::RA + lane / G::LA;
    cA = lane % G::LA;
    st = tid - 32 * G::NA;
    rowS = (warp - G::NA) * G::RS + lane / G::LS;
    cS = lane % G::LS;
    zj = 0.f;
    parity = 0;
  }
  __device__ static int colA(int m, int c) { return 4 * (c + G::LA * m); }
  __device__ static int colS(int m, int c) { return 4 * (c + G::LS * m); }

  /// Loads (or makes fresh) the state tile of this thread. A0/S0/z0 point at this pair's state.
  __device__ void load_state(const float* A0, const float* S0, const float* z0, float inv_lambda0) {
    if (is_a) {
      if (kVla) {
#pragma unroll
        for (int m = 0; m < G::GA; ++m) {
          const int col = colA(m, cA);
          if (A0) {
            a[m] = ld4(A0 + rowA * DK + col);
          } else {
            a[m].x = col + 0 == rowA ? inv_lambda0 : 0.f;
            a[m].y = col + 1 == rowA ? inv_lambda0 : 0.f;
            a[m].z = col + 2 == rowA ? inv_lambda0 : 0.f;
            a[m].w = col + 3 == rowA ? inv_lambda0 : 0.f;
          }
        }
      }
    } else {
#pragma unroll
      for (int m = 0; m < G::GS; ++m)
        s[m] = S0 ? ld4(S0 + rowS * DK + colS(m, cS)) : make_float4(0.f, 0.f, 0.f, 0.f);
      if (kZ && st < DK) zj = z0 ? z0[st] : 0.f;
    }
  }
  __device__ void store_state(float* A1, float* S1, float* z1) const {
    if (is_a) {
      if (kVla) {
#pragma unroll
        for (int m = 0; m < G::GA; ++m) st4(A1 + rowA * DK + colA(m, cA), a[m]);
      }
    } else {
#pragma unroll
      for (int m = 0; m < G::GS; ++m) st4(S1 + rowS * DK + colS(m, cS), s[m]);
      if (kZ && st < DK) z1[st] = zj;
    }
  }

  /// Input-only work for ntok tokens, by the S warps (st ∈ [0, NST)): k̂ (or k), û, q, v, β, kᵀq,
  /// refresh flags, and the running key sum z after each token in `zb` [ntok][DK] for the
  /// normaliser (finished by prepare_den). `t_first` is the step count before the first token.
  __device__ void prepare(const Raw& r, const Prep& p, float* zb, const In* beta_g, std::int64_t beta_stride,
                          int ntok, std::int64_t t_first, const RecurrentParams<In>& prm) {
    const int sw = warp - G::NA;
    for (int tau = sw; tau < ntok; tau += G::NS) {
      float kv[KPL];
#pragma unroll
      for (int i = 0; i < KPL; ++i) kv[i] = to_float(r.k[tau * DK + lane + 32 * i]);
      const float kf = kUnitKey ? warp_unit_factor(kv, 1.f) : 1.f;
      float kq = 0.f;
#pragma unroll
      for (int i = 0; i < KPL; ++i) {
        const float qv = to_float(r.q[tau * DK + lane + 32 * i]);
        const float kh = kUnitKey ? kv[i] * kf : kv[i];
        p.qf[tau * DK + lane + 32 * i] = qv;
        p.kh[tau * DK + lane + 32 * i] = kh;
        kq = fmaf(kh, qv, kq);
      }
      if (!kVla) {
        kq = group_sum<32>(kq);
        if (lane == 0) p.kq[tau] = kq;
      }
      if (kVla) {
        float uv[KPL];
#pragma unroll
        for (int i = 0; i < KPL; ++i) uv[i] = to_float(r.u[tau * DK + lane + 32 * i]);
        const float uf = warp_unit_factor(uv, prm.inv_sqrt_dk);
#pragma unroll
        for (int i = 0; i < KPL; ++i) p.uh[tau * DK + lane + 32 * i] = uv[i] * uf;
        if (lane == 0) p.rf[tau] = rules::refresh_due(t_first + tau, prm.refresh_period) ? prm.refresh_eps : 0.f;
      }
#pragma unroll
      for (int i = 0; i < VPL; ++i) p.vf[tau * DV + lane + 32 * i] = to_float(r.v[tau * DV + lane + 32 * i]);
      if (kDelta && lane == 0) p.beta[tau] = to_float(beta_g[tau * beta_stride]);
    }
    // The running key sum z, sequential per column as the reference.
    if (kZ && st < DK) {
      for (int tau = 0; tau < ntok; ++tau) {
        zj += to_float(r.k[tau * DK + st]);
        zb[tau * DK + st] = zj;
      }
    }
  }
  /// max(zᵀq, ε) per token (or 1 when the normaliser is off), after `prepare` and a barrier; and zs,
  /// for the S-scan's rescaled output (docs/maths.md §2.6 for huge q, rules::rescaled_output): zᵀq when it is
  /// finite; otherwise den is NaN (a mark) and zs = zᵀq̃ with q̃ = q / max|q|, as the CPU computes it.
  __device__ void prepare_den(const Prep& p, const float* zb, int ntok, int normalize, float denom_eps) {
    if (!kZ) return;
    const int sw = warp - G::NA;
    for (int tau = sw; tau < ntok; tau += G::NS) {
      float acc = 0.f;
#pragma unroll
      for (int i = 0; i < KPL; ++i) acc += __fmul_rn(zb[tau * DK + lane + 32 * i], p.qf[tau * DK + lane + 32 * i]);
      acc = group_sum<32>(acc);
      float den = 1.f, zs = acc;
      if (normalize) {
        if (rules::is_finite(acc)) {
          den = rules::output_denominator<float>(acc, denom_eps);
        } else {  // rare: zᵀq overflowed (huge q); zᵀq̃ instead, den marked
          zs = scaled_dot_warp<KPL>(p.qf + tau * DK, zb + tau * DK, lane);
          den = __int_as_float(0x7fffffff);
        }
      }
      if (lane == 0) p.den[tau] = den, p.zs[tau] = zs;
    }
  }

  /// docs/maths.md §2.6's output of this thread's S row when S q or zᵀq is not finite (huge q): from
  /// q̃ = q / max|q| and the updated S (registers), by rules::rescaled_output. Run by the LS lanes
  /// of the row only (the condition is the same in all of them).
  __device__ float rescaled_row(const float* qf, float dn, float zs) const {
    const unsigned gm = group_mask<G::LS>(lane);
    float m = 0.f;
#pragma unroll
    for (int mm = 0; mm < G::GS; ++mm) m = fmaxf(m, max_abs4(ld4(qf + colS(mm, cS))));
    m = group_max_masked<G::LS>(m, gm);
    float sq = 0.f;
#pragma unroll
    for (int mm = 0; mm < G::GS; ++mm) {
      const float4 Q = ld4(qf + colS(mm, cS));
      sq = fmaf(s[mm].x, Q.x / m, sq);
      sq = fmaf(s[mm].y, Q.y / m, sq);
      sq = fmaf(s[mm].z, Q.z / m, sq);
      sq = fmaf(s[mm].w, Q.w / m, sq);
    }
    sq = group_sum_masked<G::LS>(sq, gm);
    const float zqs = dn == dn ? zs / m : zs;  // zᵀq̃: zᵀq / m where zᵀq was finite
    return rules::rescaled_output<float>(sq, zqs, m, denom_eps);
  }

  /// The A-scan of ntok prepared tokens (A warps). Per token it writes α = A_new k̂ (al[τ][DK],
  /// not normalised) and, per A warp, the partial sums (Σα², Σαq, max|α|) over that warp's 8
  /// columns (part[τ][warp]); the S warps finish ‖α‖ (vla/cuda/README.md). Only A, δ and s are on
  /// the A chain; α is computed once, one column per lane of the first 8 lanes of each A warp.
  /// wy: [2][2][DK] scratch for w = A û and y = A k̂, double-buffered by `parity`.
  template <bool kKeepAllowed = true>
  __device__ void a_scan(const Prep& p, float* al, float4* part, float* wy, int ntok, float stab_eps) {
    constexpr bool kKeep = kKeepAllowed && G::GA <= 4;  // keep û, k̂ and w of this thread's columns in registers
    for (int tau = 0; tau < ntok; ++tau) {
      const float* uh = p.uh + tau * DK;
      const float* kh = p.kh + tau * DK;
      // w_i = (A û)_i, y_i = (A k̂)_i: partials over this thread's columns, in two chains each
      float4 U[kKeep ? G::GA : 1], K[kKeep ? G::GA : 1];
      float pw0 = 0.f, pw1 = 0.f, py0 = 0.f, py1 = 0.f;
#pragma unroll
      for (int m = 0; m < G::GA; ++m) {
        const float4 u4 = ld4(uh + colA(m, cA)), k4 = ld4(kh + colA(m, cA));
        if (kKeep) U[m % (kKeep ? G::GA : 1)] = u4, K[m % (kKeep ? G::GA : 1)] = k4;
        if (m & 1) {
          pw1 = dot4(a[m], u4, pw1);
          py1 = dot4(a[m], k4, py1);
        } else {
          pw0 = dot4(a[m], u4, pw0);
          py0 = dot4(a[m], k4, py0);
        }
      }
      const float pw = group_sum<G::LA>(pw0 + pw1), py = group_sum<G::LA>(py0 + py1);
      float* wb = wy + parity * 2 * DK;
      float* yb = wb + DK;
      if (cA == 0) {
        wb[rowA] = pw;
        yb[rowA] = py;
      }
      named_sync(BAR_A, 32 * G::NA);  // w and y complete (double-buffered: one barrier a step)

      float4 W[kKeep ? G::GA : 1];
      float uw0 = 0.f, uw1 = 0.f, kw0 = 0.f, kw1 = 0.f;
#pragma unroll
      for (int m = 0; m < G::GA; ++m) {
        const int col = colA(m, cA);
        const float4 w4 = ld4(wb + col);
        const float4 u4 = kKeep ? U[m % (kKeep ? G::GA : 1)] : ld4(uh + col);
        const float4 k4 = kKeep ? K[m % (kKeep ? G::GA : 1)] : ld4(kh + col);
        if (kKeep) W[m % (kKeep ? G::GA : 1)] = w4;
        if (m & 1) {
          uw1 = dot4(u4, w4, uw1);
          kw1 = dot4(k4, w4, kw1);
        } else {
          uw0 = dot4(u4, w4, uw0);
          kw0 = dot4(k4, w4, kw0);
        }
      }
      const float uw = group_sum<G::LA>(uw0 + uw1), kw = group_sum<G::LA>(kw0 + kw1);
      const float delta = rules::sm_denominator<float>(1.f + uw, stab_eps);
      const float isd = rsqrtf(delta);
      const float c = kw * isd;  // sᵀk̂ with s = w/√δ
      const float r = p.rf[tau];
      const float si = wb[rowA] * isd;
      // A ← A − s sᵀ (+ r I): s_i s_j == s_j s_i keeps A exactly symmetric
#pragma unroll
      for (int m = 0; m < G::GA; ++m) {
        const float4 w4 = kKeep ? W[m % (kKeep ? G::GA : 1)] : ld4(wb + colA(m, cA));
        a[m].x = fmaf(-si, w4.x * isd, a[m].x);
        a[m].y = fmaf(-si, w4.y * isd, a[m].y);
        a[m].z = fmaf(-si, w4.z * isd, a[m].z);
        a[m].w = fmaf(-si, w4.w * isd, a[m].w);
      }
      if (r != 0.f) {  // refresh step (uniform): A ← A + r I after the rank-1 update
#pragma unroll
        for (int m = 0; m < G::GA; ++m) {
          const int col = colA(m, cA);
          if (col + 0 == rowA) a[m].x += r;
          if (col + 1 == rowA) a[m].y += r;
          if (col + 2 == rowA) a[m].z += r;
          if (col + 3 == rowA) a[m].w += r;
        }
      }
      // α_j = (A_new k̂)_j = y_j − s_j (sᵀk̂) + r k̂_j for this warp's 8 columns (off the A chain)
      {
        const int j = warp * 8 + (lane & 7);
        const float x = lane < 8 ? fmaf(r, kh[j], fmaf(-(wb[j] * isd), c, yb[j])) : 0.f;
        float ss = x * x, aq = x * p.qf[tau * DK + j], mx = fabsf(x);
#pragma unroll
        for (int o = 4; o > 0; o >>= 1) {
          ss += __shfl_xor_sync(0xffffffffu, ss, o);
          aq += __shfl_xor_sync(0xffffffffu, aq, o);
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        }
        if (lane < 8) al[tau * DK + j] = x;
        if (lane == 0) part[tau * G::NA + warp] = make_float4(ss, aq, mx, 0.f);
      }
      parity ^= 1;
    }
  }

  /// The S-scan of ntok prepared tokens (S warps): S ← S + e xᵀ and the outputs into o[τ][DV].
  /// x is α̂ = f α (VLA: α and the A warps' partial sums from the A-scan; f by the shared rules)
  /// or k̂ / k (the baselines).
  template <bool kHoldAllowed = true>
  __device__ void s_scan(const Prep& p, const float* al, const float4* part, float* o, int ntok) {
    constexpr bool kHold = kHoldAllowed && (G::GS <= 4 || G::NT <= 512);  // keep x in registers, else reload it
    for (int tau = 0; tau < ntok; ++tau) {
      const float* kh = p.kh + tau * DK;
      const float* qf = p.qf + tau * DK;
      const float* xs = kVla ? al + tau * DK : kh;
      float ps0 = 0.f, ps1 = 0.f, pq0 = 0.f, pq1 = 0.f;
      float4 X[kHold ? G::GS : 1];
#pragma unroll
      for (int m = 0; m < G::GS; ++m) {
        const int col = colS(m, cS);
        const float4 K = ld4(kh + col), Q = ld4(qf + col);
        if (kHold) X[m % (kHold ? G::GS : 1)] = kVla ? ld4(xs + col) : K;
        if (m & 1) {
          ps1 = dot4(s[m], K, ps1);
          pq1 = dot4(s[m], Q, pq1);
        } else {
          ps0 = dot4(s[m], K, ps0);
          pq0 = dot4(s[m], Q, pq0);
        }
      }
      // VLA: f with α̂ = f α from Σα² and max|α| (rules::inverse_max / normalize_factor), and α̂ᵀq.
      float f = 1.f, xq = 0.f;
      if (kVla) {
        float ss = 0.f, aq = 0.f, mx = 0.f;
#pragma unroll
        for (int w = 0; w < G::NA; ++w) {
          const float4 pt = part[tau * G::NA + w];
          ss += pt.x;
          aq += pt.y;
          mx = fmaxf(mx, pt.z);
        }
        const float im = rules::inverse_max<float>(mx);
        float scaled = ss * im * im;
        if (im != 0.f && !(ss > 1e-30f && ss < 1e30f)) {  // rare: Σα² under/overflowed; rescale first
          float s2 = 0.f;
#pragma unroll
          for (int m = 0; m < G::GS; ++m) {
            const float4 x = ld4(xs + colS(m, cS));
            const float x0 = x.x * im, x1 = x.y * im, x2 = x.z * im, x3 = x.w * im;
            s2 += x0 * x0 + x1 * x1 + x2 * x2 + x3 * x3;
          }
          scaled = group_sum<G::LS>(s2);
        }
        f = rules::normalize_factor<float>(im, scaled);  // 0: α counts as zero, nothing is written
        xq = f * aq;
      } else {
        xq = p.kq[tau];
      }
      const float ps = group_sum<G::LS>(ps0 + ps1), pq = group_sum<G::LS>(pq0 + pq1);
      const float vi = p.vf[tau * DV + rowS];
      // VLA: e = v − S k̂;  DeltaNet: e = β (v − S k̂);  linear attention: e = v
      const float e = kVla ? vi - ps : (kDelta ? (vi - ps) * p.beta[tau] : vi);
      const float ef = kVla ? e * f : e;
#pragma unroll
      for (int m = 0; m < G::GS; ++m) {
        const float4 x = kHold ? X[m % (kHold ? G::GS : 1)] : ld4(xs + colS(m, cS));
        s[m].x = fmaf(ef, x.x, s[m].x);
        s[m].y = fmaf(ef, x.y, s[m].y);
        s[m].z = fmaf(ef, x.z, s[m].z);
        s[m].w = fmaf(ef, x.w, s[m].w);
      }
      const float out = fmaf(e, xq, pq);  // S_new q = S q + e (xᵀq)
      float res = out;
      if (kZ) {
        const float dn = p.den[tau];
        res = out / dn;
        // rare: S q or zᵀq not finite (huge q), decided per row (the same function; docs/maths.md §2.6)
        if (normalize && !(rules::is_finite(out) && dn == dn)) res = rescaled_row(qf, dn, p.zs[tau]);
      }
      if (cS == 0) o[tau * DV + rowS] = res;
    }
  }
};

template <class Op, class In, int DK, int DV>
__device__ __forceinline__ typename Recurrence<Op, In, DK, DV>::Prep prep_view(float* f, const SmemLayout<Op, In, DK, DV>& L,
                                                                           int b) {
  return {f + L.p_qf(b), f + L.p_kh(b), f + L.p_uh(b), f + L.p_vf(b),
          f + L.p_den(b), f + L.p_beta(b), f + L.p_kq(b), f + L.p_rf(b), f + L.p_zs(b)};
}

/// Issues cp.async for ntok raw tokens (q, k, (u), v of head h) into the raw buffer, by the
/// threads [t0, t0 + nthreads).
template <class Op, class In, int DK, int DV>
__device__ __forceinline__ void issue_tokens(In* raw, int C, const RecurrentParams<In>& p, std::int64_t first_tok,
                                             std::int64_t h, int ntok, int t, int nthreads) {
  constexpr int EPV = 16 / sizeof(In);
  constexpr int NKQ = Op::uses_u ? 3 : 2;
  constexpr int PK = DK / EPV, PV = DV / EPV, NP = NKQ * PK + PV;
  const std::int64_t H = p.heads;
  for (int idx = t; idx < ntok * NP; idx += nthreads) {
    const int tau = idx / NP, r = idx % NP;
    const std::int64_t tok = first_tok + tau;
    const In* src;
    In* dst;
    if (r < NKQ * PK) {
      const int which = r / PK, piece = r % PK;
      const In* base = which == 0 ? p.q : (which == 1 ? p.k : p.u);
      src = base + (tok * H + h) * DK + piece * EPV;
      dst = raw + which * C * DK + tau * DK + piece * EPV;
    } else {
      const int piece = r - NKQ * PK;
      src = p.v + (tok * H + h) * DV + piece * EPV;
      dst = raw + NKQ * C * DK + tau * DV + piece * EPV;
    }
    cp_async16(dst, src);
  }
}

/// Writes ntok staged outputs (float [C][DV]) to o as In, 16-byte stores, threads [t, t + n).
template <class In, int DV>
__device__ __forceinline__ void write_outputs(In* o, const float* staged, std::int64_t first_tok, std::int64_t H,
                                              std::int64_t h, int ntok, int t, int nthreads) {
  constexpr int EPV = 16 / sizeof(In);
  constexpr int PV = DV / EPV;
  for (int idx = t; idx < ntok * PV; idx += nthreads) {
    const int tau = idx / PV, piece = idx % PV;
    store16<In>(o + ((first_tok + tau) * H + h) * DV + piece * EPV, staged + tau * DV + piece * EPV);
  }
}

/// The forward: one CTA per (sequence, head), the whole sequence in one launch. CKPT: the backward's
/// instance (vla/cuda/backward.cuh), which may write checkpoints and no output (RecurrentParams::ckA …,
/// o = null); a compile-time switch so that the plain forward compiles as it did without them (the
/// hooks cost registers: at dk = 128 they raised its spills).
template <class Op, class In, int DK, int DV, bool CKPT = false>
__global__ void __launch_bounds__(GeometryOf<Op, DK, DV>::NT, 1) recurrent_kernel(const RecurrentParams<In> p) {
  using G = GeometryOf<Op, DK, DV>;
  using L = SmemLayout<Op, In, DK, DV>;
  using R = Recurrence<Op, In, DK, DV>;
  constexpr bool kVla = Op::uses_A;
  constexpr int LAG = kVla ? 1 : 0;  // the S-scan runs this many chunks behind the A-scan

  extern __shared__ __align__(16) unsigned char smem[];
  const L lay(p.chunk);
  const int C = p.chunk;
  In* const raw = reinterpret_cast<In*>(smem);
  float* const fs = reinterpret_cast<float*>(smem + lay.raw_bytes());
  const typename R::Raw rv{raw, raw + C * DK, raw + 2 * C * DK, raw + R::NKQ * C * DK};

  R rc;
  rc.normalize = p.normalize;
  rc.denom_eps = p.denom_eps;
  const std::int64_t H = p.heads;
  const std::int64_t pair = blockIdx.x;
  const std::int64_t n = pair / H, h = pair % H;
  const TokenSpan span = token_span(p.cu_seqlens, p.seq_len, n);
  const std::int64_t bos = span.first, len = span.length;
  const std::int64_t nchunks = (len + C - 1) / C;
  auto ntok_of = [&](std::int64_t c) { return static_cast<int>(len - c * C < C ? len - c * C : C); };

  // S warps: stage chunk 0 first, so the copy overlaps the state load.
  if (!rc.is_a && len > 0) issue_tokens<Op, In, DK, DV>(raw, C, p, bos, h, ntok_of(0), rc.st, G::NST);
  cp_async_commit();
  const bool has_init = p.S0 != nullptr;
  rc.load_state(has_init && kVla ? p.A0 + pair * DK * DK : nullptr, has_init ? p.S0 + pair * DV * DK : nullptr,
                has_init && Op::uses_z ? p.z0 + pair * DK : nullptr, p.inv_lambda0);
  const std::int64_t t0 = (kVla && has_init) ? p.steps0[pair] : 0;

  // Checkpoint c (the state at token c·L) of this pair, for the backward: every role stores its part.
  const bool ck_on = CKPT && p.ckS;
  const int ck_chunks = ck_on ? p.ckpt_every / C : 1;  // chunks per checkpoint (1 when off: no % 0)
  const bool write_o = !CKPT || p.o != nullptr;
  auto checkpoint = [&](std::int64_t c, bool a_part, bool s_part) {
    const std::int64_t at = pair * p.ckpt_stride + c;
    rc.store_state(a_part && kVla ? p.ckA + at * DK * DK : nullptr, s_part ? p.ckS + at * DV * DK : nullptr,
                   s_part && Op::uses_z ? p.ckz + at * DK : nullptr);
  };
  if (ck_on) checkpoint(0, true, true);

  // Prepare chunk c (S warps): raw → prepared buffer c % 2; then stage chunk c + 1.
  auto prepare_chunk = [&](std::int64_t c) {
    cp_async_wait_all();
    named_sync(R::BAR_S, G::NST);
    const auto pv = prep_view(fs, lay, static_cast<int>(c & 1));
    rc.prepare(rv, pv, fs + lay.f_p(), p.beta + (bos + c * C) * H + h, H, ntok_of(c), t0 + c * C, p);
    named_sync(R::BAR_S, G::NST);  // raw consumed
    if (c + 1 < nchunks) issue_tokens<Op, In, DK, DV>(raw, C, p, bos + (c + 1) * C, h, ntok_of(c + 1), rc.st, G::NST);
    cp_async_commit();
    rc.prepare_den(pv, fs + lay.f_p(), ntok_of(c), p.normalize, p.denom_eps);
  };
  if (!rc.is_a && nchunks > 0) prepare_chunk(0);
  __syncthreads();

  for (std::int64_t it = 0; it < nchunks + LAG; ++it) {
    if (rc.is_a) {
      if (kVla && it < nchunks) {
        const int b = static_cast<int>(it & 1);
        const int ab = static_cast<int>(it % L::NAL);  // α ring slot of chunk it
        rc.a_scan(prep_view(fs, lay, b), fs + lay.f_al(ab), reinterpret_cast<float4*>(fs + lay.f_part(ab)), fs + lay.f_w(),
                  ntok_of(it), p.stab_eps);
        if (ck_on && (it + 1) % ck_chunks == 0 && it + 1 < nchunks) checkpoint((it + 1) / ck_chunks, true, false);
      }
    } else {
      const std::int64_t cs = it - LAG;  // the chunk the S-scan takes
      if (cs >= 1 && write_o)  // outputs of chunk cs − 1, staged in the other buffer
        write_outputs<In, DV>(p.o, fs + lay.f_o(static_cast<int>((cs - 1) & 1)), bos + (cs - 1) * C, H, h,
                              ntok_of(cs - 1), rc.st, G::NST);
      if (cs >= 0) {
        const int b = static_cast<int>(cs & 1);
        const int ab = static_cast<int>(cs % L::NAL);
        rc.s_scan(prep_view(fs, lay, b), fs + lay.f_al(ab), reinterpret_cast<const float4*>(fs + lay.f_part(ab)),
                  fs + lay.f_o(b), ntok_of(cs));
        // S after chunk cs; z is a prefix sum the prepare step runs ahead of the scan, so its part of a
        // checkpoint is stored below, before chunk it + 1 is prepared (z then holds chunks ≤ it).
        if (ck_on && (cs + 1) % ck_chunks == 0 && cs + 1 < nchunks) {
          const std::int64_t at = pair * p.ckpt_stride + (cs + 1) / ck_chunks;
          rc.store_state(nullptr, p.ckS + at * DV * DK, nullptr);
        }
      }
      if (ck_on && Op::uses_z && (it + 1) % ck_chunks == 0 && it + 1 < nchunks && rc.st < DK)
        p.ckz[(pair * p.ckpt_stride + (it + 1) / ck_chunks) * DK + rc.st] = rc.zj;
      if (it + 1 < nchunks) {
        named_sync(R::BAR_S, G::NST);  // every S warp is done with the buffer being refilled
        prepare_chunk(it + 1);
      }
    }
    __syncthreads();
  }
  if (!rc.is_a && nchunks > 0 && write_o)
    write_outputs<In, DV>(p.o, fs + lay.f_o(static_cast<int>((nchunks - 1) & 1)), bos + (nchunks - 1) * C, H, h,
                          ntok_of(nchunks - 1), rc.st, G::NST);

  if (p.S1) {
    rc.store_state(kVla ? p.A1 + pair * DK * DK : nullptr, p.S1 + pair * DV * DK,
                   Op::uses_z ? p.z1 + pair * DK : nullptr);
    if (kVla && threadIdx.x == 0) p.steps1[pair] = t0 + len;
  }
}

/// CTAs per SM the decode kernel is built for: two (so one CTA's compute overlaps the other's
/// loads) where two fit, else one.
template <int Threads>
struct DecodeMinBlocks {
  static constexpr int value = Threads <= 512 ? VLA_CUDA_DECODE_MIN_BLOCKS : 1;
};

/// The decode step: persistent CTAs, each taking (sequence, head) pairs gridDim.x apart; the state
/// and token of the next pair(s) are staged by cp.async while the current one is stepped.
template <class Op, class In, int DK, int DV>
__global__ void __launch_bounds__(GeometryOf<Op, DK, DV>::NT, DecodeMinBlocks<GeometryOf<Op, DK, DV>::NT>::value)
    decode_kernel(const RecurrentParams<In> p) {
  constexpr bool kRoomy = DecodeMinBlocks<GeometryOf<Op, DK, DV>::NT>::value <= 1;  // registers to keep vectors in
  using G = GeometryOf<Op, DK, DV>;
  using L = SmemLayout<Op, In, DK, DV>;
  using D = DecodeLayout<Op, In, DK, DV>;
  using R = Recurrence<Op, In, DK, DV>;
  constexpr bool kVla = Op::uses_A;
  constexpr int NKQ = R::NKQ;
  constexpr int EPV = 16 / sizeof(In);

  extern __shared__ __align__(16) unsigned char smem[];
  const L lay(1);
  float* const fs = reinterpret_cast<float*>(smem + D::base() + lay.raw_bytes());
  const std::int64_t H = p.heads;

  R rc;
  rc.normalize = p.normalize;
  rc.denom_eps = p.denom_eps;
  In beta0{}, beta1{};
  // Slot of a pair's state, or −1 for a padding entry (skipped).
  auto slot_of = [&](std::int64_t pair) -> std::int64_t {
    if (!p.state_index) return pair;
    const std::int64_t sidx = p.state_index[pair / H];
    return (sidx < 0 || sidx >= p.pool_size) ? -1 : sidx * H + pair % H;
  };
  // The slot of the next pair to stage is loaded one stage ahead, so no stage waits on it.
  const std::int64_t stride = gridDim.x;
  std::int64_t next_slot = blockIdx.x < p.pairs ? slot_of(blockIdx.x) : -1;
  std::int64_t slot_in[2] = {-1, -1};  // the slot held by each stage (−1: nothing to step)
  // Stage pair's state and token into stage sg (all threads), one commit group.
  auto stage = [&](std::int64_t pair, int sg) {
    const std::int64_t slot = pair < p.pairs ? next_slot : -1;
    if (sg == 0) slot_in[0] = slot; else slot_in[1] = slot;
    next_slot = pair + stride < p.pairs ? slot_of(pair + stride) : -1;
    if (pair < p.pairs) {
      if (slot >= 0) {
        unsigned char* base = smem + D::stage(sg);
        if (kVla)
          for (int i = threadIdx.x; i < DK * DK / 4; i += G::NT)
            cp_async16(base + D::off_A() + 16 * i, p.A0 + slot * DK * DK + 4 * i);
        for (int i = threadIdx.x; i < DV * DK / 4; i += G::NT)
          cp_async16(base + D::off_S() + 16 * i, p.S0 + slot * DV * DK + 4 * i);
        if (Op::uses_z)
          for (int i = threadIdx.x; i < DK / 4; i += G::NT) cp_async16(base + D::off_z() + 16 * i, p.z0 + slot * DK + 4 * i);
        if (kVla && threadIdx.x == 0) cp_async8(base + D::off_steps(), p.steps0 + slot);
        const std::int64_t tok = pair / H, h = pair % H;
        constexpr int PK = DK / EPV, PV = DV / EPV, NP = NKQ * PK + PV;
        In* tb = reinterpret_cast<In*>(base + D::off_tok());
        for (int i = threadIdx.x; i < NP; i += G::NT) {
          if (i < NKQ * PK) {
            const int which = i / PK, piece = i % PK;
            const In* src = (which == 0 ? p.q : (which == 1 ? p.k : p.u)) + (tok * H + h) * DK + piece * EPV;
            cp_async16(tb + which * DK + piece * EPV, src);
          } else {
            const int piece = i - NKQ * PK;
            cp_async16(tb + NKQ * DK + piece * EPV, p.v + (tok * H + h) * DV + piece * EPV);
          }
        }
        // β (2 or 4 bytes, too small for cp.async): loaded into a register now, written to the
        // stage by the same thread when the pair is prepared.
        if (Op::uses_beta && !rc.is_a && rc.st == 0) (sg ? beta1 : beta0) = p.beta[tok * H + h];
      }
    }
    cp_async_commit();
  };

  std::int64_t pair = blockIdx.x;
  for (int sg = 0; sg < D::NSTAGE; ++sg) stage(pair + sg * stride, sg);
  for (int i = 0; pair < p.pairs; ++i, pair += stride) {
    const int sg = D::NSTAGE == 2 ? (i & 1) : 0;
    if (D::NSTAGE == 2)
      cp_async_wait_group<1>();
    else
      cp_async_wait_all();
    __syncthreads();  // stage sg landed; the previous pair is finished with the one-token buffers
    const std::int64_t slot = sg ? slot_in[1] : slot_in[0];
    if (slot >= 0) {
      const unsigned char* base = smem + D::stage(sg);
      const float* Ast = reinterpret_cast<const float*>(base + D::off_A());
      const float* Sst = reinterpret_cast<const float*>(base + D::off_S());
      const float* zst = reinterpret_cast<const float*>(base + D::off_z());
      const std::int64_t t0 = kVla ? *reinterpret_cast<const std::int64_t*>(base + D::off_steps()) : 0;
      rc.load_state(kVla ? Ast : nullptr, Sst, Op::uses_z ? zst : nullptr, p.inv_lambda0);
      const auto pv = prep_view(fs, lay, 0);
      if (!rc.is_a) {
        // The token: copy the staged raw token into the one-token raw buffer layout and prepare it.
        if (Op::uses_beta && rc.st == 0)
          *reinterpret_cast<In*>(smem + D::stage(sg) + D::off_beta()) = sg ? beta1 : beta0;
        const In* tb = reinterpret_cast<const In*>(base + D::off_tok());
        const typename R::Raw rv{tb, tb + DK, tb + 2 * DK, tb + NKQ * DK};
        rc.prepare(rv, pv, fs + lay.f_p(), reinterpret_cast<const In*>(base + D::off_beta()), 0, 1, t0, p);
        named_sync(R::BAR_S, G::NST);
        rc.prepare_den(pv, fs + lay.f_p(), 1, p.normalize, p.denom_eps);
      }
      __syncthreads();  // stage sg consumed (state in registers, token prepared)
      stage(pair + D::NSTAGE * stride, sg);
      if (rc.is_a) {
        rc.template a_scan<kRoomy>(pv, fs + lay.f_al(0), reinterpret_cast<float4*>(fs + lay.f_part(0)), fs + lay.f_w(), 1, p.stab_eps);
        rc.store_state(p.A1 + slot * DK * DK, nullptr, nullptr);
      }
      __syncthreads();  // α̂ ready
      if (!rc.is_a) {
        rc.template s_scan<kRoomy>(pv, fs + lay.f_al(0), reinterpret_cast<const float4*>(fs + lay.f_part(0)), fs + lay.f_o(0), 1);
        rc.store_state(nullptr, p.S1 + slot * DV * DK, Op::uses_z ? p.z1 + slot * DK : nullptr);
        if (kVla && rc.st == 0) p.steps1[slot] = t0 + 1;
        named_sync(R::BAR_S, G::NST);
        write_outputs<In, DV>(p.o, fs + lay.f_o(0), pair / H, H, pair % H, 1, rc.st, G::NST);
      }
    } else {
      __syncthreads();
      stage(pair + D::NSTAGE * stride, sg);
    }
  }
  cp_async_wait_all();
}

}  // namespace detail
}  // namespace cuda
}  // namespace vla
