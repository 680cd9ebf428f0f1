// vla/cuda/detail/decode_kernel.cuh — the decode step (T = 1 for many (sequence, head) pairs, the
// state in HBM updated in place): one warp per pair, no barrier wider than a warp.
//
// A decode step moves 2·(dk² + dv·dk) floats per pair (VLA) and does ~12·d² flops on them: it is a
// streaming problem. The earlier kernel stepped each pair with the whole CTA (prepare → A-scan →
// S-scan, CTA barriers between them) and reached 38 % of the copy bandwidth; its profile showed
// warps waiting at barriers while too few bytes were in flight. Here:
//   * Every warp owns one shared-memory slot (A, S, z and the token) and steps whole pairs alone,
//     pairs gridDim·warps apart. It loads a pair's state with the Hopper bulk-copy engine
//     (cp.async.bulk, one instruction per contiguous array, completion on an mbarrier), so a slot
//     costs no load instructions and every slot of the SM is a load in flight while other warps
//     compute. As many warps per CTA as slots fit in the shared memory (6 for VLA at d = 64).
//   * The pair is stepped from shared memory in three passes, each thread on 4 columns (16-byte
//     accesses, a row of 64 floats over 16 lanes): w = A û and y = A k̂ in one pass over A, read
//     as Aᵀû and Aᵀk̂ (A is symmetric: every backend keeps it bit-symmetric, docs/maths.md's A is SPD), which
//     needs no reduction per row; A ← A − s sᵀ (+ r I) written straight to HBM (16-byte stores, one
//     contiguous row per half-warp); then S k̂ and S q, e, S ← S + e α̂ᵀ and the output in one pass
//     over S, S written straight to HBM. The scalar rules are those of vla/detail/rules.hpp.
//   * The slot is refilled (the next pair's bulk copy issued) as soon as the warp has read it.
// Where bulk copies are not available (built for an architecture before sm_90) the warp loads its
// slot with cp.async instead.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "vla/detail/rules.hpp"
#include "vla/cuda/detail/device_util.cuh"
#include "vla/cuda/detail/recurrent_kernel.cuh"

// VLA_CUDA_DECODE_WARP: 1 (default) steps decode pairs with decode_warp_kernel (this file); 0 with
// the CTA-per-pair decode_kernel of recurrent_kernel.cuh (run 4).
#ifndef VLA_CUDA_DECODE_WARP
#define VLA_CUDA_DECODE_WARP 1
#endif

namespace vla {
namespace cuda {
namespace detail {

// ---- mbarrier and bulk copies (sm_90)
__device__ __forceinline__ unsigned smem_u32(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void mbar_init(std::uint64_t* bar, unsigned count) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
/// Arms the barrier for `bytes` of bulk copies (this thread's arrival), sm_90.
__device__ __forceinline__ void mbar_expect_tx(std::uint64_t* bar, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
#endif
}
__device__ __forceinline__ void mbar_wait(std::uint64_t* bar, unsigned phase) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  unsigned done = 0;
  while (!done) {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(smem_u32(bar)), "r"(phase)
        : "memory");
  }
#endif
}
/// Global → shared bulk copy of `bytes` (a multiple of 16, both addresses 16-byte aligned),
/// completing on `bar`; sm_90.
__device__ __forceinline__ void bulk_load(void* dst, const void* src, unsigned bytes, std::uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   smem_u32(dst)),
               "l"(src), "r"(bytes), "r"(smem_u32(bar))
               : "memory");
#endif
}
/// Orders this thread's earlier generic shared-memory accesses before later bulk copies (async proxy).
__device__ __forceinline__ void fence_proxy_async() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

