// tests/cuda/reference.hpp — the float64 CPU reference for the CUDA tests, behind a plain interface
// (compiled once, by the host compiler, in reference.cpp: the CUDA test files never see Eigen).
#pragma once

#include <cstdint>
#include <vector>

#include <vla/config.hpp>

namespace vtest {

enum class OpId { Vla, LinearAttention, DeltaNet };

/// Token inputs of one case, as floats already rounded to the token type (what both sides see).
/// Layout as vla/layout.hpp: [tokens, H, D]; beta [tokens, H].
struct Tokens {
  std::vector<float> q, k, v, u, beta;
};

/// One state set (count = N·H entries) in float, layout as vla/layout.hpp.
struct HostState {
  std::vector<float> A, S, z;
  std::vector<std::int64_t> steps;
  void resize(std::int64_t count, std::int64_t dk, std::int64_t dv) {
    A.assign(count * dk * dk, 0.f);
    S.assign(count * dv * dk, 0.f);
    z.assign(count * dk, 0.f);
    steps.assign(count, 0);
  }
};

/// The float64 results of the CPU backend.
struct Reference {
  std::vector<double> o, A, S, z;
  std::vector<std::int64_t> steps;
};

/// The CPU backend in double on the given tokens (fixed-length when cu is null, else varlen with
/// host cu_seqlens), from `init` (float, converted exactly) or the fresh state.
Reference cpu_reference(OpId op, const Tokens& t, std::int64_t batch, std::int64_t seq_len, const std::int64_t* cu,
                        std::int64_t heads, std::int64_t dk, std::int64_t dv, const vla::Config& cfg,
                        const HostState* init);

/// The float64 gradients of the CPU backend's VLA backward (vla::backward<backend::Cpu, op::Vla>).
struct GradReference {
  std::vector<double> dq, dk, dv, du, dA, dS, dz;
};

/// The CPU backward in double on the given tokens and output gradient d_o ([tokens, H, dv]), from
/// `init` (or the fresh state), with `d_final` (float, converted exactly) as the gradient arriving
/// at the final state, or none.
GradReference cpu_backward_reference(const Tokens& t, const std::vector<float>& d_o, std::int64_t batch,
                                     std::int64_t seq_len, const std::int64_t* cu, std::int64_t heads, std::int64_t dk,
                                     std::int64_t dv, const vla::Config& cfg, const HostState* init,
                                     const HostState* d_final);

/// A valid, non-trivial state for `count` (sequence, head) entries: `warm` random steps of the op
/// in double from the fresh state, rounded to float (A kept exactly symmetric).
HostState warm_state(OpId op, std::int64_t count, std::int64_t dk, std::int64_t dv, const vla::Config& cfg, int warm,
                     std::uint64_t seed);

}  // namespace vtest
