// vla::cuda::DeviceStates (vla/cuda/states.cuh): a pool that starts fresh, serves a prefill through
// slots_from and a decode through buffers(), resets a slot, and copies (slot, head) to and from the
// host — checked against the float64 CPU forward and bit for bit where nothing may change.
#include "support.cuh"

using namespace vtest;

namespace {

/// The whole pool, copied back (every part).
HostState pool_contents(const vla::cuda::DeviceStates& p) {
  const std::int64_t n = p.slots() * p.heads(), dk = p.dk(), dv = p.dv();
  HostState h;
  h.resize(n, dk, dv);
  const vla::StateBuffers<float> b = p.buffers();
  VT_CUDA(cudaDeviceSynchronize());
  VT_CUDA(cudaMemcpy(h.A.data(), b.A, sizeof(float) * h.A.size(), cudaMemcpyDeviceToHost));
  VT_CUDA(cudaMemcpy(h.S.data(), b.S, sizeof(float) * h.S.size(), cudaMemcpyDeviceToHost));
  VT_CUDA(cudaMemcpy(h.z.data(), b.z, sizeof(float) * h.z.size(), cudaMemcpyDeviceToHost));
  VT_CUDA(cudaMemcpy(h.steps.data(), b.steps, sizeof(std::int64_t) * h.steps.size(), cudaMemcpyDeviceToHost));
  return h;
}

/// Entries [first, first + count) are the fresh state of cfg, exactly as init_states writes it.
void check_fresh(const HostState& h, std::int64_t first, std::int64_t count, std::int64_t dk, const vla::Config& cfg) {
  const float diag = 1.f / static_cast<float>(cfg.lambda0);
  const HostState s = slice_state(h, first, count, dk, h.S.size() / (h.steps.size() * dk));
  for (std::int64_t c = 0; c < count; ++c)
    for (std::int64_t i = 0; i < dk; ++i)
      for (std::int64_t j = 0; j < dk; ++j) REQUIRE(s.A[(c * dk + i) * dk + j] == (i == j ? diag : 0.f));
  for (float x : s.S) REQUIRE(x == 0.f);
  for (float x : s.z) REQUIRE(x == 0.f);
  for (auto x : s.steps) REQUIRE(x == 0);
}

bool mentions(const vla::cuda::Status& s, const std::string& what) {
  return !s.ok() && s.code == cudaErrorInvalidValue && s.message.find(what) != std::string::npos;
}

}  // namespace

