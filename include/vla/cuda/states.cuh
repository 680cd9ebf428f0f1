// vla/cuda/states.cuh — the recurrent state of many sequences on the GPU, allocated, fresh, and
// copied per (slot, head) to and from the host: the device twin of vla::HostStates (vla/rows.hpp).
//
//   vla::cuda::DeviceStates pool;
//   vla::cuda::Status st = vla::cuda::DeviceStates::create(P, H, dk, dv, cfg, stream, pool);  // fresh
//   d.state = pool.buffers();  d.pool_size = P;  d.state_index = slots;        // decode through it
//   a.initial_state = a.final_state = pool.slots_from(first);                  // prefill slots first..first+B−1
//   st = pool.reset(slot, stream);                                             // a finished sequence's slot
//   st = pool.download(slot, h, host_view, stream);  ...  st = pool.upload(slot, h, host_view, stream);
//
// Every call returns a Status, and nothing throws (as everywhere in vla::cuda). Bad arguments are
// found on the host before anything is written; upload() validates the host state first (finite,
// steps >= 0, A symmetric positive definite, named by slot and head), so a refused state leaves the
// pool as it was. The CUDA forward itself trusts its initial state (checking A on the GPU would cost
// an O(dk³) factorisation per head per call): this is where a state from outside gets checked.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "vla/config.hpp"
#include "vla/layout.hpp"
#include "vla/cuda/decode.cuh"
#include "vla/cuda/status.cuh"

namespace vla {
namespace cuda {

namespace detail {

/// What is wrong with one host state (A dk×dk row-major, S dv×dk, z dk, steps), or "" if nothing:
/// the checks of PenaltyInverse::check_spd (vla/penalty_inverse.hpp: finite, symmetric within
/// 64 ε·max|A|, a positive diagonal, a Cholesky factorisation that succeeds), written without Eigen
/// because CUDA translation units of vla never include it; the factorisation runs in double.
inline std::string state_violation(const float* A, const float* S, const float* z, std::int64_t steps,
                                   std::int64_t dk, std::int64_t dv) {
  auto finite = [](const float* x, std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i)
      if (!std::isfinite(x[i])) return i;
    return std::int64_t(-1);
  };
  if (A) {
    if (const std::int64_t i = finite(A, dk * dk); i >= 0)
      return "A(" + std::to_string(i / dk) + ", " + std::to_string(i % dk) + ") is not finite";
    float scale = 0.f;
    for (std::int64_t i = 0; i < dk * dk; ++i) scale = std::fmax(scale, std::fabs(A[i]));
    const float tol = 64.f * std::numeric_limits<float>::epsilon() * scale;
    for (std::int64_t r = 0; r < dk; ++r)
      for (std::int64_t c = r + 1; c < dk; ++c)
        if (std::fabs(A[r * dk + c] - A[c * dk + r]) > tol)
          return "A is not symmetric (entries (" + std::to_string(r) + ", " + std::to_string(c) + ") and (" +
                 std::to_string(c) + ", " + std::to_string(r) + "))";
    for (std::int64_t r = 0; r < dk; ++r)
      if (!(A[r * dk + r] > 0.f))
        return "A must be positive definite (diagonal entry " + std::to_string(r) + " is <= 0)";
    std::vector<double> L(static_cast<std::size_t>(dk * dk), 0.0);  // A = L Lᵀ, lower triangle
    for (std::int64_t j = 0; j < dk; ++j) {
      double d = A[j * dk + j];
      for (std::int64_t p = 0; p < j; ++p) d -= L[j * dk + p] * L[j * dk + p];
      if (!(d > 0.0)) return "A must be positive definite (its Cholesky factorisation fails at column " +
                             std::to_string(j) + ")";
      const double ljj = std::sqrt(d);
      L[j * dk + j] = ljj;
      for (std::int64_t i = j + 1; i < dk; ++i) {
        double s = A[i * dk + j];
        for (std::int64_t p = 0; p < j; ++p) s -= L[i * dk + p] * L[j * dk + p];
        L[i * dk + j] = s / ljj;
      }
    }
  }
  if (S)
    if (const std::int64_t i = finite(S, dv * dk); i >= 0)
      return "S(" + std::to_string(i / dk) + ", " + std::to_string(i % dk) + ") is not finite";
  if (z)
    if (const std::int64_t i = finite(z, dk); i >= 0) return "z[" + std::to_string(i) + "] is not finite";
  if (steps < 0) return "steps must be >= 0";
  return {};
}

}  // namespace detail

/// The float state of `slots` sequences × `heads` heads on the current device, in the layout of
/// vla/layout.hpp ([slot, head, ...]: A dk×dk, S dv×dk, z dk, steps), owned (cudaMalloc, freed by
/// the destructor; movable, not copyable). Every part is allocated, so one pool serves every op
/// (VLA reads and writes all four; linear attention S and z; DeltaNet S).
class DeviceStates {
 public:
  DeviceStates() = default;
  DeviceStates(const DeviceStates&) = delete;
  DeviceStates& operator=(const DeviceStates&) = delete;
  DeviceStates(DeviceStates&& o) noexcept { swap(o); }
  DeviceStates& operator=(DeviceStates&& o) noexcept {
    DeviceStates tmp(std::move(o));
    swap(tmp);
    return *this;
  }
  ~DeviceStates() { release(); }

