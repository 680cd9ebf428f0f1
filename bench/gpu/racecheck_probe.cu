// bench/gpu/racecheck_probe.cu — the A-warp → S-warp hand-overs of the VLA forward kernels
// (recurrent_kernel.cuh; chunked_kernel.cuh, `probe_chunked` below) reduced to their barriers and
// shared buffers, for compute-sanitizer racecheck and synccheck (bench/gpu/sanitize_gpu.sh). Not
// part of the library.
//
// Per chunk `it`, the NA "A warps" pass a named barrier (bar.sync 1, 32·NA) once per token and
// after each, lane 0 of every A warp writes its entry of part[it % RING][token][warp]; the NS
// "S warps" read all of part[(it − 1) % RING] (the previous chunk) and then pass three named
// barriers of their own (bar.sync 2, 32·NS), as the kernel's chunk preparation does; every warp
// passes __syncthreads at the end of the iteration. Exactly the kernel's protocol: a buffer is
// written in iteration it, read in iteration it + 1 and rewritten in iteration it + RING. The
// readers also check every value (chunk, token, warp) they read, so a buffer rewritten before it
// was read would show up as a mismatch count, not only as a racecheck report.
//
// The configurations: the kernel's (16 A warps first, 4 S warps, ring 2: dk = 128, dv = 32), the
// same with the S warps first, with a ring of 3, and with 8 A warps (dk = 64); then the chunked
// kernel's protocol piece by piece (see probe_chunked).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "vla/cuda/detail/device_util.cuh"

namespace {

using vla::cuda::detail::cp_async16;
using vla::cuda::detail::cp_async_commit;
using vla::cuda::detail::cp_async_wait_all;

/// Runs one probe: clears the mismatch counter, calls launch(d), reads the counter back and prints
/// the probe's line. 0 = ran and read no wrong value.
template <class Launch>
int report(const char* name, unsigned* d, Launch&& launch) {
  cudaMemset(d, 0, sizeof(unsigned));
  launch(d);
  unsigned h = 0;
  const cudaError_t e = cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost);
  std::printf("probe %-44s %s, values read wrong: %u\n", name, e == cudaSuccess ? "ran" : cudaGetErrorString(e), h);
  return e == cudaSuccess && h == 0 ? 0 : 1;
}

template <int NA, int NS, bool AFirst, int RING>
__global__ void probe(int nchunks, unsigned* mismatches) {
  constexpr int C = 16;
  __shared__ float4 part[RING][C][NA];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool is_a = AFirst ? warp < NA : warp >= NS;
  const int aw = AFirst ? warp : warp - NS;
  unsigned bad = 0;
  if (!is_a) {  // the kernel's prologue: the S warps prepare chunk 0 (two barriers of their own)
    asm volatile("bar.sync 2, %0;\n" ::"r"(32 * NS) : "memory");
    asm volatile("bar.sync 2, %0;\n" ::"r"(32 * NS) : "memory");
  }
  __syncthreads();
  for (int it = 0; it < nchunks + 1; ++it) {
    if (is_a) {
      if (it < nchunks)
        for (int tau = 0; tau < C; ++tau) {
          asm volatile("bar.sync 1, %0;\n" ::"r"(32 * NA) : "memory");
          if (lane == 0) part[it % RING][tau][aw] = make_float4(float(it), float(tau), float(aw), 0.f);
        }
    } else {
      if (it >= 1)
        for (int tau = 0; tau < C; ++tau)
          for (int w = 0; w < NA; ++w) {
            const float4 v = part[(it - 1) % RING][tau][w];
            bad += (v.x != float(it - 1) || v.y != float(tau) || v.z != float(w));
          }
      if (it + 1 < nchunks)
        for (int b = 0; b < 3; ++b) asm volatile("bar.sync 2, %0;\n" ::"r"(32 * NS) : "memory");
    }
    __syncthreads();
  }
  if (bad) atomicAdd(mismatches, bad);
}

