// vla/cuda/detail/recurrent_kernel.cuh — the fused recurrent kernel: one CTA per (sequence, head),
// the whole SPEC-2 step fused, the state (A, S, z, t) on chip for the whole sequence.
//
// The three recurrences (VLA, linear attention, DeltaNet) are policies of this one template; the
// derivation and the thread layout are in vla/cuda/README.md. In short:
//   * A (dk×dk) and S (dv×dk) live in registers. Each warp owns RA rows of A and RS rows of S; the
//     LA (LS) consecutive lanes of a row each hold CA (CS) of its columns, as float4 groups.
//   * Tokens are staged through shared memory in chunks of C: cp.async brings chunk c+1 while the
//     steps of chunk c run; at a chunk boundary the input-only work (û, k̂ and their norms, the
//     running key sum z and the normaliser max(zᵀq, ε), the refresh flags) is done for all C
//     tokens at once, in parallel, off the sequential path.
//   * A VLA step has one __syncthreads: the matvecs that read A (A û, A k̂) and S (S k̂, S q) run
//     in one pass over the registers; w = A û and y = A k̂ go to shared memory; after the barrier
//     every row group reduces the few scalars it needs itself (δ, sᵀk̂, ‖α‖, αᵀq), so no second
//     barrier is needed. With s = w/√δ:  α = A_new k̂ = y − s (sᵀk̂) + r k̂ (r: refresh),
//     A ← A − s sᵀ (+ r I), S ← S + e α̂ᵀ, o = (S q + e (α̂ᵀq)) / max(zᵀq, ε).
//   * Linear attention and DeltaNet need no barrier per step at all.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "vla/backend/backend.hpp"
#include "vla/detail/rules.hpp"
#include "vla/cuda/detail/device_util.cuh"

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
  const std::int32_t* state_index = nullptr;  ///< optional: sequence n uses state slot state_index[n]
  std::int64_t pool_size = 0;                 ///< slots in the pool (state_index only)
  float inv_lambda0 = 10.f, stab_eps = 1e-4f, refresh_eps = 1e-3f, denom_eps = 1e-4f, inv_sqrt_dk = 0.125f;
  int refresh_period = 20;
  int normalize = 1;
  int chunk = 64;  ///< tokens per shared-memory chunk
};

/// The thread layout for head dims (DK, DV). NW warps; every warp owns RA rows of A and RS rows
/// of S; a row is spread over LA (LS) consecutive lanes, each holding GA (GS) float4 column groups.
template <int DK, int DV>
struct Geometry {
  static constexpr int NW = (DK >= 64 && (DK == 128 || DV == 128)) ? 16 : 8;
  static constexpr int NT = NW * 32;
  static constexpr int RA = DK / NW, LA = 32 / RA, CA = DK / LA, GA = CA / 4;
  static constexpr int RS = DV / NW, LS = 32 / RS, CS = DK / LS, GS = CS / 4;
  static constexpr bool same_cols = (LA == LS);  // A and S tiles of a thread cover the same columns
  static_assert(DK % NW == 0 && DV % NW == 0, "vla: head dims must be multiples of the warp count");
  static_assert(RA >= 1 && RA <= 32 && 32 % RA == 0 && RS >= 1 && RS <= 32 && 32 % RS == 0,
                "vla: rows per warp must divide 32");
  static_assert(CA % 4 == 0 && CS % 4 == 0 && GA >= 1 && GS >= 1, "vla: columns per lane must be float4 groups");
  static_assert(DK % 32 == 0 && DV % 32 == 0, "vla: head dims must be multiples of 32");
};