  /// Allocates a pool of slots × heads states and makes every one fresh (docs/maths.md §2: A = I/λ0,
  /// S = 0, z = 0, steps = 0), asynchronously on `stream`. On any error `out` is left as it was.
  static Status create(std::int64_t slots, std::int64_t heads, std::int64_t dk, std::int64_t dv, const Config& cfg,
                       cudaStream_t stream, DeviceStates& out) {
    try {
      cfg.validate_for<float>();
    } catch (const std::exception& ex) {
      return Status::invalid(std::string("vla::cuda::DeviceStates: ") + ex.what());
    }
    if (slots < 0 || heads <= 0 || dk <= 0 || dv <= 0)
      return Status::invalid("vla::cuda::DeviceStates: slots must be >= 0 and heads, dk, dv > 0 (got slots = " +
                             std::to_string(slots) + ", heads = " + std::to_string(heads) + ", dk = " +
                             std::to_string(dk) + ", dv = " + std::to_string(dv) + ")");
    DeviceStates p;
    p.slots_ = slots, p.heads_ = heads, p.dk_ = dk, p.dv_ = dv, p.cfg_ = cfg;
    const std::int64_t count = slots * heads;
    if (count > 0) {
      // One allocation; each part starts 256-byte aligned (the kernels need 16).
      const std::size_t a = p.bytes_A(), s = p.bytes_S(), z = p.bytes_z(), t = sizeof(std::int64_t) * count;
      auto up = [](std::size_t b) { return (b + 255) / 256 * 256; };
      cudaError_t e = cudaMalloc(&p.base_, up(a) + up(s) + up(z) + t);
      if (e != cudaSuccess) {
        p.base_ = nullptr;
        return Status::from_cuda(e, "vla::cuda::DeviceStates: allocating the pool");
      }
      char* b = static_cast<char*>(p.base_);
      p.A_ = reinterpret_cast<float*>(b);
      p.S_ = reinterpret_cast<float*>(b + up(a));
      p.z_ = reinterpret_cast<float*>(b + up(a) + up(s));
      p.steps_ = reinterpret_cast<std::int64_t*>(b + up(a) + up(s) + up(z));
      Status st = init_states(p.buffers(), count, dk, dv, cfg, stream);
      if (!st) return st;  // p frees the memory
    }
    out = std::move(p);
    return {};
  }

  bool empty() const { return base_ == nullptr; }
  std::int64_t slots() const { return slots_; }
  std::int64_t heads() const { return heads_; }
  std::int64_t dk() const { return dk_; }
  std::int64_t dv() const { return dv_; }

  /// The whole pool: DecodeArgs::state (with pool_size = slots()), or a forward whose sequence n is slot n.
  StateBuffers<float> buffers() const { return {A_, S_, z_, steps_}; }
  /// Slots first, first + 1, ...: the initial and final state of a forward whose sequence n is slot
  /// first + n (its batch must not run past slots()). Null pointers when `first` is out of range.
  StateBuffers<float> slots_from(std::int64_t first) const {
    if (first < 0 || first >= slots_) return {};
    const std::int64_t p = first * heads_;
    return {A_ + p * dk_ * dk_, S_ + p * dv_ * dk_, z_ + p * dk_, steps_ + p};
  }

  /// Every head of `slot` back to the fresh state (asynchronous on `stream`).
  Status reset(std::int64_t slot, cudaStream_t stream) {
    if (Status st = check_slot("reset", slot, 0); !st) return st;
    return init_states(slots_from(slot), heads_, dk_, dv_, cfg_, stream);
  }

