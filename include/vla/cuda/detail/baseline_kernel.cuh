// vla/cuda/detail/baseline_kernel.cuh — the forward of the two baselines (linear attention,
// DeltaNet): one CTA per (sequence, head), every warp in one role (no A-scan to overlap with).
//
// This is the single-role kernel of run 1 (bench/gpu/RESULTS.md, "What we tried"), kept for the
// baselines when the role split came for VLA: the split only pays where an A-scan runs beside the
// S-scan, and the baselines ran 1.4–1.8× faster in this form (run 1 vs run 4). Per chunk of C
// tokens (64 for head dims ≤ 64): the input-only work (k̂ or k, kᵀq, z and max(zᵀq, ε), β) for all
// C tokens in parallel, then the C sequential steps with S (dv×dk) in registers and no barrier per
// step; cp.async brings chunk c+1 while chunk c runs. The shared scalar rules are those of
// vla/detail/rules.hpp, as in recurrent_kernel.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "vla/detail/rules.hpp"
#include "vla/cuda/detail/device_util.cuh"
#include "vla/cuda/detail/recurrent_kernel.cuh"

// VLA_CUDA_BASELINE_SINGLE_ROLE: 1 (default) runs linear attention and DeltaNet's forward in
// baseline_kernel; 0 in the role-split recurrent_kernel (S warps only), as run 4 did.
#ifndef VLA_CUDA_BASELINE_SINGLE_ROLE
#define VLA_CUDA_BASELINE_SINGLE_ROLE 1
#endif