/// The chunked kernel's hand-over (chunked_kernel.cuh, P3–P7), reduced the same way: 8 A warps and 8
/// S warps. Per chunk the A warps (optionally) stage 16 B a thread with cp.async, wait for it and
/// pass barrier 1; with Sub, warps 0–5 then pass barrier 3 (192 threads) four times, exchanging rows
/// of a scratch tile as the blocked LDLᵀ does, while warps 6–7 write a buffer of their own; barrier 1;
/// "P6": every A warp writes rows of the ring slot that another warp owns; barrier 1; "P7": each warp
/// reads its own rows, checks them and rewrites them; then the hand-over. The S warps read the
/// previous chunk's slot, check it, and pass barrier 2 three times. Every value read is checked.
/// The hand-over (Hand): 0 = `__syncthreads` after both roles' branches (converged, one PC);
/// 1 = `__syncthreads` in a __noinline__ function that each role calls from its own branch (the
/// kernel before 2026-12-03); 2 = `bar.sync 4, 512` (barrier.sync.aligned) from each role's branch;
/// 3 = `barrier.sync 4, 512` (not .aligned) from each role's branch (chunk_handover now).
__device__ __noinline__ void probe_handover() { __syncthreads(); }

template <bool Sub, bool Cpa, int Hand>
__global__ void probe_chunked(int nchunks, const float4* src, unsigned* mismatches) {
  constexpr int NA = 8, C = 32, D = 64, J = C / NA;
  __shared__ float ring[2][C][D];
  __shared__ float scratch[C][8];
  __shared__ float prep[64][4];
  __shared__ float4 stage[2][NA * 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tid = threadIdx.x;
  auto val = [](int it, int r, int col, int pass) { return float(((it * C + r) * D + col) * 2 + pass); };
  auto handover = [] {  // from inside a role's branch (Hand 1, 2)
    if (Hand == 1) probe_handover();
    if (Hand == 2) asm volatile("bar.sync 4, 512;\n" ::: "memory");
    if (Hand == 3) asm volatile("barrier.sync 4, 512;\n" ::: "memory");
  };
  unsigned bad = 0;
  for (int it = 0; it < nchunks + 1; ++it) {
    if (warp < NA) {
      if (it < nchunks) {
        const int slot = it & 1;
        if (Cpa) {
          cp_async16(&stage[slot][tid], src + it * NA * 32 + tid);
          cp_async_commit();
          cp_async_wait_all();
        }
        asm volatile("bar.sync 1, 256;\n" ::: "memory");
        if (Cpa) {
          const float4 v = stage[slot][(tid + 37) % (NA * 32)];
          bad += v.x != float(it * NA * 32 + (tid + 37) % (NA * 32));
        }
        if (Sub) {
          if (warp < 6) {
            for (int kb = 0; kb < 4; ++kb) {
              if (warp == 0 && lane < 8) scratch[8 * kb + lane][kb] = float(it * 100 + kb);
              asm volatile("bar.sync 3, 192;\n" ::: "memory");
              if (warp > 0 && lane < 8) bad += scratch[8 * kb + lane][kb] != float(it * 100 + kb);
              asm volatile("bar.sync 3, 192;\n" ::: "memory");
            }
          } else {
            prep[(warp - 6) * 32 + lane][it & 3] = float(it);
          }
        }
        asm volatile("bar.sync 1, 256;\n" ::: "memory");
        for (int r = (warp + 1) % NA; r < C; r += NA)  // rows another warp owns (row r is warp r / J's)
          for (int col = lane; col < D; col += 32) ring[slot][r][col] = val(it, r, col, 0);
        asm volatile("bar.sync 1, 256;\n" ::: "memory");
        for (int r = warp * J; r < warp * J + J; ++r)
          for (int col = lane; col < D; col += 32) {
            bad += ring[slot][r][col] != val(it, r, col, 0);
            ring[slot][r][col] = val(it, r, col, 1);
          }
      }
      handover();
    } else {
      if (it >= 1) {
        const int slot = (it - 1) & 1, st = tid - 32 * NA;
        for (int e = st; e < C * D; e += 256) bad += ring[slot][e / D][e % D] != val(it - 1, e / D, e % D, 1);
        for (int b = 0; b < 3; ++b) asm volatile("bar.sync 2, 256;\n" ::: "memory");
      }
      handover();
    }
    if (Hand == 0) __syncthreads();
  }
  if (bad) atomicAdd(mismatches, bad);
}

template <bool Sub, bool Cpa, int Hand>
int run_chunked(const char* name, const float4* src, unsigned* d) {
  return report(name, d, [&](unsigned* m) { probe_chunked<Sub, Cpa, Hand><<<2, 512>>>(7, src, m); });
}

/// The smallest case of the chunked kernel's P6 → P7 pattern: in a CTA of 4 warps, warp 0 writes a
/// buffer, warps 0–1 pass a barrier, warp 1 reads it all (then, after a __syncwarp, writes it
/// back), the barrier again, warp 0 reads it. Barrier (Bar): 0 = `__syncthreads` (all four warps);
/// 1 = `bar.sync 1, 64` (warps 0–1 only); 2 = `barrier.sync 1, 64`. With Other, warps 2–3 meanwhile
/// pass a barrier of their own (`bar.sync 2, 64`) three times per round and touch no shared memory
/// — what the chunked kernel's S warps do beside the A warps. By the PTX memory model a barrier
/// orders the accesses of the threads that take part in it, and barriers of other IDs are
/// independent of it, so all six variants are race-free.
template <int Bar, bool Other>
__global__ void probe_partial(int rounds, unsigned* mismatches) {
  __shared__ float buf[64];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  auto sync = [&] {
    if (Bar == 0) __syncthreads();
    if (Bar == 1 && warp < 2) asm volatile("bar.sync 1, 64;\n" ::: "memory");
    if (Bar == 2 && warp < 2) asm volatile("barrier.sync 1, 64;\n" ::: "memory");
    if (Other && Bar != 0 && warp >= 2)
      for (int b = 0; b < 3; ++b) asm volatile("bar.sync 2, 64;\n" ::: "memory");
  };
  unsigned bad = 0;
  for (int it = 0; it < rounds; ++it) {
    if (Other && Bar == 0 && warp >= 2)
      for (int b = 0; b < 3; ++b) asm volatile("bar.sync 2, 64;\n" ::: "memory");
    if (warp == 0) buf[lane] = float(it), buf[lane + 32] = float(it) + 0.5f;
    sync();
    if (warp == 1) {
      for (int i = 0; i < 64; ++i) bad += buf[i] != float(it) + (i >= 32 ? 0.5f : 0.f);
      __syncwarp();
      buf[lane] = -float(it), buf[lane + 32] = -float(it);
    }
    sync();
    if (warp == 0) bad += (buf[lane] != -float(it)) + (buf[lane + 32] != -float(it));
    sync();
  }
  if (bad) atomicAdd(mismatches, bad);
}

template <int Bar, bool Other>
int run_partial(const char* name, unsigned* d) {
  return report(name, d, [&](unsigned* m) { probe_partial<Bar, Other><<<1, 128>>>(3, m); });
}

/// The chunked kernel's P6 → P7 → S-warp read in four warps: warp 0 writes a buffer; warps 0–1 pass
/// barrier Bar (0 = `__syncthreads` of all four, 1 = `bar.sync 1, 64`, 2 = `barrier.sync 1, 64`);
/// warp 1 reads it and rewrites it; then `__syncthreads` (all four); warp 2 reads it; then
/// `__syncthreads`. Every pair of accesses to the buffer is ordered by a barrier both threads take
/// part in (PTX memory model), in all three variants. (Written 2026-12-03 to tell the chunked
/// probe's report apart; not yet run on a device: that session's device time ran out.)
template <int Bar>
__global__ void probe_handoff(int rounds, unsigned* mismatches) {
  __shared__ float buf[64];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  unsigned bad = 0;
  for (int it = 0; it < rounds; ++it) {
    if (warp == 0) buf[lane] = float(it), buf[lane + 32] = float(it) + 0.5f;
    if (Bar == 0) __syncthreads();
    if (Bar == 1 && warp < 2) asm volatile("bar.sync 1, 64;\n" ::: "memory");
    if (Bar == 2 && warp < 2) asm volatile("barrier.sync 1, 64;\n" ::: "memory");
    if (warp == 1) {
      for (int i = 0; i < 64; ++i) bad += buf[i] != float(it) + (i >= 32 ? 0.5f : 0.f);
      __syncwarp();
      buf[lane] = -float(it), buf[lane + 32] = -float(it) - 0.5f;
    }
    __syncthreads();
    if (warp == 2)
      for (int i = 0; i < 64; ++i) bad += buf[i] != -float(it) - (i >= 32 ? 0.5f : 0.f);
    __syncthreads();
  }
  if (bad) atomicAdd(mismatches, bad);
}

template <int Bar>
int run_handoff(const char* name, unsigned* d) {
  return report(name, d, [&](unsigned* m) { probe_handoff<Bar><<<1, 128>>>(3, m); });
}

/// The two roles of the chunked kernel in four warps: warps 0–1 ("A") on a named barrier of their
/// own (barrier 1, 64 threads), warps 2–3 ("S") on theirs (barrier 2, 64 threads, three times per
/// round, as the S warps pass theirs), and between them a barrier of all four: `__syncthreads`
/// reached converged by all (Cta = 0) or `barrier.sync 4, 128` reached by each role from its own
/// branch (Cta = 1, the kernel's hand-over). Warp 0 writes the buffer; barrier 1; warp 1 reads and
/// rewrites it; the CTA barrier; warp 2 reads it; barrier 2 (×3); the CTA barrier. Every pair of
/// accesses is ordered by a barrier both threads take part in. (Written 2026-12-03 after run 13:
/// the combination no earlier four-warp probe had.)
template <int Cta>
__global__ void probe_roles(int rounds, unsigned* mismatches) {
  __shared__ float buf[64];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  unsigned bad = 0;
  auto cta = [&] {
    if (Cta == 0) __syncthreads();
    else asm volatile("barrier.sync 4, 128;\n" ::: "memory");
  };
  for (int it = 0; it < rounds; ++it) {
    if (warp < 2) {  // the A role
      if (warp == 0) buf[lane] = float(it), buf[lane + 32] = float(it) + 0.5f;
      asm volatile("bar.sync 1, 64;\n" ::: "memory");
      if (warp == 1) {
        for (int i = 0; i < 64; ++i) bad += buf[i] != float(it) + (i >= 32 ? 0.5f : 0.f);
        __syncwarp();
        buf[lane] = -float(it), buf[lane + 32] = -float(it) - 0.5f;
      }
      if (Cta == 1) cta();
    } else {  // the S role
      if (Cta == 1) cta();
    }
    if (Cta == 0) cta();
    if (warp >= 2) {
      if (warp == 2)
        for (int i = 0; i < 64; ++i) bad += buf[i] != -float(it) - (i >= 32 ? 0.5f : 0.f);
      for (int b = 0; b < 3; ++b) asm volatile("bar.sync 2, 64;\n" ::: "memory");
      if (Cta == 1) cta();
    } else {
      if (Cta == 1) cta();
    }
    if (Cta == 0) cta();
  }
  if (bad) atomicAdd(mismatches, bad);
}

template <int Cta>
int run_roles(const char* name, unsigned* d) {
  return report(name, d, [&](unsigned* m) { probe_roles<Cta><<<1, 128>>>(3, m); });
}

template <int NA, int NS, bool AFirst, int RING>
int run(const char* name, unsigned* d) {
  return report(name, d, [&](unsigned* m) { probe<NA, NS, AFirst, RING><<<2, 32 * (NA + NS)>>>(7, m); });
}

}  // namespace

