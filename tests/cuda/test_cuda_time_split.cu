// The GPU time split (docs/maths.md §4b; vla/cuda/detail/time_split.cuh and forward_time_split in
// vla/cuda/forward.cuh; its host twin vla/time_split.hpp): sequences cut into 2–64 spans against the
// float64 reference of §2, with and without an initial state, refresh periods that straddle span
// boundaries, zero vectors, both supported head dims, float and bf16 tokens, spans on the recurrent
// and the chunked kernel; and against the unsplit GPU run. Tolerances: those of the chunked tests
// (float 1e-4, bf16 1e-2 relative RMS); the measured figures are printed.
#include "support.cuh"

using vla::op::Vla;
using namespace vtest;

namespace {

template <class In>
void check_time_split(const Shape& s, bool with_init, int spans, vla::Path path, int zero_every = 0,
                      const vla::Config& cfg = {}) {
  PathScope scope(path);
  std::mt19937_64 rng(fresh_seed());
  const Tokens t = make_tokens<In>(s.B * s.T, s.H, s.dk, s.dv, rng, zero_every);
  HostState init;
  if (with_init) init = warm_state<Vla>(s.B * s.H, s.dk, s.dv, cfg, 9, rng);
  const HostState* ip = with_init ? &init : nullptr;
  vla::cuda::Options opt;
  opt.time_split = spans;
  const GpuResult split = gpu_forward<Vla, In>(t, s.B, s.T, nullptr, s.H, s.dk, s.dv, cfg, ip, opt);
  const GpuResult whole = gpu_forward<Vla, In>(t, s.B, s.T, nullptr, s.H, s.dk, s.dv, cfg, ip);
  const Reference r = cpu_reference<Vla>(t, s.B, s.T, nullptr, s.H, s.dk, s.dv, cfg, ip);
  const std::string what = label(s, with_init ? " +init" : "") + " R" + std::to_string(spans) +
                           (path == vla::Path::chunked ? " chunked" : " recurrent");
  compare<Vla, In>(split, r, "split " + what, std::is_same<In, float>::value ? 10.0 : 1.0);
  // Split against unsplit on the same device: both are float; they differ by rounding only.
  std::vector<double> wo(whole.o.begin(), whole.o.end()), wa(whole.fin.A.begin(), whole.fin.A.end());
  const double d_o = rel_rms(split.o, wo), d_A = rel_rms(split.fin.A, wa);
  std::printf("  time split vs unsplit GPU %-40s o %.2e  A %.2e\n", what.c_str(), d_o, d_A);
  CHECK(d_o <= (std::is_same<In, float>::value ? 1e-4 : 1e-2));
  CHECK(split.fin.steps == whole.fin.steps);
}

}  // namespace

TEST_CASE("time split: float, span counts, with and without an initial state", "[cuda][time_split]") {
  check_time_split<float>({2, 1000, 2, 64, 64}, true, 4, vla::Path::recurrent);
  check_time_split<float>({2, 1000, 2, 64, 64}, false, 16, vla::Path::recurrent);
  check_time_split<float>({1, 3001, 1, 64, 64}, true, 7, vla::Path::chunked);
  check_time_split<float>({3, 777, 2, 32, 32}, true, 5, vla::Path::recurrent);
}

TEST_CASE("time split: refresh periods, zero vectors, bf16, a long sequence", "[cuda][time_split]") {
  for (int period : {0, 7, 20}) {
    vla::Config cfg;
    cfg.refresh_period = period;
    check_time_split<float>({1, 641, 2, 64, 64}, period != 7, 6, vla::Path::recurrent, 0, cfg);
  }
  check_time_split<float>({2, 500, 1, 64, 64}, true, 4, vla::Path::recurrent, 7);
  check_time_split<__nv_bfloat16>({4, 4096, 1, 64, 64}, false, 32, vla::Path::chunked);
  check_time_split<float>({1, 65536, 1, 64, 64}, true, 64, vla::Path::chunked);
}

TEST_CASE("time split: what it does not do is refused by name", "[cuda][time_split][validation]") {
  std::mt19937_64 rng(fresh_seed());
  const Tokens t = make_tokens<float>(10, 1, 64, 32, rng);
  DeviceBuffer<float> q(t.q), k(t.k), v(t.v), u(t.u), o(t.v.size());
  vla::ForwardArgs<float, float> a;
  a.batch = 1, a.seq_len = 10, a.heads = 1, a.dk = 64, a.dv = 32;
  a.q = q.ptr, a.k = k.ptr, a.v = v.ptr, a.u = u.ptr, a.o = o.ptr;
  vla::cuda::Options opt;
  opt.time_split = 4;
  const auto s1 = vla::forward<vla::backend::Cuda>(a, vla::Config{}, cudaStream_t{}, opt);
  CHECK(s1.message.find("dk = dv") != std::string::npos);
  opt.time_split = -1;
  a.dv = 64;
  const auto s2 = vla::forward<vla::backend::Cuda>(a, vla::Config{}, cudaStream_t{}, opt);
  CHECK(s2.message.find("time_split must be") != std::string::npos);
  opt.time_split = 4;
  a.beta = u.ptr;
  const auto s3 = vla::forward<vla::backend::Cuda, vla::op::DeltaNet>(a, vla::Config{}, cudaStream_t{}, opt);
  CHECK(s3.message.find("no time split") != std::string::npos);
}
