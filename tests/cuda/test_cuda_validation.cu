// Host-side validation of the CUDA entry points: every error is found before any launch and comes
// back as a Status with a message. Needs no GPU: these paths make no CUDA call.
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include <vla/cuda/vla_cuda.cuh>

extern const bool vla_cuda_test_needs_gpu = VLA_TEST_NEEDS_GPU;

namespace {

// Fake, 16-byte-aligned device addresses: validation must reject before dereferencing anything.
template <class T>
T* fake(std::uintptr_t slot) {
  return reinterpret_cast<T*>(0x10000 + 0x1000 * slot);
}

template <class In>
vla::ForwardArgs<In, float> good_args() {
  vla::ForwardArgs<In, float> a;
  a.batch = 2, a.seq_len = 5, a.heads = 3, a.dk = 64, a.dv = 64;
  a.q = fake<const In>(1), a.k = fake<const In>(2), a.v = fake<const In>(3), a.u = fake<const In>(4);
  a.o = fake<In>(5);
  return a;
}

bool mentions(const vla::cuda::Status& s, const std::string& what) {
  return !s.ok() && s.code == cudaErrorInvalidValue && s.message.find(what) != std::string::npos;
}

}  // namespace

TEST_CASE("cuda validation: unsupported head dims fail loudly", "[cuda][validation]") {
  auto a = good_args<float>();
  a.dk = 48;
  const auto s = vla::forward<vla::backend::Cuda>(a, vla::Config{}, cudaStream_t{});
  INFO(s.message);
  CHECK(mentions(s, "unsupported head dims dk = 48"));
  a.dk = 64, a.dv = 256;
  CHECK(mentions(vla::forward<vla::backend::Cuda>(a, vla::Config{}, cudaStream_t{}), "dv = 256"));
}

TEST_CASE("cuda validation: config and arguments", "[cuda][validation]") {
  auto a = good_args<__nv_bfloat16>();
  vla::Config bad;
  bad.lambda0 = -1;
  CHECK(mentions(vla::forward<vla::backend::Cuda>(a, bad, cudaStream_t{}), "lambda0"));
  vla::Config tiny;  // valid in double, but the floor underflows to 0 in float
  tiny.stab_eps = 1e-50;
  CHECK(mentions(vla::forward<vla::backend::Cuda>(a, tiny, cudaStream_t{}), "stab_eps"));
  auto b = a;
  b.u = nullptr;
  CHECK(mentions(vla::forward<vla::backend::Cuda>(b, vla::Config{}, cudaStream_t{}), "u (the penalty directions)"));
  CHECK(mentions(vla::forward<vla::backend::Cuda, vla::op::DeltaNet>(a, vla::Config{}, cudaStream_t{}), "beta"));
  auto c = a;
  c.heads = 0;
  CHECK(mentions(vla::forward<vla::backend::Cuda>(c, vla::Config{}, cudaStream_t{}), "heads"));
  auto d = a;
  d.final_state.S = fake<float>(9);  // a partial state
  CHECK(mentions(vla::forward<vla::backend::Cuda>(d, vla::Config{}, cudaStream_t{}), "final_state"));
  auto e = a;
  e.q = reinterpret_cast<const __nv_bfloat16*>(reinterpret_cast<std::uintptr_t>(a.q) + 2);
  CHECK(mentions(vla::forward<vla::backend::Cuda>(e, vla::Config{}, cudaStream_t{}), "16-byte aligned"));
  // Null and misaligned device pointers (issue 13's faults): refused by name before any launch.
  auto f = a;
  f.q = nullptr;
  CHECK(mentions(vla::forward<vla::backend::Cuda>(f, vla::Config{}, cudaStream_t{}), "q, k, v and o are required"));
  f = a;
  f.o = nullptr;
  CHECK(mentions(vla::forward<vla::backend::Cuda>(f, vla::Config{}, cudaStream_t{}), "q, k, v and o are required"));
  f = a;
  f.final_state = {fake<float>(9), fake<float>(10), fake<float>(11), fake<std::int64_t>(12)};
  f.final_state.S = reinterpret_cast<float*>(reinterpret_cast<std::uintptr_t>(f.final_state.S) + 4);
  CHECK(mentions(vla::forward<vla::backend::Cuda>(f, vla::Config{}, cudaStream_t{}), "16-byte aligned"));
  f = a;
  f.initial_state = {fake<const float>(9), fake<const float>(10), fake<const float>(11), fake<const std::int64_t>(12)};
  f.initial_state.A = reinterpret_cast<const float*>(reinterpret_cast<std::uintptr_t>(f.initial_state.A) + 8);
  CHECK(mentions(vla::forward<vla::backend::Cuda>(f, vla::Config{}, cudaStream_t{}), "16-byte aligned"));
}

TEST_CASE("cuda validation: cu_seqlens checked on the host", "[cuda][validation]") {
  auto a = good_args<__half>();
  const std::vector<std::int64_t> bad = {0, 4, 3};
  a.batch = 2;
  a.cu_seqlens = fake<const std::int64_t>(7);
  vla::cuda::Options opt;
  opt.host_cu_seqlens = bad.data();
  const auto s = vla::forward<vla::backend::Cuda>(a, vla::Config{}, cudaStream_t{}, opt);
  INFO(s.message);
  CHECK(mentions(s, "non-decreasing"));
  const std::vector<std::int64_t> bad0 = {1, 4, 5};
  opt.host_cu_seqlens = bad0.data();
  CHECK(mentions(vla::forward<vla::backend::Cuda>(a, vla::Config{}, cudaStream_t{}, opt), "cu_seqlens[0]"));
}

TEST_CASE("cuda validation: decode step", "[cuda][validation]") {
  vla::cuda::DecodeArgs<float> d;
  d.batch = 4, d.heads = 2, d.dk = 64, d.dv = 64;
  d.q = fake<const float>(1), d.k = fake<const float>(2), d.v = fake<const float>(3), d.u = fake<const float>(4);
  d.o = fake<float>(5);
  CHECK(mentions(vla::cuda::decode_step<vla::op::Vla>(d, vla::Config{}, cudaStream_t{}), "state"));
  d.state = {fake<float>(6), fake<float>(7), fake<float>(8), fake<std::int64_t>(9)};
  d.pool_size = 2;
  CHECK(mentions(vla::cuda::decode_step<vla::op::Vla>(d, vla::Config{}, cudaStream_t{}), "pool_size"));
  d.pool_size = 0;
  d.state.z = reinterpret_cast<float*>(reinterpret_cast<std::uintptr_t>(d.state.z) + 4);
  CHECK(mentions(vla::cuda::decode_step<vla::op::Vla>(d, vla::Config{}, cudaStream_t{}), "16-byte aligned"));
  d.state.z = fake<float>(8);
  d.q = nullptr;
  CHECK(mentions(vla::cuda::decode_step<vla::op::Vla>(d, vla::Config{}, cudaStream_t{}), "q, k, v and o are required"));
  d.q = fake<const float>(1);
  d.dv = 96;
  CHECK(mentions(vla::cuda::decode_step<vla::op::Vla>(d, vla::Config{}, cudaStream_t{}), "unsupported head dims"));
}

TEST_CASE("cuda validation: an empty batch is a no-op", "[cuda][validation]") {
  auto a = good_args<float>();
  a.batch = 0;
  CHECK(vla::forward<vla::backend::Cuda>(a, vla::Config{}, cudaStream_t{}).ok());
}
