// vla/cuda/detail/backward_kernel.cuh — the recurrent VLA backward on the GPU (docs/maths.md §9, the
// GPU scheme §9c; design and measurements: vla/cuda/README.md "The backward"): one CTA per (sequence,
// head), walking the sequence's checkpoint segments from the last.
//
// Per segment b (tokens [bL, bL + n), n ≤ L), from the forward's checkpoint b (recurrent_kernel
// writes them, RecurrentParams::ckA …):
//   1. prep (all warps, token-parallel): û, k̂, q̃ = q/m, v, g = ∂L/∂o and the running z₂ of every
//      step into the segment's records (global scratch, one record per step);
//   2. replay (sequential, docs/maths.md §2): the segment's steps again from the checkpoint, keeping
//      per step what the adjoint needs: s = w/√δ, α̂, e = v − S k̂, δ̃, δ and a few dot products;
//   3. reverse (sequential, §9 line by line from the last): the adjoint of each step, run on the
//      state *after* the step (A₂, S₂), which is then rolled back to the state before it with the
//      step's own vectors: A = A₂ − ε_refresh·I + s sᵀ, S = S₂ − e α̂ᵀ (z₂ is in the record). The
//      roll-back's rounding stays within one segment: every segment starts again from a checkpoint.
//
// The adjoint of A only counts through its symmetric part (docs/maths.md §9, "A is symmetric"), so
// the kernel carries Ḡ = sym(Ā): Ā's two terms per step become sym(ᾱ k̂ᵀ) + sym(w̄ ûᵀ), and
// Āw + Āᵀw = 2Ḡw, wᵀĀw = wᵀḠw. A and Ḡ, both symmetric, share one dk × (dk + 1) array M: A in
// the upper triangle with its diagonal, Ḡ in the strict lower triangle, Ḡ's diagonal beside it.
// With S and S̄ (dv × dk each) the state fits shared memory for every supported head-dim pair
// (dk = dv = 128: 223 KiB).
//
// Passes: every matrix pass gives each row to LPR = dk/4 lanes (one float4 of columns each) and
// each warp RPW = 32/LPR rows at a time; row dots reduce over the row's lanes, column sums go
// through shared memory in a fixed order (no atomics: the result does not depend on timing). The
// vector work between passes (the §9 lines on vectors) is done by warp 0.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "vla/detail/rules.hpp"
#include "vla/layout.hpp"
#include "vla/cuda/detail/device_util.cuh"
#include "vla/cuda/detail/recurrent_kernel.cuh"

// Tuning knobs (compile time). Both 1 by default since 2026-12-06: built as the variant beside the
// old kernel (both 0) in one call, test_cuda_backward passed under both, and the variant was
// 1.06–1.10× faster at every shape timed (bench/gpu/RESULTS.md, "Backward", 2026-12-06, H100).
// Set them to 0 to build the earlier kernel (cmake -DVLA_GPU_VARIANTS=ON -DVLA_GPU_VARIANT_DEFS=…).
//   VLA_CUDA_BACKWARD_REG_S     1: S and S̄ in registers at 256 threads (dk, dv ≤ 64), not in shared memory
//   VLA_CUDA_BACKWARD_QA_IN_V1  1: α̂ᵀq̃ reduced in the reverse's V1 beside gᵀS₂q̃, off the replay's chain
#ifndef VLA_CUDA_BACKWARD_REG_S
#define VLA_CUDA_BACKWARD_REG_S 1
#endif
#ifndef VLA_CUDA_BACKWARD_QA_IN_V1
#define VLA_CUDA_BACKWARD_QA_IN_V1 1
#endif

