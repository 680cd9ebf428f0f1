// The VLA backward on the GPU (vla/cuda/backward.cuh) against the CPU backward in double
// (vla/backward.hpp, itself checked against finite differences and the authors' module under
// autograd): every gradient by relative RMS, tolerances 1e-4 (float tokens) and 1e-2 (half, bf16).
#include "support.cuh"

using vla::op::Vla;
using namespace vtest;

namespace {

template <class In>
double grad_tolerance() {
  return std::is_same<In, float>::value ? 1e-4 : 1e-2;
}

struct BackwardCase {
  Shape s;
  bool init = true, d_final = true;
  int zero_every = 0;
  int checkpoint = 0;
  std::uint64_t seed = 0;  // 0: a fresh seed; otherwise the inputs of an earlier run again
  vla::Config cfg{};
  const std::vector<std::int64_t>* cu = nullptr;  // varlen (s.B ignored, s.T = 0)
};

/// The gradients of one GPU backward (outputs poisoned first), as floats.
struct GpuGrads {
  std::vector<float> dq, dk, dv, du, dA, dS, dz;
};

template <class In>
GpuGrads gpu_backward(const BackwardCase& c, const Tokens& t, const std::vector<float>& d_o, const HostState* init,
                      const HostState* d_final, vla::cuda::Status* status_out = nullptr) {
  const Shape& s = c.s;
  const std::int64_t N = c.cu ? static_cast<std::int64_t>(c.cu->size()) - 1 : s.B;
  const std::int64_t count = N * s.H;
  DeviceBuffer<In> q(to_in<In>(t.q)), k(to_in<In>(t.k)), v(to_in<In>(t.v)), u(to_in<In>(t.u)), o(t.v.size()),
      go(to_in<In>(d_o)), dq(t.q.size()), dk(t.k.size()), dv(t.v.size()), du(t.u.size());
  for (auto* b : {&dq, &dk, &dv, &du}) b->poison();
  DeviceState d0(count, s.dk, s.dv);
  d0.poison();
  std::unique_ptr<DeviceState> st0, dfin;
  if (init) st0.reset(new DeviceState(*init));
  if (d_final) dfin.reset(new DeviceState(*d_final));
  DeviceBuffer<std::int64_t> dcu;
  vla::ForwardArgs<In, float> a;
  a.batch = N;
  a.seq_len = c.cu ? 0 : s.T;
  a.heads = s.H;
  a.dk = s.dk;
  a.dv = s.dv;
  if (c.cu) {
    dcu = DeviceBuffer<std::int64_t>(*c.cu);
    a.cu_seqlens = dcu.ptr;
  }
  a.q = q.ptr, a.k = k.ptr, a.v = v.ptr, a.u = u.ptr, a.o = o.ptr;
  if (st0) a.initial_state = st0->cbuffers();
  vla::GradArgs<In, float> g;
  g.d_o = go.ptr;
  if (dfin) g.d_final_state = {dfin->A.ptr, dfin->S.ptr, dfin->z.ptr, nullptr};
  g.d_q = dq.ptr, g.d_k = dk.ptr, g.d_v = dv.ptr, g.d_u = du.ptr;
  g.d_initial_state = {d0.A.ptr, d0.S.ptr, d0.z.ptr, nullptr};
  vla::cuda::BackwardOptions opt;
  opt.checkpoint = c.checkpoint;
  const vla::cuda::Status st = vla::backward<vla::backend::Cuda, Vla>(a, g, c.cfg, cudaStream_t{}, opt);
  if (status_out) *status_out = st;
  if (!status_out) REQUIRE(st.ok());
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  GpuGrads r;
  r.dq = to_float(dq.download()), r.dk = to_float(dk.download()), r.dv = to_float(dv.download());
  r.du = to_float(du.download());
  r.dA = d0.A.download(), r.dS = d0.S.download(), r.dz = d0.z.download();
  return r;
}

/// Runs one case on fresh random inputs and compares every gradient with the CPU's double backward.
template <class In>
GpuGrads check_backward(const BackwardCase& c) {
  const Shape& s = c.s;
  std::mt19937_64 rng(c.seed ? c.seed : fresh_seed());
  const std::int64_t N = c.cu ? static_cast<std::int64_t>(c.cu->size()) - 1 : s.B;
  const std::int64_t tokens = c.cu ? c.cu->back() : s.B * s.T, count = N * s.H;
  const Tokens t = make_tokens<In>(tokens, s.H, s.dk, s.dv, rng, c.zero_every);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> d_o(t.v.size());
  for (auto& x : d_o) x = to_f(from_f<In>(nd(rng)));
  HostState init, dfin;
  if (c.init) init = warm_state<Vla>(count, s.dk, s.dv, c.cfg, 7, rng);
  if (c.d_final) {
    dfin.resize(count, s.dk, s.dv);
    for (auto* x : {&dfin.A, &dfin.S, &dfin.z})
      for (auto& y : *x) y = 0.1f * nd(rng);
  }
  const GpuGrads g = gpu_backward<In>(c, t, d_o, c.init ? &init : nullptr, c.d_final ? &dfin : nullptr);
  const GradReference r = cpu_backward_reference(t, d_o, N, c.cu ? 0 : s.T, c.cu ? c.cu->data() : nullptr, s.H, s.dk,
                                                 s.dv, c.cfg, c.init ? &init : nullptr, c.d_final ? &dfin : nullptr);
  INFO(label(s) << " " << type_name<In>() << (c.init ? " init" : "") << (c.d_final ? " d_final" : "")
                << (c.zero_every ? " zeros" : "") << " checkpoint " << c.checkpoint);
  const double tol = grad_tolerance<In>();
  struct Item {
    const char* name;
    const std::vector<float>* gpu;
    const std::vector<double>* ref;
  };
  for (const Item& it : {Item{"dq", &g.dq, &r.dq}, Item{"dk", &g.dk, &r.dk}, Item{"dv", &g.dv, &r.dv},
                         Item{"du", &g.du, &r.du}, Item{"dA0", &g.dA, &r.dA}, Item{"dS0", &g.dS, &r.dS},
                         Item{"dz0", &g.dz, &r.dz}}) {
    const double e = rel_rms(*it.gpu, *it.ref);
    INFO(it.name << ": rel RMS " << e << " (tolerance " << tol << ")");
    CHECK(all_finite(*it.gpu));
    CHECK(e <= tol);
  }
  std::printf("[backward] %s %s%s%s: dq %.2e dk %.2e dv %.2e du %.2e dA0 %.2e dS0 %.2e dz0 %.2e\n", label(s).c_str(),
              type_name<In>(), c.init ? " init" : "", c.zero_every ? " zeros" : "", rel_rms(g.dq, r.dq),
              rel_rms(g.dk, r.dk), rel_rms(g.dv, r.dv), rel_rms(g.du, r.du), rel_rms(g.dA, r.dA), rel_rms(g.dS, r.dS),
              rel_rms(g.dz, r.dz));
  return g;
}

}  // namespace