/// One warp's shared memory: the slot (A, S, z, token; bulk-copy targets), then its scratch
/// (k̂, û, s = w/√δ and the outputs, float) and its mbarrier. Offsets in bytes, 16-byte aligned.
template <class Op, class In, int DK, int DV>
struct WarpDecodeLayout {
  static constexpr int NKQ = Op::uses_u ? 3 : 2;
  static constexpr std::size_t r16(std::size_t b) { return (b + 15) / 16 * 16; }
  static constexpr std::size_t A_bytes = Op::uses_A ? 4u * DK * DK : 0;
  static constexpr std::size_t S_bytes = 4u * DV * DK;
  static constexpr std::size_t z_bytes = Op::uses_z ? 4u * DK : 0;
  static constexpr std::size_t off_A = 0, off_S = A_bytes, off_z = off_S + S_bytes;
  static constexpr std::size_t off_q = off_z + z_bytes;  // q, k, (u) [DK] then v [DV], as In
  static constexpr std::size_t off_v = off_q + NKQ * DK * sizeof(In);
  static constexpr std::size_t off_f = r16(off_v + DV * sizeof(In));  // scratch floats: kh, uh, s [DK], o [DV]
  static constexpr std::size_t off_bar = off_f + 4u * (3 * DK + DV);
  static constexpr std::size_t bytes = r16(off_bar + 8);
  /// Bytes a pair's bulk copies bring into the slot.
  static constexpr unsigned tx_bytes = static_cast<unsigned>(A_bytes + S_bytes + z_bytes + (NKQ * DK + DV) * sizeof(In));
  static_assert((DK * sizeof(In)) % 16 == 0 && (DV * sizeof(In)) % 16 == 0, "vla: token rows must be 16-byte pieces");
};