namespace vla {
namespace cuda {
namespace detail {

/// A backward launch's buffers (device memory) beside the forward's own parameters.
template <class In>
struct BackwardParams {
  RecurrentParams<In> f;  ///< tokens, initial state and the config's constants (f.o, f.A1 … unused)
  const In* d_o = nullptr;
  const float* dA1 = nullptr;  ///< ∂L/∂(final state); null: zero
  const float* dS1 = nullptr;
  const float* dz1 = nullptr;
  In* dq = nullptr;  ///< token gradients; null: not written
  In* dk = nullptr;
  In* dv = nullptr;
  In* du = nullptr;
  float* dA0 = nullptr;  ///< ∂L/∂(initial state); null: not written
  float* dS0 = nullptr;
  float* dz0 = nullptr;
  const float* ckA = nullptr;  ///< the forward's checkpoints [pair][ckpt_stride][…]
  const float* ckS = nullptr;
  const float* ckz = nullptr;
  std::int64_t ckpt_stride = 0;
  int L = 64;            ///< tokens per segment (the checkpoint interval)
  float* rec = nullptr;  ///< scratch: [pair][L][REC] step records
#ifdef VLA_BACKWARD_PROFILE
  long long* prof = nullptr;  ///< [pair][2][kProfPhases] clock64 cycles per phase, warps 0 and 1
#endif
};

// Phase timing for tuning (off unless VLA_BACKWARD_PROFILE is defined, as in bench/gpu/backward_phases.cu):
// warps 0 and 1 add clock64() deltas per phase in registers and write them out at the end.
constexpr int kProfPhases = 20;
#ifdef VLA_BACKWARD_PROFILE
inline long long*& backward_profile_buffer() {
  static long long* buf = nullptr;
  return buf;
}
#define VLA_BW_MARK(k)                     \
  do {                                     \
    const long long c_ = clock64();        \
    prof_acc[k] += c_ - prof_last;         \
    prof_last = c_;                        \
  } while (0)
#else
#define VLA_BW_MARK(k) \
  do {                 \
  } while (0)
#endif

/// Thread layout and shared memory of the backward kernel for head dims (DK, DV), in floats.
template <int DK, int DV>
struct BackwardLayout {
  static constexpr int NW = (DK <= 64 && DV <= 64) ? 8 : 16;
  static constexpr int NT = 32 * NW;
  static constexpr int LPR = DK / 4;                    // lanes per matrix row
  static constexpr int RPW = 32 / LPR;                  // rows per warp and pass
  static constexpr int NSLOT = NW * RPW;                // rows in flight per pass
  static constexpr int RA = (DK + NSLOT - 1) / NSLOT;   // A rows per slot
  static constexpr int RS = (DV + NSLOT - 1) / NSLOT;   // S rows per slot
  static constexpr int P = DK + 1;                      // row stride of M
  static constexpr int KPL = DK / 32, VPL = DV / 32;    // vector entries per lane (warp 0)
  // One step's record.
  static constexpr int R_UH = 0, R_KH = DK, R_QS = 2 * DK, R_S = 3 * DK, R_AH = 4 * DK, R_Z2 = 5 * DK;
  static constexpr int R_VE = 6 * DK, R_GO = 6 * DK + DV, R_SC = 6 * DK + 2 * DV;
  static constexpr int REC = R_SC + 16;
  enum Scalar { kUf, kKf, kM, kAf, kDel, kClamp, kEpsR, kQa, kZq, kGoE, kKs };
  // Shared memory.
  static constexpr int O_M = 0, O_GD = DK * P, O_S = O_GD + DK, O_GS = O_S + DV * DK;
  static constexpr int O_REC = O_GS + DV * DK;                 // two records (double buffer)
  static constexpr int O_COLP = O_REC + 2 * REC;               // [2][NSLOT][DK] column partials
  static constexpr int O_SQ = O_COLP + 2 * NSLOT * DK;         // row results, DV or DK each
  static constexpr int O_C = O_SQ + DV, O_GSV = O_C + DV, O_GW = O_GSV + DK, O_GUHP = O_GW + DK;
  static constexpr int O_W = O_GUHP + DK, O_Y = O_W + DK;
  static constexpr int O_GALPHA = O_Y + DK, O_GW2 = O_GALPHA + DK, O_GE = O_GW2 + DK, O_GP = O_GE + DV;
  static constexpr int FLOATS = O_GP + DV;
  static constexpr std::size_t bytes = std::size_t(FLOATS) * 4;
  static_assert(O_GD % 4 == 0 && O_S % 4 == 0 && O_REC % 4 == 0 && REC % 4 == 0, "float4 alignment");
  static_assert(LPR >= 8 && LPR <= 32 && 32 % LPR == 0, "vla: dk must be 32, 64 or 128");
  // Every slot has exactly RS rows of S, and RA rows of A unless dk < NSLOT (dk = 32, dv = 128:
  // half the slots have none). The passes test bounds only there (ROW_A), so their loads and
  // reductions are straight-line code the compiler can overlap; the reductions stay outside
  // every branch (a slot without a row reduces zeros).
  static_assert(DV % NSLOT == 0 && (DK % NSLOT == 0 || DK < NSLOT), "vla: head dims and rows in flight");
  static constexpr bool ALL_A = DK % NSLOT == 0;
  // VLA_CUDA_BACKWARD_REG_S: every pass touches a thread's same entries of S and S̄ (rows slot +
  // NSLOT·r, columns j0 … j0 + 3; 16 of each at 256 threads), so they can live in registers with
  // no exchange. At 512 threads (128 registers at most) they would spill: shared memory there.
  static constexpr bool REG_S = VLA_CUDA_BACKWARD_REG_S && NT == 256;
};

/// A[i][j] of the symmetric A kept in M's upper triangle; Ḡ[i][j] of the symmetric Ḡ in its strict
/// lower triangle and gd (its diagonal).
template <int P>
__device__ __forceinline__ float a_at(const float* M, int i, int j) {
  return M[j >= i ? i * P + j : j * P + i];  // one load from a selected address
}
template <int P>
__device__ __forceinline__ float g_at(const float* M, const float* gd, int i, int j) {
  return *(i > j ? M + i * P + j : (i < j ? M + j * P + i : gd + i));
}
__device__ __forceinline__ void unpack4(float4 v, float (&a)[4]) { a[0] = v.x, a[1] = v.y, a[2] = v.z, a[3] = v.w; }

/// Copies one record (REC floats) global → shared with cp.async, threads [0, NT).
template <int REC, int NT>
__device__ __forceinline__ void fetch_record(float* dst, const float* src) {
  for (int i = threadIdx.x; i < REC / 4; i += NT) cp_async16(dst + 4 * i, src + 4 * i);
  cp_async_commit();
}

template <class In, int DK, int DV>
__global__ void __launch_bounds__(BackwardLayout<DK, DV>::NT, 1) vla_backward_kernel(const BackwardParams<In> bp) {
  using Lo = BackwardLayout<DK, DV>;
  constexpr int P = Lo::P, LPR = Lo::LPR, NSLOT = Lo::NSLOT, KPL = Lo::KPL, VPL = Lo::VPL, REC = Lo::REC;
  const RecurrentParams<In>& p = bp.f;
  extern __shared__ __align__(16) float sm[];
  float* const M = sm + Lo::O_M;
  float* const gd = sm + Lo::O_GD;
  float* const S = sm + Lo::O_S;
  float* const gS = sm + Lo::O_GS;
  float* const colp = sm + Lo::O_COLP;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int slot = warp * Lo::RPW + lane / LPR;
  const int j0 = 4 * (lane % LPR);
  const bool row_lead = lane % LPR == 0;
  const bool row_a = Lo::ALL_A || slot < DK;  // this slot has rows of A (RA = 1 where it may not)
  float4 sreg[Lo::REG_S ? Lo::RS : 1], gsreg[Lo::REG_S ? Lo::RS : 1];  // S, S̄ rows (REG_S only)

  const std::int64_t H = p.heads, pair = blockIdx.x, h = pair % H;
  const TokenSpan span = token_span(p.cu_seqlens, p.seq_len, pair / H);
  const std::int64_t bos = span.first, len = span.length;
  const std::int64_t t0 = p.S0 ? p.steps0[pair] : 0;
  const int L = bp.L;
  float* const recg = bp.rec + pair * std::int64_t(L) * REC;
  const float c2 = p.inv_sqrt_dk * p.inv_sqrt_dk;
#ifdef VLA_BACKWARD_PROFILE
  long long prof_acc[kProfPhases] = {};
  long long prof_last = clock64();
#endif

  // ---- the adjoint state: Ḡ = sym(∂L/∂A_T), S̄, z̄ (warp 0's registers)
  float gz[KPL];
  for (int idx = tid; idx < DK * DK; idx += Lo::NT) {
    const int i = idx / DK, j = idx % DK;
    if (i < j) continue;
    float g = 0.f;
    if (bp.dA1) {
      const float* a = bp.dA1 + pair * DK * DK;
      g = i == j ? a[i * DK + i] : 0.5f * (a[i * DK + j] + a[j * DK + i]);
    }
    if (i == j) gd[i] = g; else M[i * P + j] = g;
  }
  if constexpr (Lo::REG_S) {
#pragma unroll
    for (int r = 0; r < Lo::RS; ++r) {  // scalar loads: d_final_state.S need not be 16-byte aligned
      const float* d = bp.dS1 ? bp.dS1 + pair * DV * DK + (slot + NSLOT * r) * DK + j0 : nullptr;
      gsreg[r] = d ? make_float4(d[0], d[1], d[2], d[3]) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  } else {
    for (int idx = tid; idx < DV * DK; idx += Lo::NT) gS[idx] = bp.dS1 ? bp.dS1[pair * DV * DK + idx] : 0.f;
  }
#pragma unroll
  for (int x = 0; x < KPL; ++x) gz[x] = bp.dz1 ? bp.dz1[pair * DK + lane + 32 * x] : 0.f;

  const std::int64_t nseg = (len + L - 1) / L;
  VLA_BW_MARK(0);
  for (std::int64_t b = nseg - 1; b >= 0; --b) {
    const std::int64_t s0 = b * L;
    const int n = static_cast<int>(len - s0 < L ? len - s0 : L);
    __syncthreads();  // the previous segment's last reads of M, S and the records are done

    // ---- checkpoint b: A into M's upper triangle, S; and 1. the records' inputs
    {
      const std::int64_t at = pair * bp.ckpt_stride + b;
      // A thread's checkpoint loads in flight together (8 at a time, 4 at 512 threads where registers are scarce),
      // then the shared stores.
      {
        constexpr int NA = DK * DK / Lo::NT, NS = DV * DK / 4 / Lo::NT, CB = NA < 8 ? NA : (Lo::NW == 8 ? 8 : 4);
        static_assert(NA * Lo::NT == DK * DK && NS * Lo::NT * 4 == DV * DK && NA % CB == 0, "checkpoint load split");
        const float* cA = bp.ckA + at * DK * DK;
        const float* cS = bp.ckS + at * DV * DK;
#pragma unroll
        for (int c0 = 0; c0 < NA; c0 += CB) {
          float ta[CB];
#pragma unroll
          for (int c = 0; c < CB; ++c) ta[c] = cA[tid + (c0 + c) * Lo::NT];
#pragma unroll
          for (int c = 0; c < CB; ++c) {
            const int idx = tid + (c0 + c) * Lo::NT, i = idx / DK, j = idx % DK;
            if (j >= i) M[i * P + j] = ta[c];
          }
        }
        if constexpr (Lo::REG_S) {
#pragma unroll
          for (int r = 0; r < Lo::RS; ++r) sreg[r] = ld4(cS + (slot + NSLOT * r) * DK + j0);
        } else {
          float4 ts[NS];
#pragma unroll
          for (int c = 0; c < NS; ++c) ts[c] = ld4(cS + 4 * (tid + c * Lo::NT));
#pragma unroll
          for (int c = 0; c < NS; ++c) st4(S + 4 * (tid + c * Lo::NT), ts[c]);
        }
      }
      // A warp per token, two tokens at a time so that their global loads overlap (one at 512
      // threads, where registers are scarce).
      constexpr int U = Lo::NW == 8 ? 2 : 1;
      for (int tau0 = warp; tau0 < n; tau0 += U * Lo::NW) {
        float qv[U][KPL], kv[U][KPL], uv[U][KPL], vv[U][VPL], gv[U][VPL];
#pragma unroll
        for (int w = 0; w < U; ++w) {
          const int tau = tau0 + w * Lo::NW;
          const std::int64_t tok = bos + s0 + (tau < n ? tau : tau0);  // past the end: token tau0 again, unused
#pragma unroll
          for (int x = 0; x < KPL; ++x) {
            const std::int64_t o = (tok * H + h) * DK + lane + 32 * x;
            qv[w][x] = to_float(p.q[o]), kv[w][x] = to_float(p.k[o]), uv[w][x] = to_float(p.u[o]);
          }
#pragma unroll
          for (int x = 0; x < VPL; ++x) {
            const std::int64_t o = (tok * H + h) * DV + lane + 32 * x;
            vv[w][x] = to_float(p.v[o]), gv[w][x] = to_float(bp.d_o[o]);
          }
        }
#pragma unroll
        for (int w = 0; w < U; ++w) {
          const int tau = tau0 + w * Lo::NW;
          if (tau >= n) break;  // warp-uniform
          float* r = recg + std::int64_t(tau) * REC;
          const float kf = warp_unit_factor(kv[w], 1.f);
          const float uf = warp_unit_factor(uv[w], p.inv_sqrt_dk);
          float m = 1.f;
          if (p.normalize) {
            float mx = 0.f;
#pragma unroll
            for (int x = 0; x < KPL; ++x) mx = fmaxf(mx, fabsf(qv[w][x]));
            mx = group_max<32>(mx);
            if (rules::inverse_max<float>(mx) != 0.f) m = mx;  // zero or subnormal q: no scaling
          }
#pragma unroll
          for (int x = 0; x < KPL; ++x) {
            const int j = lane + 32 * x;
            r[Lo::R_UH + j] = uv[w][x] * uf;
            r[Lo::R_KH + j] = kv[w][x] * kf;
            r[Lo::R_QS + j] = p.normalize ? qv[w][x] / m : qv[w][x];
          }
#pragma unroll
          for (int x = 0; x < VPL; ++x) r[Lo::R_VE + lane + 32 * x] = vv[w][x], r[Lo::R_GO + lane + 32 * x] = gv[w][x];
          if (lane == 0) r[Lo::R_SC + Lo::kUf] = uf, r[Lo::R_SC + Lo::kKf] = kf, r[Lo::R_SC + Lo::kM] = m;
        }
      }
      // z₂ after each step: the running key sum from the checkpoint, sequential per column as the forward.
      if (tid < DK) {
        float z = bp.ckz[at * DK + tid];
        for (int tau = 0; tau < n; tau += 8) {
          float kk[8];
#pragma unroll
          for (int x = 0; x < 8; ++x)
            kk[x] = tau + x < n ? to_float(p.k[((bos + s0 + tau + x) * H + h) * DK + tid]) : 0.f;
#pragma unroll
          for (int x = 0; x < 8; ++x)
            if (tau + x < n) z += kk[x], recg[std::int64_t(tau + x) * REC + Lo::R_Z2 + tid] = z;
        }
      }
    }
    __syncthreads();
    VLA_BW_MARK(1);

    // ---- 2. replay: the segment's steps from the checkpoint (docs/maths.md §2), completing the records
    fetch_record<REC, Lo::NT>(sm + Lo::O_REC, recg);
    for (int tau = 0; tau < n; ++tau) {
      float* const rb = sm + Lo::O_REC + (tau & 1) * REC;
      cp_async_wait_all();
      __syncthreads();  // record tau in shared memory; the other buffer's write-back done
      VLA_BW_MARK(2);
      if (tau + 1 < n) fetch_record<REC, Lo::NT>(sm + Lo::O_REC + ((tau + 1) & 1) * REC, recg + std::int64_t(tau + 1) * REC);
      // w = A û, y = A k̂ (A rows), S k̂ → e = v − S k̂ (S rows): one read pass
      {
        float uh[4], kh[4], red[2 * Lo::RA + Lo::RS];
        unpack4(ld4(rb + Lo::R_UH + j0), uh);
        unpack4(ld4(rb + Lo::R_KH + j0), kh);
#pragma unroll
        for (int r = 0; r < Lo::RA; ++r) {
          const int i = slot + NSLOT * r;
          float w = 0.f, y = 0.f;
          if (row_a) {
#pragma unroll
            for (int x = 0; x < 4; ++x) {
              const float a = a_at<P>(M, i, j0 + x);
              w = fmaf(a, uh[x], w);
              y = fmaf(a, kh[x], y);
            }
          }
          red[2 * r] = w, red[2 * r + 1] = y;
        }
#pragma unroll
        for (int r = 0; r < Lo::RS; ++r)
          if constexpr (Lo::REG_S)
            red[2 * Lo::RA + r] = dot4(sreg[r], ld4(rb + Lo::R_KH + j0), 0.f);
          else
            red[2 * Lo::RA + r] = dot4(ld4(S + (slot + NSLOT * r) * DK + j0), ld4(rb + Lo::R_KH + j0), 0.f);
        group_sum_n<LPR>(red);
        if (row_lead) {
#pragma unroll
          for (int r = 0; r < Lo::RA; ++r)
            if (row_a) sm[Lo::O_W + slot + NSLOT * r] = red[2 * r], sm[Lo::O_Y + slot + NSLOT * r] = red[2 * r + 1];
#pragma unroll
          for (int r = 0; r < Lo::RS; ++r) rb[Lo::R_VE + slot + NSLOT * r] -= red[2 * Lo::RA + r];
        }
      }
      VLA_BW_MARK(3);
      __syncthreads();
      VLA_BW_MARK(4);
      if (warp == 0) {  // δ, s, α, α̂ and the record's dot products
        const float uf = rb[Lo::R_SC + Lo::kUf], kf = rb[Lo::R_SC + Lo::kKf];
        float w[KPL], uh[KPL], kh[KPL], y[KPL], qs[KPL], s[KPL], al[KPL];
        float three[3] = {0.f, 0.f, 0.f};  // ûᵀw, z₂ᵀq̃, gᵀe: independent, reduced together
#pragma unroll
        for (int x = 0; x < KPL; ++x) {
          const int j = lane + 32 * x;
          w[x] = sm[Lo::O_W + j], y[x] = sm[Lo::O_Y + j], uh[x] = rb[Lo::R_UH + j], kh[x] = rb[Lo::R_KH + j];
          qs[x] = rb[Lo::R_QS + j];
          three[0] = fmaf(uh[x], w[x], three[0]);
          three[1] = fmaf(rb[Lo::R_Z2 + j], qs[x], three[1]);
        }
#pragma unroll
        for (int x = 0; x < VPL; ++x) three[2] = fmaf(rb[Lo::R_GO + lane + 32 * x], rb[Lo::R_VE + lane + 32 * x], three[2]);
        group_sum_n<32>(three);
        const float dd = 1.f + three[0];
        const float dtil = uf != 0.f ? dd : 1.f;
        const float del = rules::sm_denominator<float>(dtil, p.stab_eps);
        const float rd = 1.f / sqrtf(del);
        float ks = 0.f;
#pragma unroll
        for (int x = 0; x < KPL; ++x) s[x] = uf != 0.f ? w[x] * rd : 0.f, ks = fmaf(s[x], kh[x], ks);
        ks = group_sum<32>(ks);
        const float er = rules::refresh_due(t0 + s0 + tau, p.refresh_period) ? p.refresh_eps : 0.f;
#pragma unroll
        for (int x = 0; x < KPL; ++x) al[x] = y[x] - s[x] * ks + er * kh[x];
        const float af = kf != 0.f ? warp_unit_factor(al, 1.f) : 0.f;
        float qa = 0.f;
#pragma unroll
        for (int x = 0; x < KPL; ++x) {
          const int j = lane + 32 * x;
          const float ah = al[x] * af;
          rb[Lo::R_S + j] = s[x], rb[Lo::R_AH + j] = ah;
          qa = fmaf(ah, qs[x], qa);
        }
#if !VLA_CUDA_BACKWARD_QA_IN_V1
        qa = group_sum<32>(qa);  // (with QA_IN_V1 the record's kQa is left unread)
#endif
        if (lane == 0) {
          float* sc = rb + Lo::R_SC;
          sc[Lo::kAf] = af, sc[Lo::kDel] = del, sc[Lo::kClamp] = (uf != 0.f && !(dtil > p.stab_eps)) ? 1.f : 0.f;
          sc[Lo::kEpsR] = er, sc[Lo::kQa] = qa, sc[Lo::kZq] = three[1], sc[Lo::kGoE] = three[2], sc[Lo::kKs] = ks;
        }
      }
      VLA_BW_MARK(5);
      __syncthreads();
      VLA_BW_MARK(6);
      // A ← A − s sᵀ + ε_refresh·I (the upper triangle's owners), S ← S + e α̂ᵀ
      {
        const float er = rb[Lo::R_SC + Lo::kEpsR];
        float sj[4];
        unpack4(ld4(rb + Lo::R_S + j0), sj);
#pragma unroll
        for (int r = 0; r < Lo::RA; ++r) {
          const int i = slot + NSLOT * r;
          if (!row_a) continue;
          const float si = rb[Lo::R_S + i];
#pragma unroll
          for (int x = 0; x < 4; ++x) {
            const int j = j0 + x;
            if (j >= i) M[i * P + j] = M[i * P + j] - si * sj[x] + (j == i ? er : 0.f);
          }
        }
        if (rb[Lo::R_SC + Lo::kAf] != 0.f) {
          const float4 ah = ld4(rb + Lo::R_AH + j0);
#pragma unroll
          for (int r = 0; r < Lo::RS; ++r) {
            const int i = slot + NSLOT * r;
            const float e = rb[Lo::R_VE + i];
            if constexpr (Lo::REG_S) {
              float4& s4 = sreg[r];
              s4.x = fmaf(e, ah.x, s4.x), s4.y = fmaf(e, ah.y, s4.y), s4.z = fmaf(e, ah.z, s4.z), s4.w = fmaf(e, ah.w, s4.w);
            } else {
              float4 s4 = ld4(S + i * DK + j0);
              s4.x = fmaf(e, ah.x, s4.x), s4.y = fmaf(e, ah.y, s4.y), s4.z = fmaf(e, ah.z, s4.z), s4.w = fmaf(e, ah.w, s4.w);
              st4(S + i * DK + j0, s4);
            }
          }
        }
        float* rg = recg + std::int64_t(tau) * REC;  // the completed record back to global memory
        for (int i = tid; i < REC / 4; i += Lo::NT) st4(rg + 4 * i, ld4(rb + 4 * i));
      }
      VLA_BW_MARK(7);
    }
    __syncthreads();  // the records are complete in global memory; M and S hold the segment's end state

    // ---- 3. reverse: the adjoint of each step (docs/maths.md §9), on the state after it
    fetch_record<REC, Lo::NT>(sm + Lo::O_REC + ((n - 1) & 1) * REC, recg + std::int64_t(n - 1) * REC);
    float apre[Lo::RA][4];  // this thread's rolled-back A entries, written after the next barrier
    bool pending = false;
    float wv[KPL], gdt = 0.f;  // warp 0: w and δ̃̄ of the step, for û̄
    for (int tau = n - 1; tau >= 0; --tau) {
      float* const rb = sm + Lo::O_REC + (tau & 1) * REC;
      const float* const sc = rb + Lo::R_SC;
      cp_async_wait_all();
      __syncthreads();  // B0: record tau in shared memory; Ḡ's and the previous step's writes done
      VLA_BW_MARK(8);
      if (pending) {    // A of the previous step rolled back: nobody reads A before B1
#pragma unroll
        for (int r = 0; r < Lo::RA; ++r) {
          const int i = slot + NSLOT * r;
#pragma unroll
          for (int x = 0; x < 4; ++x)
            if (row_a && j0 + x >= i) M[i * P + j0 + x] = apre[r][x];
        }
      }
      // P1: S₂q̃, S̄α̂ (rows), S₂ᵀg, S̄ᵀe (columns), Ḡs (rows)
      {
        float cb[4] = {0.f, 0.f, 0.f, 0.f}, cd[4] = {0.f, 0.f, 0.f, 0.f}, sj[4], red[2 * Lo::RS + Lo::RA];
        const float4 qs = ld4(rb + Lo::R_QS + j0), ah = ld4(rb + Lo::R_AH + j0);
        unpack4(ld4(rb + Lo::R_S + j0), sj);
#pragma unroll
        for (int r = 0; r < Lo::RS; ++r) {
          const int i = slot + NSLOT * r;
          float4 s4, g4;
          if constexpr (Lo::REG_S) s4 = sreg[r], g4 = gsreg[r];
          else s4 = ld4(S + i * DK + j0), g4 = ld4(gS + i * DK + j0);
          red[2 * r] = dot4(s4, qs, 0.f), red[2 * r + 1] = dot4(g4, ah, 0.f);
          const float go = rb[Lo::R_GO + i], e = rb[Lo::R_VE + i];
          cb[0] = fmaf(s4.x, go, cb[0]), cb[1] = fmaf(s4.y, go, cb[1]), cb[2] = fmaf(s4.z, go, cb[2]), cb[3] = fmaf(s4.w, go, cb[3]);
          cd[0] = fmaf(g4.x, e, cd[0]), cd[1] = fmaf(g4.y, e, cd[1]), cd[2] = fmaf(g4.z, e, cd[2]), cd[3] = fmaf(g4.w, e, cd[3]);
        }
#pragma unroll
        for (int r = 0; r < Lo::RA; ++r) {
          const int i = slot + NSLOT * r;
          float gs = 0.f;
          if (row_a) {
#pragma unroll
            for (int x = 0; x < 4; ++x) gs = fmaf(g_at<P>(M, gd, i, j0 + x), sj[x], gs);
          }
          red[2 * Lo::RS + r] = gs;
        }
        st4(colp + slot * DK + j0, make_float4(cb[0], cb[1], cb[2], cb[3]));
        st4(colp + (NSLOT + slot) * DK + j0, make_float4(cd[0], cd[1], cd[2], cd[3]));
        group_sum_n<LPR>(red);
        if (row_lead) {
#pragma unroll
          for (int r = 0; r < Lo::RS; ++r) sm[Lo::O_SQ + slot + NSLOT * r] = red[2 * r], sm[Lo::O_C + slot + NSLOT * r] = red[2 * r + 1];
#pragma unroll
          for (int r = 0; r < Lo::RA; ++r)
            if (row_a) sm[Lo::O_GSV + slot + NSLOT * r] = red[2 * Lo::RS + r];
        }
      }
      VLA_BW_MARK(9);
      __syncthreads();  // B1
      VLA_BW_MARK(10);
      if (tau > 0) fetch_record<REC, Lo::NT>(sm + Lo::O_REC + ((tau - 1) & 1) * REC, recg + std::int64_t(tau - 1) * REC);
      const std::int64_t tok = bos + s0 + tau;
      const bool wrote = sc[Lo::kAf] != 0.f;
      const float m = sc[Lo::kM];
      // V1 (warp 0): the output's adjoint (§2.6), z₂ = z + k, ē and α̂̄ (§2.5), ᾱ (§2.4)
      float gk[KPL];
      if (warp == 0) {
        // Shared loads first, global stores last: a store through a generic pointer keeps the
        // compiler from hoisting later loads above it, which would expose each load's latency.
        float go[VPL], sq[VPL], cv[VPL], cbj[KPL], cdj[KPL], qs[KPL], z2[KPL], ahv[KPL];
#pragma unroll
        for (int x = 0; x < VPL; ++x) {
          const int i = lane + 32 * x;
          go[x] = rb[Lo::R_GO + i], sq[x] = sm[Lo::O_SQ + i], cv[x] = sm[Lo::O_C + i];
        }
#pragma unroll
        for (int x = 0; x < KPL; ++x) {
          const int j = lane + 32 * x;
          qs[x] = rb[Lo::R_QS + j], z2[x] = rb[Lo::R_Z2 + j], ahv[x] = rb[Lo::R_AH + j];
          cbj[x] = 0.f, cdj[x] = 0.f;
#pragma unroll
          for (int q = 0; q < NSLOT; ++q) cbj[x] += colp[q * DK + j], cdj[x] += colp[(NSLOT + q) * DK + j];
        }
        float den = 1.f;
        bool floored = true;
        if (p.normalize) {
          const float eps_m = p.denom_eps / m, zq = sc[Lo::kZq];
          floored = !(zq > eps_m);
          den = floored ? eps_m : zq;
        }
        const float rden = 1.f / den, rm = 1.f / m;
#if VLA_CUDA_BACKWARD_QA_IN_V1
        float two[2] = {0.f, 0.f};  // gᵀ(S₂q̃) and α̂ᵀq̃, reduced together
#pragma unroll
        for (int x = 0; x < VPL; ++x) {
          sm[Lo::O_GP + lane + 32 * x] = go[x] * rden;
          two[0] = fmaf(go[x], sq[x], two[0]);
        }
#pragma unroll
        for (int x = 0; x < KPL; ++x) two[1] = fmaf(ahv[x], qs[x], two[1]);
        group_sum_n<32>(two);
        const float gsq = two[0], qa_v1 = two[1];
#else
        float gsq = 0.f;
#pragma unroll
        for (int x = 0; x < VPL; ++x) {
          sm[Lo::O_GP + lane + 32 * x] = go[x] * rden;
          gsq = fmaf(go[x], sq[x], gsq);
        }
        gsq = group_sum<32>(gsq);
#endif
        const float gden = (p.normalize && !floored) ? -(gsq * rden) * rden : 0.f;
        float gah[KPL], dqv[KPL], ga = 0.f;
        const float goe = sc[Lo::kGoE] * rden;
#pragma unroll
        for (int x = 0; x < KPL; ++x) {
          const float gqs = cbj[x] * rden + gden * z2[x];
          dqv[x] = gqs * rm;
          gz[x] = fmaf(gden, qs[x], gz[x]);
          gk[x] = gz[x];
          gah[x] = wrote ? cdj[x] + qs[x] * goe : 0.f;
          ga = fmaf(ahv[x], gah[x], ga);
        }
        ga = group_sum<32>(ga);
#if VLA_CUDA_BACKWARD_QA_IN_V1
        const float af = sc[Lo::kAf], qa = qa_v1;
#else
        const float af = sc[Lo::kAf], qa = sc[Lo::kQa];
#endif
#pragma unroll
        for (int x = 0; x < KPL; ++x) sm[Lo::O_GALPHA + lane + 32 * x] = wrote ? af * (gah[x] - ahv[x] * ga) : 0.f;
        float gev[VPL];
#pragma unroll
        for (int x = 0; x < VPL; ++x) {
          gev[x] = wrote ? cv[x] + (go[x] * rden) * qa : 0.f;
          sm[Lo::O_GE + lane + 32 * x] = gev[x];
        }
        if (bp.dq) {
#pragma unroll
          for (int x = 0; x < KPL; ++x) bp.dq[(tok * H + h) * DK + lane + 32 * x] = from_float<In>(dqv[x]);
        }
        if (bp.dv) {
#pragma unroll
          for (int x = 0; x < VPL; ++x) bp.dv[(tok * H + h) * DV + lane + 32 * x] = from_float<In>(gev[x]);
        }
      }
      VLA_BW_MARK(11);
      __syncthreads();  // B2
      VLA_BW_MARK(12);
      // P2: S = S₂ − e α̂ᵀ, −Sᵀē (columns), S̄ += p̄ q̃ᵀ − ē k̂ᵀ; A₂ᾱ (rows)
      {
        float cg[4] = {0.f, 0.f, 0.f, 0.f}, gaj[4], red[Lo::RA];
        const float4 qs = ld4(rb + Lo::R_QS + j0), ah = ld4(rb + Lo::R_AH + j0), kh = ld4(rb + Lo::R_KH + j0);
        unpack4(ld4(sm + Lo::O_GALPHA + j0), gaj);
#pragma unroll
        for (int r = 0; r < Lo::RA; ++r) {
          const int i = slot + NSLOT * r;
          float gw = 0.f;
          if (row_a) {
#pragma unroll
            for (int x = 0; x < 4; ++x) gw = fmaf(a_at<P>(M, i, j0 + x), gaj[x], gw);
          }
          red[r] = gw;
        }
#pragma unroll
        for (int r = 0; r < Lo::RS; ++r) {
          const int i = slot + NSLOT * r;
          float4 s4, g4;
          if constexpr (Lo::REG_S) s4 = sreg[r], g4 = gsreg[r];
          else s4 = ld4(S + i * DK + j0), g4 = ld4(gS + i * DK + j0);
          const float e = rb[Lo::R_VE + i], ge = sm[Lo::O_GE + i], gp = sm[Lo::O_GP + i];
          if (wrote) {
            s4.x = fmaf(-e, ah.x, s4.x), s4.y = fmaf(-e, ah.y, s4.y), s4.z = fmaf(-e, ah.z, s4.z), s4.w = fmaf(-e, ah.w, s4.w);
            if constexpr (Lo::REG_S) sreg[r] = s4;
            else st4(S + i * DK + j0, s4);
            cg[0] = fmaf(s4.x, ge, cg[0]), cg[1] = fmaf(s4.y, ge, cg[1]), cg[2] = fmaf(s4.z, ge, cg[2]), cg[3] = fmaf(s4.w, ge, cg[3]);
          }
          g4.x += gp * qs.x - ge * kh.x, g4.y += gp * qs.y - ge * kh.y;
          g4.z += gp * qs.z - ge * kh.z, g4.w += gp * qs.w - ge * kh.w;
          if constexpr (Lo::REG_S) gsreg[r] = g4;
          else st4(gS + i * DK + j0, g4);
        }
        st4(colp + slot * DK + j0, make_float4(cg[0], cg[1], cg[2], cg[3]));
        group_sum_n<LPR>(red);
        if (row_lead) {
#pragma unroll
          for (int r = 0; r < Lo::RA; ++r)
            if (row_a) sm[Lo::O_GW + slot + NSLOT * r] = red[r];
        }
      }
      VLA_BW_MARK(13);
      __syncthreads();  // B3
      VLA_BW_MARK(14);
      const float uf = sc[Lo::kUf], kf = sc[Lo::kKf], del = sc[Lo::kDel];
      // V2 (warp 0): k̂̄ and k̄ (§2.4, §2.5); w̄ and δ̄ (§2.2)
      if (warp == 0) {  // loads first, the two independent reductions together, the store last
        float cgj[KPL], gwr[KPL], khv[KPL], gav[KPL], sv[KPL], gsv[KPL], uhv[KPL];
#pragma unroll
        for (int x = 0; x < KPL; ++x) {
          const int j = lane + 32 * x;
          gwr[x] = sm[Lo::O_GW + j], khv[x] = rb[Lo::R_KH + j], gav[x] = sm[Lo::O_GALPHA + j];
          sv[x] = rb[Lo::R_S + j], gsv[x] = sm[Lo::O_GSV + j], uhv[x] = rb[Lo::R_UH + j];
          cgj[x] = 0.f;
#pragma unroll
          for (int q = 0; q < NSLOT; ++q) cgj[x] += colp[q * DK + j];
        }
        float gkh[KPL], two[2] = {0.f, 0.f};  // k̂ᵀk̂̄, ᾱᵀs
#pragma unroll
        for (int x = 0; x < KPL; ++x) {
          gkh[x] = wrote ? gwr[x] - cgj[x] : 0.f;
          two[0] = fmaf(khv[x], gkh[x], two[0]);
          two[1] = fmaf(gav[x], sv[x], two[1]);
        }
        group_sum_n<32>(two);
        const float kd = two[0];
#pragma unroll
        for (int x = 0; x < KPL; ++x)
          if (kf != 0.f) gk[x] += kf * (gkh[x] - khv[x] * kd);
        if (uf != 0.f) {
          const float sd = sqrtf(del), rdel = 1.f / del;
          const float kw = sd * sc[Lo::kKs], gw_dot = sd * two[1];  // k̂ᵀw, ᾱᵀw
          float hw[KPL], swh = 0.f;
#pragma unroll
          for (int x = 0; x < KPL; ++x) {  // Ḡ_mid w, Ḡ_mid = Ḡ + sym(ᾱ k̂ᵀ)
            hw[x] = sd * gsv[x] + 0.5f * (gav[x] * kw + khv[x] * gw_dot);
            wv[x] = sd * sv[x];
            swh = fmaf(wv[x], hw[x], swh);
          }
          swh = group_sum<32>(swh);
          const float gdel = (swh * rdel) * rdel;
          gdt = sc[Lo::kClamp] != 0.f ? 0.f : gdel;  // the clamp binds: no gradient through δ
#pragma unroll
          for (int x = 0; x < KPL; ++x) sm[Lo::O_GW2 + lane + 32 * x] = -2.f * hw[x] * rdel + gdt * uhv[x];
        } else {
#pragma unroll
          for (int x = 0; x < KPL; ++x) sm[Lo::O_GW2 + lane + 32 * x] = 0.f, wv[x] = 0.f;
          gdt = 0.f;
        }
        if (bp.dk) {
#pragma unroll
          for (int x = 0; x < KPL; ++x) bp.dk[(tok * H + h) * DK + lane + 32 * x] = from_float<In>(gk[x]);
        }
      }
      VLA_BW_MARK(15);
      __syncthreads();  // B4
      VLA_BW_MARK(16);
      // P3: A = A₂ − ε_refresh·I + s sᵀ (kept, written after B0), A w̄ (rows); Ḡ += sym(ᾱ k̂ᵀ + w̄ ûᵀ)
      {
        const float er = sc[Lo::kEpsR];
        float sj[4], khj[4], uhj[4], gaj[4], gwj[4], red[Lo::RA];
        unpack4(ld4(rb + Lo::R_S + j0), sj);
        unpack4(ld4(rb + Lo::R_KH + j0), khj);
        unpack4(ld4(rb + Lo::R_UH + j0), uhj);
        unpack4(ld4(sm + Lo::O_GALPHA + j0), gaj);
        unpack4(ld4(sm + Lo::O_GW2 + j0), gwj);
#pragma unroll
        for (int r = 0; r < Lo::RA; ++r) {
          const int i = slot + NSLOT * r;
          float gu = 0.f;
          if (!row_a) {
#pragma unroll
            for (int x = 0; x < 4; ++x) apre[r][x] = 0.f;
            red[r] = 0.f;
            continue;
          }
          const float si = rb[Lo::R_S + i], gai = sm[Lo::O_GALPHA + i], khi = rb[Lo::R_KH + i];
          const float gwi = sm[Lo::O_GW2 + i], uhi = rb[Lo::R_UH + i];
#pragma unroll
          for (int x = 0; x < 4; ++x) {
            const int j = j0 + x;
            float a = a_at<P>(M, i, j);
            if (j == i) a -= er;
            a = fmaf(si, sj[x], a);
            apre[r][x] = a;
            gu = fmaf(a, gwj[x], gu);
            if (j <= i) {
              const float upd = 0.5f * ((gai * khj[x] + khi * gaj[x]) + (gwi * uhj[x] + uhi * gwj[x]));
              float* const dst = j == i ? gd + i : M + i * P + j;
              *dst += upd;
            }
          }
          red[r] = gu;
        }
        group_sum_n<LPR>(red);
        if (row_lead) {
#pragma unroll
          for (int r = 0; r < Lo::RA; ++r)
            if (row_a) sm[Lo::O_GUHP + slot + NSLOT * r] = red[r];
        }
        pending = tau > 0;  // the last step's roll-back is not needed: the next segment loads its checkpoint
      }
      VLA_BW_MARK(17);
      cp_async_wait_all();
      __syncthreads();  // B5: Ā's rows (A w̄) and Ḡ's update done
      VLA_BW_MARK(18);
      // V3 (warp 0): û̄ = δ̃̄ w + A w̄, ū (§2.1)
      if (warp == 0) {
        float guh[KPL], nd = 0.f;
#pragma unroll
        for (int x = 0; x < KPL; ++x) {
          const int j = lane + 32 * x;
          guh[x] = uf != 0.f ? gdt * wv[x] + sm[Lo::O_GUHP + j] : 0.f;
          nd = fmaf(rb[Lo::R_UH + j], guh[x], nd);
        }
        nd = group_sum<32>(nd) / c2;
#pragma unroll
        for (int x = 0; x < KPL; ++x) {
          const int j = lane + 32 * x;
          if (bp.du) bp.du[(tok * H + h) * DK + j] = from_float<In>(uf != 0.f ? uf * (guh[x] - rb[Lo::R_UH + j] * nd) : 0.f);
        }
      }
      VLA_BW_MARK(19);
    }
  }
  __syncthreads();
  // ---- ∂L/∂(initial state): Ḡ (both triangles), S̄, z̄
  if (bp.dA0) {
    for (int idx = tid; idx < DK * DK; idx += Lo::NT) {
      const int i = idx / DK, j = idx % DK;
      bp.dA0[pair * DK * DK + idx] = g_at<P>(M, gd, i, j);
    }
  }
  if (bp.dS0) {
    if constexpr (Lo::REG_S) {
#pragma unroll
      for (int r = 0; r < Lo::RS; ++r) {  // scalar stores: dS0 need not be 16-byte aligned
        float* d = bp.dS0 + pair * DV * DK + (slot + NSLOT * r) * DK + j0;
        d[0] = gsreg[r].x, d[1] = gsreg[r].y, d[2] = gsreg[r].z, d[3] = gsreg[r].w;
      }
    } else {
      for (int idx = tid; idx < DV * DK; idx += Lo::NT) bp.dS0[pair * DV * DK + idx] = gS[idx];
    }
  }
  if (bp.dz0 && warp == 0) {
#pragma unroll
    for (int x = 0; x < KPL; ++x) bp.dz0[pair * DK + lane + 32 * x] = gz[x];
  }
#ifdef VLA_BACKWARD_PROFILE
  if (bp.prof && (tid == 0 || tid == 32))
#pragma unroll
    for (int k = 0; k < kProfPhases; ++k) bp.prof[(pair * 2 + tid / 32) * kProfPhases + k] = prof_acc[k];
#endif
}
#undef VLA_BW_MARK

}  // namespace detail
}  // namespace cuda
}  // namespace vla