TEST_CASE("backward: float, every (dk, dv) pair", "[cuda][backward]") {
  const std::int64_t dims[] = {32, 64, 128};
  const std::int64_t Ts[] = {1, 63, 200};
  int i = 0;
  for (std::int64_t dk : dims)
    for (std::int64_t dv : dims) {
      BackwardCase c;
      c.s = {1 + i % 2, Ts[i % 3], 1 + i % 3, dk, dv};
      c.init = i % 2 == 0;
      c.d_final = i % 3 != 1;
      check_backward<float>(c);
      ++i;
    }
}

TEST_CASE("backward: half and bf16 tokens", "[cuda][backward]") {
  for (const Shape& s : {Shape{2, 150, 2, 64, 64}, Shape{1, 300, 1, 128, 128}, Shape{1, 100, 2, 32, 64}}) {
    BackwardCase c;
    c.s = s;
    check_backward<__half>(c);
    check_backward<__nv_bfloat16>(c);
  }
}

TEST_CASE("backward: zero keys and directions, refreshes, the normaliser off, other checkpoints", "[cuda][backward]") {
  BackwardCase c;
  c.s = {2, 333, 2, 64, 64};
  c.zero_every = 9;
  check_backward<float>(c);
  c.zero_every = 0;
  c.cfg.refresh_period = 7;
  c.checkpoint = 32;
  check_backward<float>(c);
  c.cfg.normalize_output = false;
  c.checkpoint = 160;
  check_backward<float>(c);
  c.cfg = vla::Config{};
  c.cfg.refresh_period = 0;
  c.cfg.stab_eps = 1.05;  // δ̃ = 1 + ûᵀAû: the floor binds once A has shrunk (no gradient through δ there)
  check_backward<float>(c);
}

TEST_CASE("backward: varlen, empty sequences included", "[cuda][backward][varlen]") {
  const std::vector<std::int64_t> cu = {0, 17, 17, 100, 230, 231};
  BackwardCase c;
  c.s = {0, 0, 2, 64, 64};
  c.cu = &cu;
  check_backward<float>(c);
  c.init = false;
  check_backward<__nv_bfloat16>(c);
}

TEST_CASE("backward: T = 16384 stays finite and accurate", "[cuda][backward][long]") {
  BackwardCase c;
  c.s = {1, 16384, 2, 64, 64};
  c.checkpoint = 128;
  check_backward<float>(c);
  check_backward<__nv_bfloat16>(c);
}

TEST_CASE("backward: the checkpoint interval changes little", "[cuda][backward]") {
  // Each interval rolls states back over its own segments; on the same inputs the gradients agree
  // to float rounding (both are also checked against the CPU double backward inside check_backward).
  BackwardCase c;
  c.s = {1, 500, 2, 64, 64};
  c.seed = fresh_seed();
  const GpuGrads a = check_backward<float>(c);
  c.checkpoint = 256;
  const GpuGrads b = check_backward<float>(c);
  const auto as_double = [](const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); };
  CHECK(rel_rms(b.dq, as_double(a.dq)) <= 1e-5);
  CHECK(rel_rms(b.dk, as_double(a.dk)) <= 1e-5);
  CHECK(rel_rms(b.dv, as_double(a.dv)) <= 1e-5);
  CHECK(rel_rms(b.du, as_double(a.du)) <= 1e-5);
  CHECK(rel_rms(b.dA, as_double(a.dA)) <= 1e-5);
}

TEST_CASE("backward: bad arguments come back as a Status, nothing written", "[cuda][backward][invalid]") {
  BackwardCase c;
  c.s = {1, 10, 1, 64, 64};
  std::mt19937_64 rng(fresh_seed());
  const Tokens t = make_tokens<float>(10, 1, 64, 64, rng);
  const std::vector<float> d_o(t.v.size(), 1.f);
  c.checkpoint = 48;
  vla::cuda::Status st;
  const GpuGrads g = gpu_backward<float>(c, t, d_o, nullptr, nullptr, &st);
  CHECK(!st.ok());
  CHECK(st.message.find("multiple of 32") != std::string::npos);
  CHECK(count_nonfinite(g.dq) == g.dq.size());  // still the poison
  vla::ForwardArgs<float, float> a;
  vla::GradArgs<float, float> gr;
  st = vla::cuda::backward<vla::op::DeltaNet, float>(a, gr, vla::Config{}, cudaStream_t{});
  CHECK(st.message.find("built for VLA") != std::string::npos);
}