/// The decode step, one warp per (sequence, head) pair; blockDim.x / 32 warps per CTA, each with
/// its own WarpDecodeLayout slot; pairs gridDim.x · warps apart.
template <class Op, class In, int DK, int DV>
__global__ void __launch_bounds__(512, 1) decode_warp_kernel(const RecurrentParams<In> p) {
  using W = WarpDecodeLayout<Op, In, DK, DV>;
  constexpr bool kVla = Op::uses_A;
  constexpr bool kDelta = Op::uses_beta;
  constexpr bool kUnitKey = kVla || kDelta;
  constexpr bool kZ = Op::uses_z;
  constexpr int NKQ = W::NKQ;
  constexpr int NC = DK / 4;      // lanes per row (4 columns each)
  constexpr int RPI = 32 / NC;    // rows per warp instruction
  constexpr int EPV = 16 / sizeof(In);

  extern __shared__ __align__(16) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int nwarps = blockDim.x / 32;
  unsigned char* const base = smem + std::size_t(warp) * W::bytes;
  const float* const As = reinterpret_cast<const float*>(base + W::off_A);
  const float* const Ss = reinterpret_cast<const float*>(base + W::off_S);
  const float* const zs = reinterpret_cast<const float*>(base + W::off_z);
  const In* const tq = reinterpret_cast<const In*>(base + W::off_q);
  const In* const tk = tq + DK;
  const In* const tu = tq + 2 * DK;
  const In* const tv = reinterpret_cast<const In*>(base + W::off_v);
  float* const kh_s = reinterpret_cast<float*>(base + W::off_f);
  float* const uh_s = kh_s + DK;
  float* const s_s = kh_s + 2 * DK;
  float* const o_s = kh_s + 3 * DK;
  std::uint64_t* const bar = reinterpret_cast<std::uint64_t*>(base + W::off_bar);

  const int cs = lane % NC, ro = lane / NC;  // column group (columns 4cs..4cs+3), row offset
  const std::int64_t H = p.heads;
  const std::int64_t stride = std::int64_t(gridDim.x) * nwarps;

  // Slot of a pair's state, or −1 for a padding entry (skipped).
  auto slot_of = [&](std::int64_t pair) -> std::int64_t {
    if (pair >= p.pairs) return -1;
    if (!p.state_index) return pair;
    const std::int64_t sidx = p.state_index[pair / H];
    return (sidx < 0 || sidx >= p.pool_size) ? -1 : sidx * H + pair % H;
  };
  // Issues the loads of pair's state and token into this warp's slot (lane 0 for bulk copies).
  auto issue = [&](std::int64_t pair, std::int64_t slot) {
    const std::int64_t tok = pair / H, h = pair % H;
    const In* srcs[4] = {p.q + (tok * H + h) * DK, p.k + (tok * H + h) * DK,
                         Op::uses_u ? p.u + (tok * H + h) * DK : nullptr, p.v + (tok * H + h) * DV};
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (lane == 0) {
      fence_proxy_async();  // this warp's reads of the slot come before the copies that refill it
      mbar_expect_tx(bar, W::tx_bytes);
      if (kVla) bulk_load(base + W::off_A, p.A0 + slot * DK * DK, static_cast<unsigned>(W::A_bytes), bar);
      bulk_load(base + W::off_S, p.S0 + slot * DV * DK, static_cast<unsigned>(W::S_bytes), bar);
      if (kZ) bulk_load(base + W::off_z, p.z0 + slot * DK, static_cast<unsigned>(W::z_bytes), bar);
      for (int w = 0; w < NKQ; ++w)
        bulk_load(base + W::off_q + w * DK * sizeof(In), srcs[w], static_cast<unsigned>(DK * sizeof(In)), bar);
      bulk_load(base + W::off_v, srcs[3], static_cast<unsigned>(DV * sizeof(In)), bar);
    }
#else
    if (kVla)
      for (int i = lane; i < DK * DK / 4; i += 32) cp_async16(base + W::off_A + 16 * i, p.A0 + slot * DK * DK + 4 * i);
    for (int i = lane; i < DV * DK / 4; i += 32) cp_async16(base + W::off_S + 16 * i, p.S0 + slot * DV * DK + 4 * i);
    if (kZ)
      for (int i = lane; i < DK / 4; i += 32) cp_async16(base + W::off_z + 16 * i, p.z0 + slot * DK + 4 * i);
    for (int w = 0; w < NKQ; ++w)
      for (int i = lane; i < DK / EPV; i += 32) cp_async16(base + W::off_q + w * DK * sizeof(In) + 16 * i, srcs[w] + i * EPV);
    for (int i = lane; i < DV / EPV; i += 32) cp_async16(base + W::off_v + 16 * i, srcs[3] + i * EPV);
    cp_async_commit();
#endif
  };

  if (lane == 0) mbar_init(bar, 1);
  __syncwarp();
  unsigned phase = 0;

  std::int64_t pair = std::int64_t(blockIdx.x) * nwarps + warp;
  std::int64_t slot = slot_of(pair);
  // Scalars of the pair in flight, loaded beside its copies: the step count (VLA) and β (DeltaNet).
  std::int64_t t0 = 0;
  float beta = 0.f;
  if (slot >= 0) {
    issue(pair, slot);
    if (kVla) t0 = p.steps0[slot];
    if (kDelta) beta = to_float(p.beta[pair]);
  }
  while (pair < p.pairs) {
    const std::int64_t next = pair + stride;
    const std::int64_t next_slot = slot_of(next);  // its latency overlaps the wait below
    if (slot >= 0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
      mbar_wait(bar, phase);
      phase ^= 1u;
#else
      cp_async_wait_all();
      __syncwarp();
#endif
      const std::int64_t tok = pair / H, h = pair % H;
      // ---- the token: this lane's 4 columns of q, k (raw), k̂ (or k), û
      float4 q4, k4, kh4, uh4 = make_float4(0.f, 0.f, 0.f, 0.f);
      auto ld_in4 = [&](const In* t) {
        return make_float4(to_float(t[4 * cs]), to_float(t[4 * cs + 1]), to_float(t[4 * cs + 2]), to_float(t[4 * cs + 3]));
      };
      q4 = ld_in4(tq);
      k4 = ld_in4(tk);
      // x̂ = f·x by the shared rules, over the NC lanes of a row (every row group holds all columns)
      auto unit_factor = [&](float4 x, float extra) {
        const float m = group_max<NC>(max_abs4(x));
        const float im = rules::inverse_max<float>(m);
        if (im == 0.f) return 0.f;
        const float a = x.x * im, b = x.y * im, c = x.z * im, d = x.w * im;
        const float ss = group_sum<NC>(a * a + b * b + c * c + d * d);
        return rules::normalize_factor<float>(im, ss, extra);
      };
      if (kUnitKey) {
        const float kf = unit_factor(k4, 1.f);
        kh4 = make_float4(k4.x * kf, k4.y * kf, k4.z * kf, k4.w * kf);
      } else {
        kh4 = k4;
      }
      if (kVla) {
        const float4 u4 = ld_in4(tu);
        const float uf = unit_factor(u4, p.inv_sqrt_dk);
        uh4 = make_float4(u4.x * uf, u4.y * uf, u4.z * uf, u4.w * uf);
      }
      if (ro == 0) {
        st4(kh_s + 4 * cs, kh4);
        if (kVla) st4(uh_s + 4 * cs, uh4);
      }
      // z ← z + k and max(zᵀq, ε) (docs/maths.md §2.6); zqs: zᵀq̃ where zᵀq is not finite (huge q)
      float den = 1.f, zq = 0.f;
      bool zq_ok = true;
      float4 z4 = make_float4(0.f, 0.f, 0.f, 0.f);
      if (kZ) {
        z4 = ld4(zs + 4 * cs);
        z4 = make_float4(z4.x + k4.x, z4.y + k4.y, z4.z + k4.z, z4.w + k4.w);
        if (ro == 0) st4(p.z1 + slot * DK + 4 * cs, z4);
        zq = group_sum<NC>(__fmul_rn(z4.x, q4.x) + __fmul_rn(z4.y, q4.y) + __fmul_rn(z4.z, q4.z) + __fmul_rn(z4.w, q4.w));
        zq_ok = rules::is_finite(zq);
        if (p.normalize) den = rules::output_denominator<float>(zq, p.denom_eps);
      }
      __syncwarp();  // k̂, û visible to the warp

      // ---- VLA: the A-step. w = A û, y = A k̂ (as Aᵀû, Aᵀk̂: A is symmetric), rows in blocks of 4.
      float4 x4 = kh4;  // the write direction: α (VLA, scaled by f below), k̂ (DeltaNet) or k
      float f = 1.f, xq = 0.f;
      if (kVla) {
        const float* uh_all = uh_s;
        const float* kh_all = kh_s;
        float4 w4 = make_float4(0.f, 0.f, 0.f, 0.f), y4 = w4;
        constexpr int NB = DK / (4 * RPI);
#pragma unroll 2
        for (int b = 0; b < NB; ++b) {
          const int r0 = 4 * (b * RPI + ro);
          const float4 U = ld4(uh_all + r0), K = ld4(kh_all + r0);
          const float ur[4] = {U.x, U.y, U.z, U.w}, kr[4] = {K.x, K.y, K.z, K.w};
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const float4 a = ld4(As + (r0 + r) * DK + 4 * cs);
            w4.x = fmaf(a.x, ur[r], w4.x), w4.y = fmaf(a.y, ur[r], w4.y), w4.z = fmaf(a.z, ur[r], w4.z), w4.w = fmaf(a.w, ur[r], w4.w);
            y4.x = fmaf(a.x, kr[r], y4.x), y4.y = fmaf(a.y, kr[r], y4.y), y4.z = fmaf(a.z, kr[r], y4.z), y4.w = fmaf(a.w, kr[r], y4.w);
          }
        }
#pragma unroll
        for (int o = NC; o < 32; o <<= 1) {  // combine the row groups (butterfly: same bits everywhere)
          w4.x += __shfl_xor_sync(0xffffffffu, w4.x, o), w4.y += __shfl_xor_sync(0xffffffffu, w4.y, o);
          w4.z += __shfl_xor_sync(0xffffffffu, w4.z, o), w4.w += __shfl_xor_sync(0xffffffffu, w4.w, o);
          y4.x += __shfl_xor_sync(0xffffffffu, y4.x, o), y4.y += __shfl_xor_sync(0xffffffffu, y4.y, o);
          y4.z += __shfl_xor_sync(0xffffffffu, y4.z, o), y4.w += __shfl_xor_sync(0xffffffffu, y4.w, o);
        }
        const float uw = group_sum<NC>(dot4(uh4, w4, 0.f)), kw = group_sum<NC>(dot4(kh4, w4, 0.f));
        const float delta = rules::sm_denominator<float>(1.f + uw, p.stab_eps);
        const float isd = rsqrtf(delta);
        const float c = kw * isd;  // sᵀk̂ with s = w/√δ
        const float rr = rules::refresh_due(t0, p.refresh_period) ? p.refresh_eps : 0.f;
        const float4 s4 = make_float4(w4.x * isd, w4.y * isd, w4.z * isd, w4.w * isd);
        if (ro == 0) st4(s_s + 4 * cs, s4);
        // α = A_new k̂ = y − s (sᵀk̂) + r k̂, this lane's columns
        float4 al;
        al.x = fmaf(rr, kh4.x, fmaf(-s4.x, c, y4.x));
        al.y = fmaf(rr, kh4.y, fmaf(-s4.y, c, y4.y));
        al.z = fmaf(rr, kh4.z, fmaf(-s4.z, c, y4.z));
        al.w = fmaf(rr, kh4.w, fmaf(-s4.w, c, y4.w));
        __syncwarp();  // s visible
        // A ← A − s sᵀ (+ r I), straight to HBM: fmaf(−s_row, s_col, a) is symmetric in (row, col)
        float* const A1 = p.A1 + slot * DK * DK;
#pragma unroll 2
        for (int b = 0; b < NB; ++b) {
          const int r0 = 4 * (b * RPI + ro);
          const float4 Sr = ld4(s_s + r0);
          const float sr[4] = {Sr.x, Sr.y, Sr.z, Sr.w};
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const int row = r0 + r;
            float4 a = ld4(As + row * DK + 4 * cs);
            a.x = fmaf(-sr[r], s4.x, a.x);
            a.y = fmaf(-sr[r], s4.y, a.y);
            a.z = fmaf(-sr[r], s4.z, a.z);
            a.w = fmaf(-sr[r], s4.w, a.w);
            if (rr != 0.f) {
              if (4 * cs + 0 == row) a.x += rr;
              if (4 * cs + 1 == row) a.y += rr;
              if (4 * cs + 2 == row) a.z += rr;
              if (4 * cs + 3 == row) a.w += rr;
            }
            st4(A1 + row * DK + 4 * cs, a);
          }
        }
        if (lane == 0) p.steps1[slot] = t0 + 1;
        // α̂ = f α (0: α counts as zero) and α̂ᵀq
        const float im = rules::inverse_max<float>(group_max<NC>(max_abs4(al)));
        const float a0 = al.x * im, a1 = al.y * im, a2 = al.z * im, a3 = al.w * im;
        f = im == 0.f ? 0.f : rules::normalize_factor<float>(im, group_sum<NC>(a0 * a0 + a1 * a1 + a2 * a2 + a3 * a3));
        xq = f * group_sum<NC>(dot4(al, q4, 0.f));
        x4 = al;
      } else {
        xq = group_sum<NC>(dot4(kh4, q4, 0.f));  // kᵀq (linear attention) or k̂ᵀq (DeltaNet)
      }

      // ---- the S-step: S k̂, S q, e, S ← S + e xᵀ and the output, one pass, rows in blocks of 4
      float* const S1 = p.S1 + slot * DV * DK;
      constexpr int NBS = DV / (4 * RPI);
#pragma unroll 1  // 4 rows per block give the ILP; code size stays small
      for (int b = 0; b < NBS; ++b) {
        const int r0 = 4 * (b * RPI + ro);
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int row = r0 + r;
          float4 sv = ld4(Ss + row * DK + 4 * cs);
          const float ps = kVla || kDelta ? group_sum<NC>(dot4(sv, kh4, 0.f)) : 0.f;
          const float pq = group_sum<NC>(dot4(sv, q4, 0.f));
          const float vi = to_float(tv[row]);
          // VLA: e = v − S k̂;  DeltaNet: e = β (v − S k̂);  linear attention: e = v
          const float e = kVla ? vi - ps : (kDelta ? (vi - ps) * beta : vi);
          const float ef = kVla ? e * f : e;
          sv.x = fmaf(ef, x4.x, sv.x);
          sv.y = fmaf(ef, x4.y, sv.y);
          sv.z = fmaf(ef, x4.z, sv.z);
          sv.w = fmaf(ef, x4.w, sv.w);
          st4(S1 + row * DK + 4 * cs, sv);
          const float out = fmaf(e, xq, pq);  // S_new q = S q + e (xᵀq)
          float res = kZ ? out / den : out;
          // rare: S q or zᵀq not finite (huge q): docs/maths.md §2.6 from q̃ = q / max|q| (rules::rescaled_output)
          const bool bad = kZ && p.normalize && !(rules::is_finite(out) && zq_ok);
          if (__any_sync(0xffffffffu, bad)) {
            const float mq = group_max<NC>(max_abs4(q4));
            const float4 qs = make_float4(q4.x / mq, q4.y / mq, q4.z / mq, q4.w / mq);
            const float sqs = group_sum<NC>(dot4(sv, qs, 0.f));
            const float zqs = zq_ok ? zq / mq : group_sum<NC>(dot4(z4, qs, 0.f));
            if (bad) res = rules::rescaled_output<float>(sqs, zqs, mq, p.denom_eps);
          }
          if (cs == 0) o_s[row] = res;
        }
      }
      __syncwarp();  // outputs staged; the slot is read
      // ---- the outputs, 16-byte stores
      for (int i = lane; i < DV / EPV; i += 32) store16<In>(p.o + (tok * H + h) * DV + i * EPV, o_s + i * EPV);
    }
    // ---- refill the slot with the next pair
    pair = next;
    slot = next_slot;
    if (slot >= 0) {
      __syncwarp();  // every lane is done with the slot and the scratch
      issue(pair, slot);
      if (kVla) t0 = p.steps0[slot];
      if (kDelta) beta = to_float(p.beta[pair]);
    }
  }
#if !(defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900)
  cp_async_wait_all();
#endif
}

}  // namespace detail
}  // namespace cuda
}  // namespace vla