TEST_CASE("DeviceStates: fresh pool, prefill into slots, decode through the pool, reset", "[cuda][states]") {
  vla::Config cfg;
  cfg.lambda0 = 0.25;
  cfg.refresh_period = 7;  // refreshes inside the prefill and at a decode step (steps carries the phase)
  const std::int64_t P = 5, H = 3, dk = 64, dv = 32, B = 2, Tp = 40, Td = 3;
  vla::cuda::DeviceStates pool;
  REQUIRE(pool.empty());
  {
    const vla::cuda::Status st = vla::cuda::DeviceStates::create(P, H, dk, dv, cfg, cudaStream_t{}, pool);
    INFO(st.message);
    REQUIRE(st.ok());
  }
  REQUIRE(!pool.empty());
  CHECK(pool.slots() == P);
  CHECK(pool.heads() == H);
  check_fresh(pool_contents(pool), 0, P * H, dk, cfg);

  // Sequences 0 and 1 live in slots 1 and 2: a prefill of Tp tokens, then Td decode steps in the
  // other order (the decode's entry 0 is sequence 1), then the float64 forward over all Tp + Td.
  std::mt19937_64 rng(fresh_seed());
  const Tokens all = make_tokens<__nv_bfloat16>(B * (Tp + Td), H, dk, dv, rng);
  Tokens pre;
  for (std::int64_t n = 0; n < B; ++n) {
    const Tokens x = slice_tokens(all, n * (Tp + Td), Tp, H, dk, dv);
    auto app = [](auto& d, const auto& s) { d.insert(d.end(), s.begin(), s.end()); };
    app(pre.q, x.q), app(pre.k, x.k), app(pre.v, x.v), app(pre.u, x.u), app(pre.beta, x.beta);
  }
  DeviceBuffer<__nv_bfloat16> q(to_in<__nv_bfloat16>(pre.q)), k(to_in<__nv_bfloat16>(pre.k)),
      v(to_in<__nv_bfloat16>(pre.v)), u(to_in<__nv_bfloat16>(pre.u)), o(pre.v.size());
  o.poison();
  vla::ForwardArgs<__nv_bfloat16, float> a;
  a.batch = B, a.seq_len = Tp, a.heads = H, a.dk = dk, a.dv = dv;
  a.q = q.ptr, a.k = k.ptr, a.v = v.ptr, a.u = u.ptr, a.o = o.ptr;
  const vla::StateBuffers<float> slots = pool.slots_from(1);
  a.initial_state = {slots.A, slots.S, slots.z, slots.steps};
  a.final_state = slots;  // in place, as a prefill continues a cache
  {
    const vla::cuda::Status st = vla::forward<vla::backend::Cuda>(a, cfg, cudaStream_t{});
    INFO(st.message);
    REQUIRE(st.ok());
  }
  std::vector<float> got_pre = to_float(o.download());

  const std::vector<std::int32_t> index = {2, 1};  // decode entry e steps slot index[e] = sequence 1 − e
  DeviceBuffer<std::int32_t> didx(index);
  std::vector<float> got_dec(static_cast<std::size_t>(B * Td * H * dv));
  for (std::int64_t t = 0; t < Td; ++t) {
    Tokens s;
    for (std::int64_t e = 0; e < B; ++e) {
      const Tokens x = slice_tokens(all, (1 - e) * (Tp + Td) + Tp + t, 1, H, dk, dv);
      auto app = [](auto& d, const auto& y) { d.insert(d.end(), y.begin(), y.end()); };
      app(s.q, x.q), app(s.k, x.k), app(s.v, x.v), app(s.u, x.u);
    }
    DeviceBuffer<__nv_bfloat16> q1(to_in<__nv_bfloat16>(s.q)), k1(to_in<__nv_bfloat16>(s.k)),
        v1(to_in<__nv_bfloat16>(s.v)), u1(to_in<__nv_bfloat16>(s.u)), o1(s.v.size());
    o1.poison();
    vla::cuda::DecodeArgs<__nv_bfloat16> d;
    d.batch = B, d.heads = H, d.dk = dk, d.dv = dv;
    d.q = q1.ptr, d.k = k1.ptr, d.v = v1.ptr, d.u = u1.ptr, d.o = o1.ptr;
    d.state = pool.buffers();
    d.state_index = didx.ptr;
    d.pool_size = pool.slots();
    const vla::cuda::Status st = vla::cuda::decode_step<vla::op::Vla>(d, cfg, cudaStream_t{});
    INFO(st.message);
    REQUIRE(st.ok());
    const std::vector<float> oh = to_float(o1.download());
    for (std::int64_t e = 0; e < B; ++e)  // back into [sequence, token] order
      std::copy(oh.begin() + e * H * dv, oh.begin() + (e + 1) * H * dv,
                got_dec.begin() + ((1 - e) * Td + t) * H * dv);
  }
  const Reference ref = cpu_reference<vla::op::Vla>(all, B, Tp + Td, nullptr, H, dk, dv, cfg, nullptr);
  GpuResult g;
  Reference r;
  for (std::int64_t n = 0; n < B; ++n) {
    g.o.insert(g.o.end(), got_pre.begin() + n * Tp * H * dv, got_pre.begin() + (n + 1) * Tp * H * dv);
    g.o.insert(g.o.end(), got_dec.begin() + n * Td * H * dv, got_dec.begin() + (n + 1) * Td * H * dv);
  }
  r.o = ref.o, r.A = ref.A, r.S = ref.S, r.z = ref.z, r.steps = ref.steps;
  HostState fin = pool_contents(pool);
  g.fin = slice_state(fin, 1 * H, B * H, dk, dv);  // slots 1, 2 = sequences 0, 1
  compare<vla::op::Vla, __nv_bfloat16>(g, r, "pool: prefill 40 + decode 3");
  check_fresh(fin, 0, H, dk, cfg);          // slot 0 untouched
  check_fresh(fin, 3 * H, 2 * H, dk, cfg);  // slots 3, 4 untouched

  // reset(1): slot 1 fresh again, slot 2 bit for bit as it was.
  REQUIRE(pool.reset(1, cudaStream_t{}).ok());
  const HostState after = pool_contents(pool);
  check_fresh(after, 1 * H, H, dk, cfg);
  const HostState s2a = slice_state(fin, 2 * H, H, dk, dv), s2b = slice_state(after, 2 * H, H, dk, dv);
  CHECK(same_bits(s2a.A, s2b.A, "slot 2 A after reset(1)"));
  CHECK(same_bits(s2a.S, s2b.S, "slot 2 S after reset(1)"));
  CHECK(s2a.steps == s2b.steps);

  // A moved-from pool is empty and its successor owns the memory.
  vla::cuda::DeviceStates other = std::move(pool);
  CHECK(pool.empty());
  CHECK(!other.empty());
  CHECK(mentions(pool.reset(0, cudaStream_t{}), "the pool is empty"));
}