// `vla_racecheck_probe [i]`: every probe, or only the i-th (0-based, in the order below), so that a
// tool's reports can be told apart by probe.
int main(int argc, char** argv) {
  const int only = argc > 1 ? std::atoi(argv[1]) : -1;
  int index = -1;
  auto pick = [&] { return ++index == only || only < 0; };
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device\n");
    return 77;
  }
  unsigned* d = nullptr;
  cudaMalloc(&d, sizeof(unsigned));
  int fails = 0;
  if (pick()) fails += run<16, 4, true, 2>("A16 S4, A warps first, ring 2 (dk=128 dv=32)", d);
  if (pick()) fails += run<16, 4, false, 2>("A16 S4, S warps first, ring 2", d);
  if (pick()) fails += run<16, 4, true, 3>("A16 S4, A warps first, ring 3", d);
  if (pick()) fails += run<8, 4, true, 2>("A8 S4, A warps first, ring 2 (dk=64 dv=32)", d);
  if (pick()) fails += run<8, 16, true, 2>("A8 S16, A warps first, ring 2 (dk=64 dv=128)", d);
  // The chunked kernel's protocol, piece by piece (which of them, if any, the tool reports).
  std::vector<float4> hsrc(8 * 32 * 8);
  for (std::size_t i = 0; i < hsrc.size(); ++i) hsrc[i] = make_float4(float(i), 0.f, 0.f, 0.f);
  float4* src = nullptr;
  cudaMalloc(&src, hsrc.size() * sizeof(float4));
  cudaMemcpy(src, hsrc.data(), hsrc.size() * sizeof(float4), cudaMemcpyHostToDevice);
  if (pick()) fails += run_chunked<false, false, 0>("chunked: ring only", src, d);
  if (pick()) fails += run_chunked<true, false, 0>("chunked: + barrier 3 subgroup", src, d);
  if (pick()) fails += run_chunked<false, true, 0>("chunked: + cp.async stage", src, d);
  if (pick()) fails += run_chunked<false, false, 1>("chunked: + noinline __syncthreads per role", src, d);
  if (pick()) fails += run_chunked<false, false, 2>("chunked: + bar.sync 4 per role", src, d);
  if (pick()) fails += run_chunked<false, false, 3>("chunked: + barrier.sync 4 per role", src, d);
  if (pick()) fails += run_chunked<true, true, 1>("chunked: all, noinline __syncthreads (old)", src, d);
  if (pick()) fails += run_chunked<true, true, 2>("chunked: all, bar.sync 4", src, d);
  if (pick()) fails += run_chunked<true, true, 3>("chunked: all, barrier.sync 4 (the kernel's now)", src, d);
  // The pattern itself, in four warps (probe_partial).
  if (pick()) fails += run_partial<0, false>("partial: __syncthreads", d);
  if (pick()) fails += run_partial<1, false>("partial: bar.sync 1, 64 (warps 0-1)", d);
  if (pick()) fails += run_partial<2, false>("partial: barrier.sync 1, 64 (warps 0-1)", d);
  if (pick()) fails += run_partial<0, true>("partial: __syncthreads; 2-3 on barrier 2", d);
  if (pick()) fails += run_partial<1, true>("partial: bar.sync 1, 64; 2-3 on barrier 2", d);
  if (pick()) fails += run_partial<2, true>("partial: barrier.sync 1, 64; 2-3 on barrier 2", d);
  if (pick()) fails += run_handoff<0>("handoff: __syncthreads, then warp 2 reads", d);
  if (pick()) fails += run_handoff<1>("handoff: bar.sync 1, 64, then warp 2 reads", d);
  if (pick()) fails += run_handoff<2>("handoff: barrier.sync 1, 64, then warp 2 reads", d);
  if (pick()) fails += run_roles<0>("roles: barriers 1 and 2, __syncthreads", d);
  if (pick()) fails += run_roles<1>("roles: barriers 1 and 2, barrier.sync 4 per role", d);
  cudaFree(src);
  cudaFree(d);
  return fails ? 1 : 0;
}