/// Shared-memory layout for a chunk of C tokens. Offsets in bytes; every region 16-byte aligned.
template <class Op, class In, int DK, int DV>
struct SmemLayout {
  static constexpr int NKQ = Op::uses_u ? 3 : 2;  // rows of dk per token staged raw: q, k (, u)
  static constexpr int DMAX = DK > DV ? DK : DV;
  int C;
  __host__ __device__ explicit SmemLayout(int c) : C(c) {}
  __host__ __device__ static std::size_t r16(std::size_t b) { return (b + 15) / 16 * 16; }
  __host__ __device__ int c4() const { return (C + 3) / 4 * 4; }
  // raw tokens (In): q[C][DK], k[C][DK], (u[C][DK]), v[C][DV]
  __host__ __device__ std::size_t raw_bytes() const { return r16(std::size_t(C) * (NKQ * DK + DV) * sizeof(In)); }
  // prepared tokens (float): q, k̂ (or k), (û), v, then P/O scratch, den, beta, kq, refresh, w/y
  __host__ __device__ std::size_t off_qf() const { return raw_bytes(); }
  __host__ __device__ std::size_t off_kh() const { return off_qf() + 4 * std::size_t(C) * DK; }
  __host__ __device__ std::size_t off_uh() const { return off_kh() + 4 * std::size_t(C) * DK; }
  __host__ __device__ std::size_t off_vf() const { return off_uh() + (Op::uses_u ? 4 * std::size_t(C) * DK : 0); }
  __host__ __device__ std::size_t off_po() const { return off_vf() + 4 * std::size_t(C) * DV; }
  __host__ __device__ std::size_t off_den() const { return off_po() + 4 * std::size_t(C) * DMAX; }
  __host__ __device__ std::size_t off_beta() const { return off_den() + 4 * std::size_t(c4()); }
  __host__ __device__ std::size_t off_kq() const { return off_beta() + 4 * std::size_t(c4()); }
  __host__ __device__ std::size_t off_rf() const { return off_kq() + 4 * std::size_t(c4()); }
  __host__ __device__ std::size_t off_w() const { return off_rf() + 4 * std::size_t(c4()); }
  __host__ __device__ std::size_t bytes() const { return off_w() + (Op::uses_A ? 4 * 4 * std::size_t(DK) : 0); }
};

/// ŝcale factor f with x̂ = f·x for a vector spread over a warp (N entries per lane), by the
/// shared rules (vla/detail/rules.hpp): 0 when x counts as zero.
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