TEST_CASE("DeviceStates: upload and download round-trip; a bad state is refused by slot and head, nothing changes",
          "[cuda][states]") {
  const vla::Config cfg;
  const std::int64_t P = 4, H = 3, dk = 32, dv = 64;
  vla::cuda::DeviceStates pool;
  REQUIRE(vla::cuda::DeviceStates::create(P, H, dk, dv, cfg, cudaStream_t{}, pool).ok());
  std::mt19937_64 rng(fresh_seed());
  const HostState w = warm_state<vla::op::Vla>(1, dk, dv, cfg, 25, rng);  // a valid, non-trivial state
  auto view = [](const HostState& h) {
    return vla::StateBuffers<const float>{h.A.data(), h.S.data(), h.z.data(), h.steps.data()};
  };
  {
    const vla::cuda::Status st = pool.upload(3, 2, view(w), cudaStream_t{});
    INFO(st.message);
    REQUIRE(st.ok());
  }
  HostState back;
  back.resize(1, dk, dv);
  REQUIRE(pool.download(3, 2, {back.A.data(), back.S.data(), back.z.data(), back.steps.data()}, cudaStream_t{}).ok());
  CHECK(same_bits(back.A, w.A, "A round trip"));
  CHECK(same_bits(back.S, w.S, "S round trip"));
  CHECK(same_bits(back.z, w.z, "z round trip"));
  CHECK(back.steps == w.steps);

  const HostState before = pool_contents(pool);
  auto refused = [&](const HostState& bad, const std::string& what) {
    const vla::cuda::Status st = pool.upload(1, 2, view(bad), cudaStream_t{});
    INFO(st.message);
    CHECK(mentions(st, "slot 1, head 2"));
    CHECK(mentions(st, what));
    const HostState now = pool_contents(pool);
    CHECK(same_bits(now.A, before.A, "pool A after a refused upload"));
    CHECK(same_bits(now.S, before.S, "pool S after a refused upload"));
    CHECK(same_bits(now.z, before.z, "pool z after a refused upload"));
    CHECK(now.steps == before.steps);
  };
  HostState b = w;
  b.A[1 * dk + 5] += 1e-2f * std::fabs(b.A[0]) + 1e-3f;  // (1, 5) no longer equals (5, 1)
  refused(b, "not symmetric");
  b = w;
  b.A[7 * dk + 7] = -std::fabs(b.A[7 * dk + 7]);
  refused(b, "diagonal entry 7");
  b = w;  // symmetric, positive diagonal, indefinite: A(0,1) = A(1,0) = 2·max(A(0,0), A(1,1))
  b.A[0 * dk + 1] = b.A[1 * dk + 0] = 2.f * std::max(b.A[0], b.A[dk + 1]);
  refused(b, "Cholesky");
  b = w;
  b.S[dk + 3] = std::numeric_limits<float>::quiet_NaN();
  refused(b, "S(1, 3) is not finite");
  b = w;
  b.z[9] = std::numeric_limits<float>::infinity();
  refused(b, "z[9]");
  b = w;
  b.steps[0] = -1;
  refused(b, "steps");
  b = w;
  b.A[2 * dk + 4] = std::numeric_limits<float>::infinity();
  refused(b, "A(2, 4) is not finite");

  CHECK(mentions(pool.upload(4, 0, view(w), cudaStream_t{}), "slot 4, head 0 is out of range (4 slots × 3 heads)"));
  CHECK(mentions(pool.download(0, 3, {back.A.data(), nullptr, nullptr, nullptr}, cudaStream_t{}), "out of range"));
  CHECK(mentions(pool.upload(0, 0, {w.A.data(), w.S.data(), nullptr, w.steps.data()}, cudaStream_t{}),
                 "every part"));
  CHECK(mentions(pool.reset(-1, cudaStream_t{}), "slot -1"));
  CHECK(pool.slots_from(4).A == nullptr);
  CHECK(pool.slots_from(2).A == pool.buffers().A + 2 * H * dk * dk);

  vla::cuda::DeviceStates untouched;
  CHECK(mentions(vla::cuda::DeviceStates::create(2, 0, dk, dv, cfg, cudaStream_t{}, untouched), "heads"));
  vla::Config bad_cfg;
  bad_cfg.lambda0 = 0;
  CHECK(mentions(vla::cuda::DeviceStates::create(2, 2, dk, dv, bad_cfg, cudaStream_t{}, untouched), "lambda0"));
  CHECK(untouched.empty());
  vla::cuda::DeviceStates none;  // zero slots: valid, holds nothing
  CHECK(vla::cuda::DeviceStates::create(0, 2, dk, dv, cfg, cudaStream_t{}, none).ok());
  CHECK(none.empty());
}