namespace vla {
namespace cuda {
namespace detail {

/// NW warps; every warp owns RS rows of S; a row is spread over LS consecutive lanes, each holding
/// GS float4 column groups.
template <int DK, int DV>
struct BaselineGeometry {
  static constexpr int NW = (DK >= 64 && (DK == 128 || DV == 128)) ? 16 : 8;
  static constexpr int NT = NW * 32;
  static constexpr int RS = DV / NW, LS = 32 / RS, CS = DK / LS, GS = CS / 4;
  static_assert(DV % NW == 0 && RS >= 1 && RS <= 32 && 32 % RS == 0, "vla: rows per warp must divide 32");
  static_assert(CS % 4 == 0 && GS >= 1, "vla: columns per lane must be float4 groups");
  static_assert(DK % 32 == 0 && DV % 32 == 0, "vla: head dims must be multiples of 32");
};

/// Shared memory for a chunk of C tokens. Offsets in bytes; every region 16-byte aligned.
///   raw tokens (In): q[C][DK] k[C][DK] v[C][DV];  prepared (float): q, k̂ (or k), v;
///   scratch P/O [C][max(DK, DV)] (z per token, then the outputs); den, beta, kq, zs [C];
///   with z (linear attention): S at the chunk's start [DV][DK] (for the rare replay, huge q).
template <class In, int DK, int DV, bool has_z>
struct BaselineLayout {
  static constexpr int DMAX = DK > DV ? DK : DV;
  int C;
  __host__ __device__ explicit BaselineLayout(int c) : C(c) {}
  __host__ __device__ static std::size_t r16(std::size_t b) { return (b + 15) / 16 * 16; }
  __host__ __device__ int c4() const { return (C + 3) / 4 * 4; }
  __host__ __device__ std::size_t raw_bytes() const { return r16(std::size_t(C) * (2 * DK + DV) * sizeof(In)); }
  __host__ __device__ std::size_t off_qf() const { return raw_bytes(); }
  __host__ __device__ std::size_t off_kh() const { return off_qf() + 4 * std::size_t(C) * DK; }
  __host__ __device__ std::size_t off_vf() const { return off_kh() + 4 * std::size_t(C) * DK; }
  __host__ __device__ std::size_t off_po() const { return off_vf() + 4 * std::size_t(C) * DV; }
  __host__ __device__ std::size_t off_den() const { return off_po() + 4 * std::size_t(C) * DMAX; }
  __host__ __device__ std::size_t off_beta() const { return off_den() + 4 * std::size_t(c4()); }
  __host__ __device__ std::size_t off_kq() const { return off_beta() + 4 * std::size_t(c4()); }
  __host__ __device__ std::size_t off_zs() const { return off_kq() + 4 * std::size_t(c4()); }
  __host__ __device__ std::size_t off_ssave() const { return off_zs() + 4 * std::size_t(c4()); }
  __host__ __device__ std::size_t bytes() const { return off_ssave() + (has_z ? 4 * std::size_t(DV) * DK : 0); }
};

template <class Op, class In, int DK, int DV>
__global__ void __launch_bounds__(BaselineGeometry<DK, DV>::NT, (BaselineGeometry<DK, DV>::NT <= 256 ? 2 : 1))
    baseline_kernel(const RecurrentParams<In> p) {
  static_assert(!Op::uses_A, "baseline_kernel: linear attention and DeltaNet only");
  using G = BaselineGeometry<DK, DV>;
  using L = BaselineLayout<In, DK, DV, Op::uses_z>;
  constexpr int NW = G::NW, NT = G::NT;
  constexpr bool kDelta = Op::uses_beta;
  constexpr bool kUnitKey = kDelta;  // DeltaNet writes along k̂ = k/‖k‖
  constexpr bool kZ = Op::uses_z;
  constexpr int EPV = 16 / sizeof(In);
  constexpr int KPL = DK / 32, VPL = DV / 32;

  extern __shared__ __align__(16) unsigned char smem[];
  const L lay(p.chunk);
  const int C = p.chunk;
  In* const Rq = reinterpret_cast<In*>(smem);
  In* const Rk = Rq + C * DK;
  In* const Rv = Rq + 2 * C * DK;
  float* const Qf = reinterpret_cast<float*>(smem + lay.off_qf());
  float* const Kh = reinterpret_cast<float*>(smem + lay.off_kh());
  float* const Vf = reinterpret_cast<float*>(smem + lay.off_vf());
  float* const PO = reinterpret_cast<float*>(smem + lay.off_po());
  float* const Den = reinterpret_cast<float*>(smem + lay.off_den());
  float* const Beta = reinterpret_cast<float*>(smem + lay.off_beta());
  float* const KQ = reinterpret_cast<float*>(smem + lay.off_kq());
  float* const ZS = reinterpret_cast<float*>(smem + lay.off_zs());
  float* const Ssave = reinterpret_cast<float*>(smem + lay.off_ssave());

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const std::int64_t H = p.heads;
  const std::int64_t pair = blockIdx.x;
  const std::int64_t n = pair / H, h = pair % H;
  const TokenSpan span = token_span(p.cu_seqlens, p.seq_len, n);
  const std::int64_t bos = span.first, len = span.length;

  // ---- stage a chunk of raw tokens with cp.async (16-byte pieces)
  auto issue_chunk = [&](std::int64_t first, int ntok) {
    constexpr int PK = DK / EPV, PV = DV / EPV, NP = 2 * PK + PV;
    for (int idx = tid; idx < ntok * NP; idx += NT) {
      const int tau = idx / NP, r = idx % NP;
      const std::int64_t tok = bos + first + tau;
      const In* src;
      In* dst;
      if (r < 2 * PK) {
        const int which = r / PK, piece = r % PK;
        src = (which == 0 ? p.q : p.k) + (tok * H + h) * DK + piece * EPV;
        dst = Rq + which * C * DK + tau * DK + piece * EPV;
      } else {
        const int piece = r - 2 * PK;
        src = p.v + (tok * H + h) * DV + piece * EPV;
        dst = Rv + tau * DV + piece * EPV;
      }
      cp_async16(dst, src);
    }
    cp_async_commit();
  };
  if (len > 0) issue_chunk(0, static_cast<int>(len < C ? len : C));

  // ---- the state, into registers
  const int rowS = warp * G::RS + lane / G::LS, cS = lane % G::LS;
  float4 s[G::GS];
  const bool has_init = p.S0 != nullptr;
#pragma unroll
  for (int m = 0; m < G::GS; ++m) {
    const int col = 4 * (cS + G::LS * m);
    s[m] = has_init ? ld4(p.S0 + (pair * DV + rowS) * DK + col) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  float zj = 0.f;  // z[tid] for tid < DK
  if (kZ && has_init && tid < DK) zj = p.z0[pair * DK + tid];

  for (std::int64_t cb = 0; cb < len; cb += C) {
    const int ntok = static_cast<int>(len - cb < C ? len - cb : C);
    cp_async_wait_all();
    __syncthreads();  // raw chunk visible; the previous chunk's outputs are written out

    // ---- P1: per-token input work, one warp per token
    for (int tau = warp; tau < ntok; tau += NW) {
      float kv[KPL];
#pragma unroll
      for (int i = 0; i < KPL; ++i) kv[i] = to_float(Rk[tau * DK + lane + 32 * i]);
      const float kf = kUnitKey ? warp_unit_factor(kv, 1.f) : 1.f;
      float kq = 0.f;
#pragma unroll
      for (int i = 0; i < KPL; ++i) {
        const float qv = to_float(Rq[tau * DK + lane + 32 * i]);
        const float kh = kUnitKey ? kv[i] * kf : kv[i];
        Qf[tau * DK + lane + 32 * i] = qv;
        Kh[tau * DK + lane + 32 * i] = kh;
        kq += kh * qv;
      }
      kq = group_sum<32>(kq);
      if (lane == 0) KQ[tau] = kq;
#pragma unroll
      for (int i = 0; i < VPL; ++i) Vf[tau * DV + lane + 32 * i] = to_float(Rv[tau * DV + lane + 32 * i]);
      if (kDelta && lane == 0) Beta[tau] = to_float(p.beta[(bos + cb + tau) * H + h]);
    }
    // ---- P2: the running key sum z after each token (sequential per column, as the reference)
    if (kZ && tid < DK) {
      for (int tau = 0; tau < ntok; ++tau) {
        zj += to_float(Rk[tau * DK + tid]);
        PO[tau * DK + tid] = zj;
      }
    }
    __syncthreads();  // raw chunk consumed: bring the next one while this one runs
    if (cb + C < len) issue_chunk(cb + C, static_cast<int>(len - cb - C < C ? len - cb - C : C));
    // ---- P3: the output normaliser max(zᵀq, ε) per token; zs for the rescaled output (huge q):
    // zᵀq, or where that is not finite zᵀq̃ with q̃ = q / max|q| and den marked NaN
    if (kZ) {
      for (int tau = warp; tau < ntok; tau += NW) {
        float zq = 0.f;
#pragma unroll
        for (int i = 0; i < KPL; ++i) zq += __fmul_rn(PO[tau * DK + lane + 32 * i], Qf[tau * DK + lane + 32 * i]);
        zq = group_sum<32>(zq);
        float den = 1.f, zs = zq;
        if (p.normalize) {
          if (rules::is_finite(zq)) {
            den = rules::output_denominator<float>(zq, p.denom_eps);
          } else {
            zs = scaled_dot_warp<KPL>(Qf + tau * DK, PO + tau * DK, lane);
            den = __int_as_float(0x7fffffff);
          }
        }
        if (lane == 0) Den[tau] = den, ZS[tau] = zs;
      }
    }
    __syncthreads();

    // ---- the sequential steps of this chunk. The common path is run 1's step plus one sticky flag
    // (no branch): whether an output had S q or zᵀq not finite (huge q, docs/maths.md §2.6). Only then is the
    // chunk run again from S as it was at the chunk's start (saved below) with the rescaled output of
    // rules::rescaled_output, decided per row; the S updates of the replay are the same bits.
    if (kZ) {
#pragma unroll
      for (int m = 0; m < G::GS; ++m) st4(Ssave + rowS * DK + 4 * (cS + G::LS * m), s[m]);  // own entries only
    }
    auto run_steps = [&](auto slow_tag) {
      constexpr bool kSlow = decltype(slow_tag)::value;
      bool bad = false;
      for (int tau = 0; tau < ntok; ++tau) {
        const float* kh = Kh + tau * DK;
        const float* qf = Qf + tau * DK;
        float4 KS[G::GS], QS[G::GS];
#pragma unroll
        for (int m = 0; m < G::GS; ++m) {
          const int col = 4 * (cS + G::LS * m);
          KS[m] = ld4(kh + col);
          QS[m] = ld4(qf + col);
        }
        float ps = 0.f, pq = 0.f;  // (S k̂)_i, (S q)_i partials over this thread's columns
#pragma unroll
        for (int m = 0; m < G::GS; ++m) {
          ps += s[m].x * KS[m].x + s[m].y * KS[m].y + s[m].z * KS[m].z + s[m].w * KS[m].w;
          pq += s[m].x * QS[m].x + s[m].y * QS[m].y + s[m].z * QS[m].z + s[m].w * QS[m].w;
        }
        const float vi = Vf[tau * DV + rowS];
        ps = group_sum<G::LS>(ps);
        pq = group_sum<G::LS>(pq);
        // linear attention: S ← S + v kᵀ;  DeltaNet: S ← S + β (v − S k̂) k̂ᵀ
        const float e = kDelta ? (vi - ps) * Beta[tau] : vi;
#pragma unroll
        for (int m = 0; m < G::GS; ++m) {
          s[m].x += e * KS[m].x;
          s[m].y += e * KS[m].y;
          s[m].z += e * KS[m].z;
          s[m].w += e * KS[m].w;
        }
        const float out = pq + e * KQ[tau];  // S_new q = S q + e (kᵀq)
        if (!kSlow) {
          if (cS == 0) PO[tau * DV + rowS] = kZ ? out / Den[tau] : out;
          if (kZ) bad |= !(rules::is_finite(out) && rules::is_finite(Den[tau]));
        } else {
          const float dn = Den[tau];
          float res = out / dn;
          if (!(rules::is_finite(out) && dn == dn)) {  // the LS lanes of the row agree on this
            const unsigned gm = group_mask<G::LS>(lane);
            float mq = 0.f;
#pragma unroll
            for (int m = 0; m < G::GS; ++m) mq = fmaxf(mq, max_abs4(QS[m]));
            mq = group_max_masked<G::LS>(mq, gm);
            float sq = 0.f;
#pragma unroll
            for (int m = 0; m < G::GS; ++m) {
              sq = fmaf(s[m].x, QS[m].x / mq, sq);
              sq = fmaf(s[m].y, QS[m].y / mq, sq);
              sq = fmaf(s[m].z, QS[m].z / mq, sq);
              sq = fmaf(s[m].w, QS[m].w / mq, sq);
            }
            sq = group_sum_masked<G::LS>(sq, gm);
            const float zqs = dn == dn ? ZS[tau] / mq : ZS[tau];  // zᵀq̃
            res = rules::rescaled_output<float>(sq, zqs, mq, p.denom_eps);
          }
          if (cS == 0) PO[tau * DV + rowS] = res;
        }
      }
      return bad;
    };
    const bool bad = run_steps(std::false_type{});
    if constexpr (kZ) {
      if (__syncthreads_or(p.normalize && bad)) {  // rare (huge q): replay the chunk
#pragma unroll
        for (int m = 0; m < G::GS; ++m) s[m] = ld4(Ssave + rowS * DK + 4 * (cS + G::LS * m));
        run_steps(std::true_type{});
      }
    }
    __syncthreads();  // this chunk's outputs are complete (after a replay too)
    // ---- write the outputs of the chunk (16-byte stores)
    {
      constexpr int PV = DV / EPV;
      for (int idx = tid; idx < ntok * PV; idx += NT) {
        const int tau = idx / PV, piece = idx % PV;
        store16<In>(p.o + ((bos + cb + tau) * H + h) * DV + piece * EPV, PO + tau * DV + piece * EPV);
      }
    }
  }

  // ---- the final state
  if (p.S1) {
#pragma unroll
    for (int m = 0; m < G::GS; ++m) st4(p.S1 + (pair * DV + rowS) * DK + 4 * (cS + G::LS * m), s[m]);
    if (kZ && tid < DK) p.z1[pair * DK + tid] = zj;
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace vla