template <class Op, class In, int DK, int DV>
__global__ void __launch_bounds__(Geometry<DK, DV>::NT, (Geometry<DK, DV>::NT <= 256 ? 2 : 1))
    recurrent_kernel(const RecurrentParams<In> p) {
  using G = Geometry<DK, DV>;
  using L = SmemLayout<Op, In, DK, DV>;
  constexpr int NW = G::NW, NT = G::NT;
  constexpr bool kVla = Op::uses_A;
  constexpr bool kDelta = Op::uses_beta;
  constexpr bool kUnitKey = kVla || kDelta;  // VLA and DeltaNet write along k̂ = k/‖k‖
  constexpr bool kZ = Op::uses_z;
  constexpr int EPV = 16 / sizeof(In);
  constexpr int KPL = DK / 32, VPL = DV / 32;

  extern __shared__ __align__(16) unsigned char smem[];
  const L lay(p.chunk);
  const int C = p.chunk;
  In* const Rq = reinterpret_cast<In*>(smem);
  In* const Rk = Rq + C * DK;
  In* const Ru = Rk + C * DK;                        // VLA only
  In* const Rv = Rq + L::NKQ * C * DK;
  float* const Qf = reinterpret_cast<float*>(smem + lay.off_qf());
  float* const Kh = reinterpret_cast<float*>(smem + lay.off_kh());
  float* const Uh = reinterpret_cast<float*>(smem + lay.off_uh());
  float* const Vf = reinterpret_cast<float*>(smem + lay.off_vf());
  float* const PO = reinterpret_cast<float*>(smem + lay.off_po());
  float* const Den = reinterpret_cast<float*>(smem + lay.off_den());
  float* const Beta = reinterpret_cast<float*>(smem + lay.off_beta());
  float* const KQ = reinterpret_cast<float*>(smem + lay.off_kq());
  float* const Rf = reinterpret_cast<float*>(smem + lay.off_rf());
  float* const Wb = reinterpret_cast<float*>(smem + lay.off_w());  // [2 parities][w, y][DK]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const std::int64_t H = p.heads;
  const std::int64_t pair = blockIdx.x;
  const std::int64_t n = pair / H, h = pair % H;

  std::int64_t bos, len;
  if (p.cu_seqlens) {
    bos = p.cu_seqlens[n];
    len = p.cu_seqlens[n + 1] - bos;
  } else {
    bos = n * p.seq_len;
    len = p.seq_len;
  }
  std::int64_t slot = pair;
  if (p.state_index) {
    const std::int64_t s = p.state_index[n];
    if (s < 0 || s >= p.pool_size) return;  // padding entry: nothing is read or written
    slot = s * H + h;
  }

  // ---- stage a chunk of raw tokens with cp.async (16-byte pieces)
  auto issue_chunk = [&](std::int64_t first, int ntok) {
    constexpr int PK = DK / EPV, PV = DV / EPV, NP = L::NKQ * PK + PV;
    for (int idx = tid; idx < ntok * NP; idx += NT) {
      const int tau = idx / NP, r = idx % NP;
      const std::int64_t tok = bos + first + tau;
      const In* src;
      In* dst;
      if (r < L::NKQ * PK) {
        const int which = r / PK, piece = r % PK;
        const In* base = which == 0 ? p.q : (which == 1 ? p.k : p.u);
        src = base + (tok * H + h) * DK + piece * EPV;
        dst = Rq + which * C * DK + tau * DK + piece * EPV;
      } else {
        const int piece = r - L::NKQ * PK;
        src = p.v + (tok * H + h) * DV + piece * EPV;
        dst = Rv + tau * DV + piece * EPV;
      }
      cp_async16(dst, src);
    }
    cp_async_commit();
  };
  if (len > 0) issue_chunk(0, static_cast<int>(len < C ? len : C));

  // ---- the state, into registers
  const int rowA = warp * G::RA + lane / G::LA, cA = lane % G::LA;
  const int rowS = warp * G::RS + lane / G::LS, cS = lane % G::LS;
  float4 a[kVla ? G::GA : 1];
  float4 s[G::GS];
  std::int64_t t0 = 0;
  const bool has_init = p.S0 != nullptr;
  if (kVla) {
#pragma unroll
    for (int m = 0; m < G::GA; ++m) {
      const int col = 4 * (cA + G::LA * m);
      if (has_init) {
        a[m] = ld4(p.A0 + (slot * DK + rowA) * DK + col);
      } else {
        a[m].x = col + 0 == rowA ? p.inv_lambda0 : 0.f;
        a[m].y = col + 1 == rowA ? p.inv_lambda0 : 0.f;
        a[m].z = col + 2 == rowA ? p.inv_lambda0 : 0.f;
        a[m].w = col + 3 == rowA ? p.inv_lambda0 : 0.f;
      }
    }
    if (has_init) t0 = p.steps0[slot];
  }
#pragma unroll
  for (int m = 0; m < G::GS; ++m) {
    const int col = 4 * (cS + G::LS * m);
    s[m] = has_init ? ld4(p.S0 + (slot * DV + rowS) * DK + col) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  float zj = 0.f;  // z[tid] for tid < DK
  if (kZ && has_init && tid < DK) zj = p.z0[slot * DK + tid];

  int parity = 0;
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
      if (!kVla) {
        kq = group_sum<32>(kq);
        if (lane == 0) KQ[tau] = kq;
      }
      if (kVla) {
        float uv[KPL];
#pragma unroll
        for (int i = 0; i < KPL; ++i) uv[i] = to_float(Ru[tau * DK + lane + 32 * i]);
        const float uf = warp_unit_factor(uv, p.inv_sqrt_dk);
#pragma unroll
        for (int i = 0; i < KPL; ++i) Uh[tau * DK + lane + 32 * i] = uv[i] * uf;
        if (lane == 0) Rf[tau] = rules::refresh_due(t0 + cb + tau, p.refresh_period) ? p.refresh_eps : 0.f;
      }
#pragma unroll
      for (int i = 0; i < VPL; ++i) Vf[tau * DV + lane + 32 * i] = to_float(Rv[tau * DV + lane + 32 * i]);
      if (kDelta && lane == 0) Beta[tau] = to_float(p.beta[(bos + cb + tau) * H + h]);
    }
    // ---- P2: the running key sum z (sequential per column, as the reference) and zⱼ·qⱼ
    if (kZ && tid < DK) {
      for (int tau = 0; tau < ntok; ++tau) {
        zj += to_float(Rk[tau * DK + tid]);
        PO[tau * DK + tid] = zj * to_float(Rq[tau * DK + tid]);
      }
    }
    __syncthreads();  // raw chunk consumed: bring the next one while this one runs
    if (cb + C < len) issue_chunk(cb + C, static_cast<int>(len - cb - C < C ? len - cb - C : C));
    // ---- P3: the output normaliser max(zᵀq, ε) per token
    if (kZ) {
      for (int tau = warp; tau < ntok; tau += NW) {
        float zq = 0.f;
#pragma unroll
        for (int i = 0; i < KPL; ++i) zq += PO[tau * DK + lane + 32 * i];
        zq = group_sum<32>(zq);
        if (lane == 0) Den[tau] = p.normalize ? rules::output_denominator<float>(zq, p.denom_eps) : 1.f;
      }
    }
    __syncthreads();

    // ---- the sequential steps of this chunk
    for (int tau = 0; tau < ntok; ++tau) {
      const float* kh = Kh + tau * DK;
      const float* qf = Qf + tau * DK;
      // S-side column vectors of this thread
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

      if constexpr (kVla) {
        const float* uh = Uh + tau * DK;
        float pw = 0.f, py = 0.f;  // (A û)_i, (A k̂)_i partials
#pragma unroll
        for (int m = 0; m < G::GA; ++m) {
          const int col = 4 * (cA + G::LA * m);
          const float4 U = ld4(uh + col);
          const float4 K = G::same_cols ? KS[m % G::GS] : ld4(kh + col);
          pw += a[m].x * U.x + a[m].y * U.y + a[m].z * U.z + a[m].w * U.w;
          py += a[m].x * K.x + a[m].y * K.y + a[m].z * K.z + a[m].w * K.w;
        }
        pw = group_sum<G::LA>(pw);
        py = group_sum<G::LA>(py);
        ps = group_sum<G::LS>(ps);
        pq = group_sum<G::LS>(pq);
        float* wb = Wb + parity * 2 * DK;
        float* yb = wb + DK;
        if (cA == 0) {
          wb[rowA] = pw;
          yb[rowA] = py;
        }
        const float e = vi - ps;  // e = v − S k̂
        __syncthreads();          // w = A û and y = A k̂ complete (double-buffered: one barrier a step)

        // δ = max(1 + ûᵀw, ε) and sᵀk̂ = k̂ᵀw/√δ, reduced by every row group for itself
        float uw = 0.f, kw = 0.f;
#pragma unroll
        for (int m = 0; m < G::GA; ++m) {
          const int col = 4 * (cA + G::LA * m);
          const float4 W = ld4(wb + col), U = ld4(uh + col), K = ld4(kh + col);
          uw += U.x * W.x + U.y * W.y + U.z * W.z + U.w * W.w;
          kw += K.x * W.x + K.y * W.y + K.z * W.z + K.w * W.w;
        }
        uw = group_sum<G::LA>(uw);
        kw = group_sum<G::LA>(kw);
        const float delta = rules::sm_denominator<float>(1.f + uw, p.stab_eps);
        const float isd = 1.f / sqrtf(delta);
        const float c = kw * isd;  // sᵀk̂ with s = w/√δ
        const float r = Rf[tau];
        const float si = wb[rowA] * isd;
        // α = A_new k̂ = y − s (sᵀk̂) + r k̂ over this thread's columns; and A ← A − s sᵀ (+ r I),
        // where s_i s_j == s_j s_i keeps A exactly symmetric.
        float4 al[G::GA];
        float mx = 0.f, ss = 0.f, aq = 0.f;
#pragma unroll
        for (int m = 0; m < G::GA; ++m) {
          const int col = 4 * (cA + G::LA * m);
          const float4 W = ld4(wb + col), Y = ld4(yb + col), K = ld4(kh + col), Q = ld4(qf + col);
          const float4 sj = make_float4(W.x * isd, W.y * isd, W.z * isd, W.w * isd);
          al[m].x = Y.x - sj.x * c + r * K.x;
          al[m].y = Y.y - sj.y * c + r * K.y;
          al[m].z = Y.z - sj.z * c + r * K.z;
          al[m].w = Y.w - sj.w * c + r * K.w;
          mx = fmaxf(mx, fmaxf(fmaxf(fabsf(al[m].x), fabsf(al[m].y)), fmaxf(fabsf(al[m].z), fabsf(al[m].w))));
          ss += al[m].x * al[m].x + al[m].y * al[m].y + al[m].z * al[m].z + al[m].w * al[m].w;
          aq += al[m].x * Q.x + al[m].y * Q.y + al[m].z * Q.z + al[m].w * Q.w;
          a[m].x -= si * sj.x;
          a[m].y -= si * sj.y;
          a[m].z -= si * sj.z;
          a[m].w -= si * sj.w;
          if (col + 0 == rowA) a[m].x += r;
          if (col + 1 == rowA) a[m].y += r;
          if (col + 2 == rowA) a[m].z += r;
          if (col + 3 == rowA) a[m].w += r;
        }
        mx = group_max<G::LA>(mx);
        ss = group_sum<G::LA>(ss);
        aq = group_sum<G::LA>(aq);
        const float im = rules::inverse_max<float>(mx);
        float scaled = ss * im * im;
        if (im != 0.f && !(ss > 1e-30f && ss < 1e30f)) {  // rare: Σα² under/overflowed; rescale first
          float s2 = 0.f;
#pragma unroll
          for (int m = 0; m < G::GA; ++m) {
            const float x0 = al[m].x * im, x1 = al[m].y * im, x2 = al[m].z * im, x3 = al[m].w * im;
            s2 += x0 * x0 + x1 * x1 + x2 * x2 + x3 * x3;
          }
          scaled = group_sum<G::LA>(s2);
        }
        const float f = rules::normalize_factor<float>(im, scaled);  // α̂ = f α (0: α counts as zero)

        // S ← S + e α̂ᵀ
        const float ef = e * f;
#pragma unroll
        for (int m = 0; m < G::GS; ++m) {
          float4 x;
          if (G::same_cols) {
            x = al[m % G::GA];
          } else {
            const int col = 4 * (cS + G::LS * m);
            const float4 w4 = ld4(wb + col), y4 = ld4(yb + col);
            x.x = y4.x - (w4.x * isd) * c + r * KS[m].x;
            x.y = y4.y - (w4.y * isd) * c + r * KS[m].y;
            x.z = y4.z - (w4.z * isd) * c + r * KS[m].z;
            x.w = y4.w - (w4.w * isd) * c + r * KS[m].w;
          }
          s[m].x += ef * x.x;
          s[m].y += ef * x.y;
          s[m].z += ef * x.z;
          s[m].w += ef * x.w;
        }
        if (cS == 0) PO[tau * DV + rowS] = (pq + e * (f * aq)) / Den[tau];
        parity ^= 1;
      } else {
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
        if (cS == 0) {
          const float o = pq + e * KQ[tau];  // S_new q = S q + e (kᵀq)
          PO[tau * DV + rowS] = kZ ? o / Den[tau] : o;
        }
      }
    }
    __syncthreads();  // this chunk's outputs are complete
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
    if (kVla) {
#pragma unroll
      for (int m = 0; m < G::GA; ++m) st4(p.A1 + (slot * DK + rowA) * DK + 4 * (cA + G::LA * m), a[m]);
      if (tid == 0) p.steps1[slot] = t0 + len;
    }
#pragma unroll
    for (int m = 0; m < G::GS; ++m) st4(p.S1 + (slot * DV + rowS) * DK + 4 * (cS + G::LS * m), s[m]);
    if (kZ && tid < DK) p.z1[slot * DK + tid] = zj;
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace vla
