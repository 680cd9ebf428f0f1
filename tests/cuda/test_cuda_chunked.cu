// The chunked VLA kernel (docs/maths.md §4, vla/cuda/detail/chunked_kernel.cuh) against the float64
// CPU reference of §2: head dims, token types, odd T, refresh periods (including ones that do not
// divide the chunk), initial states, zero vectors, huge q, varlen, splits on chunk boundaries and
// T = 65,536. Tolerances (relative RMS): float tokens 1e-4, half/bf16 1e-2 (tolerance() × 10 for
// float, × 1 otherwise); the measured figures are printed.
#include "support.cuh"

using vla::op::Vla;
using namespace vtest;

namespace {
template <class In>
double chunked_scale() {
  return std::is_same<In, float>::value ? 10.0 : 1.0;
}
template <class In>
void check_chunked(const Shape& s, bool with_init, int zero_every = 0, const vla::Config& cfg = {}) {
  check_forward<Vla, In>(s, with_init, zero_every, cfg, chunked_scale<In>());
}
}  // namespace

TEST_CASE("chunked: every head-dim pair that fits, float, odd T", "[cuda][chunked]") {
  PathScope path(vla::Path::chunked);
  const std::int64_t dims[] = {32, 64};
  const std::int64_t Ts[] = {1, 63, 77, 200};
  int i = 0;
  for (std::int64_t dk : dims)
    for (std::int64_t dv : dims) {
      check_chunked<float>({1 + i % 2, Ts[i % 4], 1 + i % 3, dk, dv}, i % 2 == 1);
      ++i;
    }
  check_chunked<float>({2, 1000, 2, 64, 64}, true);
  check_chunked<float>({3, 257, 5, 64, 64}, false);
}

TEST_CASE("chunked: half and bf16 tokens", "[cuda][chunked]") {
  PathScope path(vla::Path::chunked);
  for (const Shape& s : {Shape{2, 63, 3, 64, 64}, Shape{1, 1000, 2, 64, 64}, Shape{1, 77, 2, 32, 64}}) {
    check_chunked<__half>(s, s.T % 2 == 1);
    check_chunked<__nv_bfloat16>(s, s.T % 2 == 0);
  }
}

TEST_CASE("chunked: refresh periods 0, 7, 20, 64 and other configurations", "[cuda][chunked]") {
  PathScope path(vla::Path::chunked);
  for (int period : {0, 7, 20, 64}) {
    vla::Config cfg;
    cfg.refresh_period = period;
    check_chunked<float>({2, 301, 2, 64, 64}, period % 2 == 0, 0, cfg);
  }
  vla::Config cfg;
  cfg.normalize_output = false;
  cfg.lambda0 = 1.0;
  cfg.refresh_period = 5;
  check_chunked<float>({1, 150, 3, 64, 32}, true, 0, cfg);
}

TEST_CASE("chunked: zero keys and zero penalty directions are defined steps", "[cuda][chunked]") {
  PathScope path(vla::Path::chunked);
  check_chunked<float>({2, 130, 2, 64, 64}, true, 7);
  check_chunked<__nv_bfloat16>({1, 90, 2, 32, 64}, false, 5);
}

TEST_CASE("chunked: huge finite q, k, v give finite outputs that match the CPU", "[cuda][chunked][huge]") {
  PathScope path(vla::Path::chunked);
  check_huge<Vla>({1, 50, 2, 64, 64}, 1e30f, 1e30f, 1e30f);
  check_huge<Vla>({1, 40, 2, 32, 64}, 1e37f, 1.f, 1.f, true);
}

TEST_CASE("chunked: varlen equals the per-sequence loop, bit for bit", "[cuda][chunked][varlen]") {
  PathScope path(vla::Path::chunked);
  check_varlen<Vla, float>({0, 17, 17, 100, 163, 164}, 2, 64, 64);
  check_varlen<Vla, __nv_bfloat16>({0, 70, 71, 200}, 3, 32, 64);
}

TEST_CASE("chunked: a split on a chunk boundary gives the same bits", "[cuda][chunked][split]") {
  PathScope path(vla::Path::chunked);
  check_split<Vla, float>({2, 150, 2, 64, 64}, 64);
  check_split<Vla, __nv_bfloat16>({1, 97, 1, 32, 64}, 32);
}

TEST_CASE("chunked: T = 65536 stays finite and accurate", "[cuda][chunked][long]") {
  PathScope path(vla::Path::chunked);
  check_forward<Vla, float>({1, 65536, 2, 64, 64}, false, 0, vla::Config{}, 10.0);
  check_forward<Vla, __nv_bfloat16>({1, 16384, 2, 64, 64}, true, 0, vla::Config{}, 1.0);
}

TEST_CASE("chunked: automatic picks it for long sequences, and the result matches", "[cuda][chunked]") {
  PathScope path(vla::Path::automatic);
  check_chunked<float>({2, 500, 2, 64, 64}, true);
  check_forward<Vla, float>({2, 20, 2, 64, 64}, true);  // short: recurrent
  check_forward<Vla, float>({1, 300, 1, 128, 128}, false);  // does not fit: recurrent
}

TEST_CASE("chunked: what it does not do is refused by name", "[cuda][chunked][validation]") {
  std::mt19937_64 rng(fresh_seed());
  const Tokens t = make_tokens<float>(10, 1, 128, 128, rng);
  DeviceBuffer<float> q(t.q), k(t.k), v(t.v), u(t.u), o(t.v.size());
  vla::ForwardArgs<float, float> a;
  a.batch = 1, a.seq_len = 10, a.heads = 1, a.dk = 128, a.dv = 128;
  a.q = q.ptr, a.k = k.ptr, a.v = v.ptr, a.u = u.ptr, a.o = o.ptr;
  vla::cuda::Options opt;
  opt.path = vla::Path::chunked;
  const auto s1 = vla::forward<vla::backend::Cuda>(a, vla::Config{}, cudaStream_t{}, opt);
  INFO(s1.message);
  CHECK(!s1.ok());
  CHECK(s1.message.find("shared memory") != std::string::npos);
  a.dk = a.dv = 64;
  opt.chunk = 8;
  const auto s2 = vla::forward<vla::backend::Cuda>(a, vla::Config{}, cudaStream_t{}, opt);
  CHECK(s2.message.find("chunk = ") != std::string::npos);
  opt.chunk = 0;
  a.beta = u.ptr;
  const auto s3 = vla::forward<vla::backend::Cuda, vla::op::DeltaNet>(a, vla::Config{}, cudaStream_t{}, opt);
  CHECK(s3.message.find("no chunked path") != std::string::npos);
}
