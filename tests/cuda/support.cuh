// tests/cuda/support.cuh — what the CUDA tests share: device buffers, random inputs rounded to the
// token type, the float64 CPU reference run on the same rounded inputs, and the relative-RMS check.
#pragma once

#include <catch2/catch.hpp>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <vla/cuda/vla_cuda.cuh>

#include "reference.hpp"

/// Read by the shared Catch2 main (gpu_main.cpp): GPU tests skip without a device.
extern const bool vla_cuda_test_needs_gpu = VLA_TEST_NEEDS_GPU;

namespace vtest {

#define VT_CUDA(call)                                                                   \
  do {                                                                                  \
    const cudaError_t e_ = (call);                                                      \
    if (e_ != cudaSuccess) FAIL(#call << " failed: " << cudaGetErrorString(e_));        \
  } while (0)

template <class In>
const char* type_name() {
  if (std::is_same<In, float>::value) return "float";
  if (std::is_same<In, __half>::value) return "half";
  return "bf16";
}
/// Relative-RMS tolerance per token type (stated once): float inputs 1e-5, half/bf16 inputs 1e-2.
template <class In>
double tolerance() {
  return std::is_same<In, float>::value ? 1e-5 : 1e-2;
}

inline float to_f(float x) { return x; }
inline float to_f(__half x) { return __half2float(x); }
inline float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class In>
In from_f(float x);
template <>
inline float from_f<float>(float x) {
  return x;
}
template <>
inline __half from_f<__half>(float x) {
  return __float2half_rn(x);
}
template <>
inline __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

/// A device allocation; poison() fills it with 0xFF bytes (NaN for float, half and bf16).
template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  std::size_t n = 0;
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t count) : n(count) {
    if (n) REQUIRE(cudaMalloc(&ptr, n * sizeof(T)) == cudaSuccess);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr(o.ptr), n(o.n) { o.ptr = nullptr, o.n = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr, o.ptr);
    std::swap(n, o.n);
    return *this;
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  explicit DeviceBuffer(const std::vector<T>& h) : DeviceBuffer(h.size()) { upload(h); }
  void upload(const std::vector<T>& h) {
    REQUIRE(h.size() == n);
    if (n) REQUIRE(cudaMemcpy(ptr, h.data(), n * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    if (n) REQUIRE(cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return h;
  }
  void poison() {
    if (n) REQUIRE(cudaMemset(ptr, 0xFF, n * sizeof(T)) == cudaSuccess);
  }
};

/// Fresh randomness for every run; the seed is printed so a failure can be replayed (VLA_TEST_SEED).
inline std::uint64_t fresh_seed() {
  static std::uint64_t s = [] {
    const char* env = std::getenv("VLA_TEST_SEED");
    const std::uint64_t v = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
    std::printf("[vla cuda tests] seed %llu (set VLA_TEST_SEED to replay)\n", static_cast<unsigned long long>(v));
    return v;
  }();
  return s++;
}

/// q, k: ELU(x)+1 features (positive, as the paper feeds them); v, u: N(0, 1); β ∈ [0.05, 1].
/// `zero_every` > 0 zeroes k of every such token and u of the token after it (defined steps).
template <class In>
Tokens make_tokens(std::int64_t tokens, std::int64_t heads, std::int64_t dk, std::int64_t dv, std::mt19937_64& rng,
                   int zero_every = 0) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> ud(0.05f, 1.f);
  auto phi = [](float x) { return x > 0 ? x + 1.f : std::exp(x); };
  auto rnd = [](float x) { return to_f(from_f<In>(x)); };
  Tokens t;
  t.q.resize(tokens * heads * dk);
  t.k.resize(tokens * heads * dk);
  t.u.resize(tokens * heads * dk);
  t.v.resize(tokens * heads * dv);
  t.beta.resize(tokens * heads);
  for (auto& x : t.q) x = rnd(phi(nd(rng)));
  for (auto& x : t.k) x = rnd(phi(nd(rng)));
  for (auto& x : t.u) x = rnd(nd(rng));
  for (auto& x : t.v) x = rnd(nd(rng));
  for (auto& x : t.beta) x = rnd(ud(rng));
  if (zero_every > 0)
    for (std::int64_t tok = 0; tok < tokens; ++tok)
      for (std::int64_t h = 0; h < heads; ++h) {
        if (tok % zero_every == 3) std::fill_n(&t.k[(tok * heads + h) * dk], dk, 0.f);
        if (tok % zero_every == 4) std::fill_n(&t.u[(tok * heads + h) * dk], dk, 0.f);
      }
  return t;
}

template <class In>
std::vector<In> to_in(const std::vector<float>& x) {
  std::vector<In> r(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) r[i] = from_f<In>(x[i]);
  return r;
}
template <class In>
std::vector<float> to_float(const std::vector<In>& x) {
  std::vector<float> r(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) r[i] = to_f(x[i]);
  return r;
}

struct DeviceState {
  DeviceBuffer<float> A, S, z;
  DeviceBuffer<std::int64_t> steps;
  explicit DeviceState(const HostState& h) : A(h.A), S(h.S), z(h.z), steps(h.steps) {}
  DeviceState(std::int64_t count, std::int64_t dk, std::int64_t dv)
      : A(count * dk * dk), S(count * dv * dk), z(count * dk), steps(count) {}
  void poison() {
    A.poison();
    S.poison();
    z.poison();
    steps.poison();
  }
  vla::StateBuffers<float> buffers() { return {A.ptr, S.ptr, z.ptr, steps.ptr}; }
  vla::StateBuffers<const float> cbuffers() const { return {A.ptr, S.ptr, z.ptr, steps.ptr}; }
  HostState download() const { return {A.download(), S.download(), z.download(), steps.download()}; }
};

template <class Op>
constexpr OpId op_id() {
  return Op::uses_A ? OpId::Vla : (Op::uses_beta ? OpId::DeltaNet : OpId::LinearAttention);
}
template <class Op>
HostState warm_state(std::int64_t count, std::int64_t dk, std::int64_t dv, const vla::Config& cfg, int warm,
                     std::mt19937_64& rng) {
  return vtest::warm_state(op_id<Op>(), count, dk, dv, cfg, warm, rng());
}

/// ‖x − ref‖ / ‖ref‖ (0 when both are 0).
inline double rel_rms(const std::vector<float>& x, const std::vector<double>& ref) {
  REQUIRE(x.size() == ref.size());
  double num = 0, den = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double d = double(x[i]) - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}
inline bool all_finite(const std::vector<float>& x) {
  for (float v : x)
    if (!std::isfinite(v)) return false;
  return true;
}
inline std::size_t count_nonfinite(const std::vector<float>& x) {
  std::size_t c = 0;
  for (float v : x) c += !std::isfinite(v);
  return c;
}

template <class Op>
Reference cpu_reference(const Tokens& t, std::int64_t batch, std::int64_t seq_len, const std::int64_t* cu,
                        std::int64_t heads, std::int64_t dk, std::int64_t dv, const vla::Config& cfg,
                        const HostState* init) {
  return vtest::cpu_reference(op_id<Op>(), t, batch, seq_len, cu, heads, dk, dv, cfg, init);
}

/// The path the checks run when their Options leave it at automatic: the recurrent kernel unless a
/// test says otherwise with PathScope (the chunked tests; one test keeps automatic itself).
inline vla::Path& path_under_test() {
  static vla::Path p = vla::Path::recurrent;
  return p;
}
struct PathScope {
  vla::Path old;
  explicit PathScope(vla::Path p) : old(path_under_test()) { path_under_test() = p; }
  ~PathScope() { path_under_test() = old; }
  PathScope(const PathScope&) = delete;
  PathScope& operator=(const PathScope&) = delete;
};

/// The GPU forward of Op on the same tokens; outputs and final state poisoned first.
struct GpuResult {
  std::vector<float> o;
  HostState fin;
};
template <class Op, class In>
GpuResult gpu_forward(const Tokens& t, std::int64_t batch, std::int64_t seq_len, const std::vector<std::int64_t>* cu,
                      std::int64_t heads, std::int64_t dk, std::int64_t dv, const vla::Config& cfg,
                      const HostState* init, const vla::cuda::Options& opt = {}) {
  DeviceBuffer<In> q(to_in<In>(t.q)), k(to_in<In>(t.k)), v(to_in<In>(t.v)), u(to_in<In>(t.u)),
      beta(to_in<In>(t.beta)), o(t.v.size());
  DeviceBuffer<std::int64_t> dcu;
  const std::int64_t count = batch * heads;
  DeviceState fin(count, dk, dv);
  o.poison();
  fin.poison();
  std::unique_ptr<DeviceState> d0;
  if (init) d0.reset(new DeviceState(*init));
  vla::ForwardArgs<In, float> a;
  a.batch = batch;
  a.seq_len = seq_len;
  a.heads = heads;
  a.dk = dk;
  a.dv = dv;
  if (cu) {
    dcu = DeviceBuffer<std::int64_t>(*cu);
    a.cu_seqlens = dcu.ptr;
  }
  a.q = q.ptr, a.k = k.ptr, a.v = v.ptr, a.o = o.ptr;
  if (Op::uses_u) a.u = u.ptr;
  if (Op::uses_beta) a.beta = beta.ptr;
  auto parts = [](auto b) {
    b.A = Op::uses_A ? b.A : nullptr;
    b.z = Op::uses_z ? b.z : nullptr;
    b.steps = Op::uses_steps ? b.steps : nullptr;
    return b;
  };
  if (d0) a.initial_state = parts(d0->cbuffers());
  a.final_state = parts(fin.buffers());
  vla::cuda::Options o2 = opt;
  if (o2.path == vla::Path::automatic) o2.path = path_under_test();
  const vla::cuda::Status st = vla::forward<vla::backend::Cuda, Op>(a, cfg, cudaStream_t{}, o2);
  INFO(st.message);
  REQUIRE(st.ok());
  VT_CUDA(cudaDeviceSynchronize());
  GpuResult r;
  r.o = to_float(o.download());
  r.fin = fin.download();
  return r;
}

/// Compares a GPU run with the float64 reference: outputs (tolerance per In) and the final state.
template <class Op, class In>
void compare(const GpuResult& g, const Reference& r, const std::string& label, double tol_scale = 1.0) {
  const double tol = tolerance<In>() * tol_scale;
  std::printf("  %-10s %-5s %-34s o %.2e  S %.2e  A %.2e  z %.2e\n", Op::name, type_name<In>(), label.c_str(),
              rel_rms(g.o, r.o), rel_rms(g.fin.S, r.S), Op::uses_A ? rel_rms(g.fin.A, r.A) : 0.0,
              Op::uses_z ? rel_rms(g.fin.z, r.z) : 0.0);
  // The state is float for every In; its tolerance is float's unless the inputs were rounded.
  const double e_o = rel_rms(g.o, r.o);
  INFO(label << " op " << Op::name << ", " << type_name<In>() << ": rel RMS(o) = " << e_o << ", tol " << tol);
  CHECK(count_nonfinite(g.o) == 0);
  CHECK(e_o <= tol);
  const double e_S = rel_rms(g.fin.S, r.S);
  INFO("rel RMS(S_final) = " << e_S);
  CHECK(count_nonfinite(g.fin.S) == 0);
  CHECK(e_S <= tol);
  if (Op::uses_A) {
    const double e_A = rel_rms(g.fin.A, r.A);
    INFO("rel RMS(A_final) = " << e_A);
    CHECK(count_nonfinite(g.fin.A) == 0);
    CHECK(e_A <= tol);
  }
  if (Op::uses_z) {
    const double e_z = rel_rms(g.fin.z, r.z);
    INFO("rel RMS(z_final) = " << e_z);
    CHECK(e_z <= tol);
  }
  if (Op::uses_steps) CHECK(g.fin.steps == r.steps);
}

}  // namespace vtest

namespace vtest {

struct Shape {
  std::int64_t B, T, H, dk, dv;
};
inline std::string label(const Shape& s, const char* extra = "") {
  return "B" + std::to_string(s.B) + " T" + std::to_string(s.T) + " H" + std::to_string(s.H) + " dk" +
         std::to_string(s.dk) + " dv" + std::to_string(s.dv) + extra;
}

/// Fixed-length forward against the float64 reference on fresh random inputs.
template <class Op, class In>
void check_forward(const Shape& s, bool with_init, int zero_every = 0, const vla::Config& cfg = {},
                   double tol_scale = 1.0) {
  std::mt19937_64 rng(fresh_seed());
  const Tokens t = make_tokens<In>(s.B * s.T, s.H, s.dk, s.dv, rng, zero_every);
  HostState init;
  if (with_init) init = warm_state<Op>(s.B * s.H, s.dk, s.dv, cfg, 9, rng);
  const HostState* ip = with_init ? &init : nullptr;
  const GpuResult g = gpu_forward<Op, In>(t, s.B, s.T, nullptr, s.H, s.dk, s.dv, cfg, ip);
  const Reference r = cpu_reference<Op>(t, s.B, s.T, nullptr, s.H, s.dk, s.dv, cfg, ip);
  compare<Op, In>(g, r, label(s, with_init ? " +init" : "") + (zero_every ? " +zeros" : ""), tol_scale);
}

/// Huge finite inputs (docs/maths.md §2.6 for huge q): float tokens with q, k, v scaled by the given factors,
/// so that S q and zᵀq overflow in float; the outputs must stay finite and match the float64
/// reference (vla::rules::rescaled_output, the same rule as the CPU's detail::finish_output).
template <class Op>
void check_huge(const Shape& s, float q_scale, float k_scale, float v_scale, bool with_init = false) {
  const vla::Config cfg;
  std::mt19937_64 rng(fresh_seed());
  Tokens t = make_tokens<float>(s.B * s.T, s.H, s.dk, s.dv, rng);
  for (auto& x : t.q) x *= q_scale;
  for (auto& x : t.k) x *= k_scale;
  for (auto& x : t.v) x *= v_scale;
  HostState init;
  if (with_init) init = warm_state<Op>(s.B * s.H, s.dk, s.dv, cfg, 9, rng);
  const HostState* ip = with_init ? &init : nullptr;
  const GpuResult g = gpu_forward<Op, float>(t, s.B, s.T, nullptr, s.H, s.dk, s.dv, cfg, ip);
  const Reference r = cpu_reference<Op>(t, s.B, s.T, nullptr, s.H, s.dk, s.dv, cfg, ip);
  char extra[96];
  std::snprintf(extra, sizeof extra, " q x%.0e k x%.0e v x%.0e%s", q_scale, k_scale, v_scale, with_init ? " +init" : "");
  compare<Op, float>(g, r, label(s, extra));
}

/// Bitwise equality of two float vectors (NaN-safe); reports the first mismatch.
inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  if (a.size() != b.size()) {
    UNSCOPED_INFO(what << ": sizes differ");
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      UNSCOPED_INFO(what << ": first difference at " << i << ": " << a[i] << " vs " << b[i]);
      return false;
    }
  return true;
}

/// Tokens of sequences [first, first+len) of a [N, T, H, D] or packed layout, as their own buffers.
inline Tokens slice_tokens(const Tokens& t, std::int64_t first, std::int64_t len, std::int64_t H, std::int64_t dk,
                           std::int64_t dv) {
  Tokens r;
  auto cut = [&](const std::vector<float>& x, std::int64_t d) {
    return std::vector<float>(x.begin() + first * H * d, x.begin() + (first + len) * H * d);
  };
  r.q = cut(t.q, dk), r.k = cut(t.k, dk), r.u = cut(t.u, dk), r.v = cut(t.v, dv), r.beta = cut(t.beta, 1);
  return r;
}
/// State entries [first, first+count) of a state set.
inline HostState slice_state(const HostState& s, std::int64_t first, std::int64_t count, std::int64_t dk,
                             std::int64_t dv) {
  HostState r;
  auto cut = [&](const auto& x, std::int64_t per) {
    using V = std::decay_t<decltype(x)>;
    return V(x.begin() + first * per, x.begin() + (first + count) * per);
  };
  r.A = cut(s.A, dk * dk), r.S = cut(s.S, dv * dk), r.z = cut(s.z, dk), r.steps = cut(s.steps, 1);
  return r;
}

/// Varlen forward against (a) the GPU run sequence by sequence (bitwise) and (b) the float64 reference.
template <class Op, class In>
void check_varlen(const std::vector<std::int64_t>& cu, std::int64_t H, std::int64_t dk, std::int64_t dv) {
  const vla::Config cfg;
  std::mt19937_64 rng(fresh_seed());
  const std::int64_t N = static_cast<std::int64_t>(cu.size()) - 1, total = cu.back();
  const Tokens t = make_tokens<In>(total, H, dk, dv, rng);
  const HostState init = warm_state<Op>(N * H, dk, dv, cfg, 5, rng);
  const GpuResult g = gpu_forward<Op, In>(t, N, 0, &cu, H, dk, dv, cfg, &init);
  const Reference r = cpu_reference<Op>(t, N, 0, cu.data(), H, dk, dv, cfg, &init);
  compare<Op, In>(g, r, "varlen N" + std::to_string(N) + " total" + std::to_string(total) + " H" + std::to_string(H));
  // Host-mirrored cu_seqlens: same result, bitwise.
  vla::cuda::Options opt;
  opt.host_cu_seqlens = cu.data();
  const GpuResult g2 = gpu_forward<Op, In>(t, N, 0, &cu, H, dk, dv, cfg, &init, opt);
  CHECK(same_bits(g.o, g2.o, "varlen o (host cu_seqlens)"));
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int64_t len = cu[n + 1] - cu[n];
    const HostState in = slice_state(init, n * H, H, dk, dv);
    INFO("sequence " << n << " (length " << len << ")");
    const HostState fn = slice_state(g.fin, n * H, H, dk, dv);
    if (len == 0) {  // an empty sequence passes its state through untouched
      CHECK(same_bits(fn.S, in.S, "S (empty sequence)"));
      if (Op::uses_A) CHECK(same_bits(fn.A, in.A, "A (empty sequence)"));
      if (Op::uses_z) CHECK(same_bits(fn.z, in.z, "z (empty sequence)"));
      if (Op::uses_steps) CHECK(fn.steps == in.steps);
      continue;
    }
    const GpuResult gn = gpu_forward<Op, In>(slice_tokens(t, cu[n], len, H, dk, dv), 1, len, nullptr, H, dk, dv, cfg, &in);
    const std::vector<float> o_n(g.o.begin() + cu[n] * H * dv, g.o.begin() + cu[n + 1] * H * dv);
    CHECK(same_bits(o_n, gn.o, "o"));
    CHECK(same_bits(fn.S, gn.fin.S, "S"));
    if (Op::uses_A) CHECK(same_bits(fn.A, gn.fin.A, "A"));
    if (Op::uses_z) CHECK(same_bits(fn.z, gn.fin.z, "z"));
    if (Op::uses_steps) CHECK(fn.steps == gn.fin.steps);
  }
}

/// Running T steps at once equals running T1 then T − T1 with the state carried, bit for bit.
template <class Op, class In>
void check_split(const Shape& s, std::int64_t T1) {
  const vla::Config cfg;
  std::mt19937_64 rng(fresh_seed());
  const Tokens t = make_tokens<In>(s.B * s.T, s.H, s.dk, s.dv, rng);
  const std::int64_t T2 = s.T - T1;
  const GpuResult full = gpu_forward<Op, In>(t, s.B, s.T, nullptr, s.H, s.dk, s.dv, cfg, nullptr);
  // Per batch entry b: tokens [b·T, b·T + T1) and [b·T + T1, (b+1)·T).
  Tokens t1, t2;
  for (std::int64_t b = 0; b < s.B; ++b) {
    const Tokens a = slice_tokens(t, b * s.T, T1, s.H, s.dk, s.dv), c = slice_tokens(t, b * s.T + T1, T2, s.H, s.dk, s.dv);
    auto app = [](std::vector<float>& d, const std::vector<float>& x) { d.insert(d.end(), x.begin(), x.end()); };
    app(t1.q, a.q), app(t1.k, a.k), app(t1.u, a.u), app(t1.v, a.v), app(t1.beta, a.beta);
    app(t2.q, c.q), app(t2.k, c.k), app(t2.u, c.u), app(t2.v, c.v), app(t2.beta, c.beta);
  }
  const GpuResult g1 = gpu_forward<Op, In>(t1, s.B, T1, nullptr, s.H, s.dk, s.dv, cfg, nullptr);
  const GpuResult g2 = gpu_forward<Op, In>(t2, s.B, T2, nullptr, s.H, s.dk, s.dv, cfg, &g1.fin);
  std::vector<float> joined;
  const std::int64_t row = s.H * s.dv;
  for (std::int64_t b = 0; b < s.B; ++b) {
    joined.insert(joined.end(), g1.o.begin() + b * T1 * row, g1.o.begin() + (b + 1) * T1 * row);
    joined.insert(joined.end(), g2.o.begin() + b * T2 * row, g2.o.begin() + (b + 1) * T2 * row);
  }
  INFO(label(s) << " split at " << T1);
  CHECK(same_bits(joined, full.o, "o"));
  CHECK(same_bits(g2.fin.S, full.fin.S, "S"));
  if (Op::uses_A) CHECK(same_bits(g2.fin.A, full.fin.A, "A"));
  if (Op::uses_z) CHECK(same_bits(g2.fin.z, full.fin.z, "z"));
  if (Op::uses_steps) CHECK(g2.fin.steps == full.fin.steps);
}

}  // namespace vtest