  /// Copies (slot, head) into host memory in vla's layout (A dk·dk, S dv·dk, z dk floats, steps one
  /// int64; a null part is skipped) and waits for `stream`.
  Status download(std::int64_t slot, std::int64_t head, const StateBuffers<float>& host, cudaStream_t stream) const {
    if (Status st = check_slot("download", slot, head); !st) return st;
    const std::int64_t p = slot * heads_ + head;
    cudaError_t e = cudaSuccess;
    auto copy = [&](void* dst, const void* src, std::size_t bytes) {
      if (dst && e == cudaSuccess) e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream);
    };
    copy(host.A, A_ + p * dk_ * dk_, sizeof(float) * dk_ * dk_);
    copy(host.S, S_ + p * dv_ * dk_, sizeof(float) * dv_ * dk_);
    copy(host.z, z_ + p * dk_, sizeof(float) * dk_);
    copy(host.steps, steps_ + p, sizeof(std::int64_t));
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
    return Status::from_cuda(e, "vla::cuda::DeviceStates::download");
  }

  /// Copies a host state (vla's layout, every part given) into (slot, head), after checking it on
  /// the host: finite, steps >= 0, A symmetric positive definite. A refused state changes nothing.
  /// Waits for `stream` (the host buffers may be reused when it returns).
  Status upload(std::int64_t slot, std::int64_t head, const StateBuffers<const float>& host, cudaStream_t stream) {
    if (Status st = check_slot("upload", slot, head); !st) return st;
    if (!host.A || !host.S || !host.z || !host.steps)
      return Status::invalid("vla::cuda::DeviceStates::upload: every part of the state (A, S, z, steps) is required");
    const std::string bad = detail::state_violation(host.A, host.S, host.z, *host.steps, dk_, dv_);
    if (!bad.empty())
      return Status::invalid("vla::cuda::DeviceStates::upload: slot " + std::to_string(slot) + ", head " +
                             std::to_string(head) + ": " + bad);
    const std::int64_t p = slot * heads_ + head;
    cudaError_t e = cudaMemcpyAsync(A_ + p * dk_ * dk_, host.A, sizeof(float) * dk_ * dk_, cudaMemcpyHostToDevice, stream);
    if (e == cudaSuccess)
      e = cudaMemcpyAsync(S_ + p * dv_ * dk_, host.S, sizeof(float) * dv_ * dk_, cudaMemcpyHostToDevice, stream);
    if (e == cudaSuccess) e = cudaMemcpyAsync(z_ + p * dk_, host.z, sizeof(float) * dk_, cudaMemcpyHostToDevice, stream);
    if (e == cudaSuccess)
      e = cudaMemcpyAsync(steps_ + p, host.steps, sizeof(std::int64_t), cudaMemcpyHostToDevice, stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
    return Status::from_cuda(e, "vla::cuda::DeviceStates::upload");
  }

 private:
  Status check_slot(const char* what, std::int64_t slot, std::int64_t head) const {
    if (empty()) return Status::invalid(std::string("vla::cuda::DeviceStates::") + what + ": the pool is empty");
    if (slot < 0 || slot >= slots_ || head < 0 || head >= heads_)
      return Status::invalid(std::string("vla::cuda::DeviceStates::") + what + ": slot " + std::to_string(slot) +
                             ", head " + std::to_string(head) + " is out of range (" + std::to_string(slots_) +
                             " slots × " + std::to_string(heads_) + " heads)");
    return {};
  }
  std::size_t bytes_A() const { return sizeof(float) * std::size_t(slots_ * heads_ * dk_ * dk_); }
  std::size_t bytes_S() const { return sizeof(float) * std::size_t(slots_ * heads_ * dv_ * dk_); }
  std::size_t bytes_z() const { return sizeof(float) * std::size_t(slots_ * heads_ * dk_); }
  void release() {
    if (base_) cudaFree(base_);
    base_ = nullptr;
  }
  void swap(DeviceStates& o) noexcept {
    std::swap(base_, o.base_), std::swap(A_, o.A_), std::swap(S_, o.S_), std::swap(z_, o.z_);
    std::swap(steps_, o.steps_), std::swap(slots_, o.slots_), std::swap(heads_, o.heads_);
    std::swap(dk_, o.dk_), std::swap(dv_, o.dv_), std::swap(cfg_, o.cfg_);
  }

  void* base_ = nullptr;
  float* A_ = nullptr;
  float* S_ = nullptr;
  float* z_ = nullptr;
  std::int64_t* steps_ = nullptr;
  std::int64_t slots_ = 0, heads_ = 0, dk_ = 0, dv_ = 0;
  Config cfg_;  // the fresh state's λ0, for reset
};

}  // namespace cuda
}  // namespace vla
