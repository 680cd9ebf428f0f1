// The decode step (T = 1, state updated in place through an index into a pool) against the float64
// CPU forward run over the same steps.
#include "support.cuh"

using namespace vtest;

namespace {

/// `steps` decode steps of N sequences × H heads through a pool of P slots (index[n]: slot of
/// sequence n; −1 a padding entry, skipped) against the CPU forward over the same steps.
template <class Op, class In>
void check_decode_pool(std::int64_t dk, std::int64_t dv, float q_scale, std::int64_t H, std::int64_t P,
                       const std::vector<std::int32_t>& index, std::int64_t steps) {
  const vla::Config cfg;
  std::mt19937_64 rng(fresh_seed());
  const std::int64_t N = static_cast<std::int64_t>(index.size());
  std::vector<std::int64_t> live;  // sequences that step, in order
  auto stepped = [&](std::int64_t n) { return index[n] >= 0 && index[n] < P; };
  for (std::int64_t n = 0; n < N; ++n)
    if (stepped(n)) live.push_back(n);
  const std::int64_t NL = static_cast<std::int64_t>(live.size());

  const HostState pool0 = warm_state<Op>(P * H, dk, dv, cfg, 6, rng);
  DeviceState pool(pool0);
  // Reference: the live sequences as a [NL, steps, H, D] forward from their slots' states.
  Tokens t = make_tokens<In>(NL * steps, H, dk, dv, rng);
  for (auto& x : t.q) x *= q_scale;  // huge q: S q and zᵀq overflow in float (docs/maths.md §2.6)
  HostState init;
  for (std::int64_t l = 0; l < NL; ++l) {
    const HostState s = slice_state(pool0, index[live[l]] * H, H, dk, dv);
    auto app = [](auto& d, const auto& x) { d.insert(d.end(), x.begin(), x.end()); };
    app(init.A, s.A), app(init.S, s.S), app(init.z, s.z), app(init.steps, s.steps);
  }
  const Reference ref = cpu_reference<Op>(t, NL, steps, nullptr, H, dk, dv, cfg, &init);

  DeviceBuffer<std::int32_t> didx(index);
  std::vector<double> ref_o;
  std::vector<float> got_o;
  for (std::int64_t st = 0; st < steps; ++st) {
    // Step st's tokens in [N, H, D]; the padding entry gets junk.
    Tokens s = make_tokens<In>(N, H, dk, dv, rng);
    for (std::int64_t l = 0; l < NL; ++l) {
      const Tokens x = slice_tokens(t, l * steps + st, 1, H, dk, dv);
      const std::int64_t n = live[l];
      std::copy(x.q.begin(), x.q.end(), s.q.begin() + n * H * dk);
      std::copy(x.k.begin(), x.k.end(), s.k.begin() + n * H * dk);
      std::copy(x.u.begin(), x.u.end(), s.u.begin() + n * H * dk);
      std::copy(x.v.begin(), x.v.end(), s.v.begin() + n * H * dv);
      std::copy(x.beta.begin(), x.beta.end(), s.beta.begin() + n * H);
    }
    DeviceBuffer<In> q(to_in<In>(s.q)), k(to_in<In>(s.k)), v(to_in<In>(s.v)), u(to_in<In>(s.u)),
        beta(to_in<In>(s.beta)), o(N * H * dv);
    o.poison();
    vla::cuda::DecodeArgs<In> d;
    d.batch = N, d.heads = H, d.dk = dk, d.dv = dv;
    d.q = q.ptr, d.k = k.ptr, d.v = v.ptr, d.o = o.ptr;
    if (Op::uses_u) d.u = u.ptr;
    if (Op::uses_beta) d.beta = beta.ptr;
    d.state = pool.buffers();
    if (!Op::uses_A) d.state.A = nullptr;
    if (!Op::uses_z) d.state.z = nullptr;
    if (!Op::uses_steps) d.state.steps = nullptr;
    d.state_index = didx.ptr;
    d.pool_size = P;
    const vla::cuda::Status status = vla::cuda::decode_step<Op>(d, cfg, cudaStream_t{});
    INFO(status.message);
    REQUIRE(status.ok());
    VT_CUDA(cudaDeviceSynchronize());
    const std::vector<float> oh = to_float(o.download());
    for (std::int64_t l = 0; l < NL; ++l) {
      const std::int64_t n = live[l];
      got_o.insert(got_o.end(), oh.begin() + n * H * dv, oh.begin() + (n + 1) * H * dv);
      ref_o.insert(ref_o.end(), ref.o.begin() + (l * steps + st) * H * dv, ref.o.begin() + (l * steps + st + 1) * H * dv);
    }
    // The padding entry's outputs are not written.
    for (std::int64_t n = 0; n < N; ++n)
      if (!stepped(n))
        for (std::int64_t i = n * H * dv; i < (n + 1) * H * dv; ++i) CHECK(std::isnan(oh[i]));
  }
  // Final pool: live slots against the reference, the others untouched.
  const HostState fin = pool.download();
  GpuResult g;
  g.o = got_o;
  Reference r;
  r.o = ref_o;
  for (std::int64_t l = 0; l < NL; ++l) {
    const HostState s = slice_state(fin, index[live[l]] * H, H, dk, dv);
    auto app = [](auto& dst, const auto& x) { dst.insert(dst.end(), x.begin(), x.end()); };
    app(g.fin.A, s.A), app(g.fin.S, s.S), app(g.fin.z, s.z), app(g.fin.steps, s.steps);
  }
  r.A = ref.A, r.S = ref.S, r.z = ref.z, r.steps = ref.steps;
  compare<Op, In>(g, r, "decode pool " + std::to_string(P) + "x" + std::to_string(H) + " dk" + std::to_string(dk) +
                            " dv" + std::to_string(dv) + (q_scale != 1.f ? " huge q" : ""));
  for (std::int64_t slot = 0; slot < P; ++slot) {
    bool used = false;
    for (std::int32_t x : index) used |= x == slot;
    if (used) continue;
    const HostState a = slice_state(fin, slot * H, H, dk, dv), b = slice_state(pool0, slot * H, H, dk, dv);
    CHECK(same_bits(a.S, b.S, "untouched slot S"));
    if (Op::uses_A) CHECK(same_bits(a.A, b.A, "untouched slot A"));
  }
}

template <class Op, class In>
void check_decode(std::int64_t dk, std::int64_t dv, float q_scale = 1.f) {
  check_decode_pool<Op, In>(dk, dv, q_scale, 3, 7, {3, 0, 6, -1, 2}, 3);  // -1: a padding entry, skipped
}

/// More pairs than the decode kernel has warps on the device (132 SMs × up to 16 warps): every warp
/// steps several pairs through its slot; slots permuted, two padding entries.
template <class Op, class In>
void check_decode_many(std::int64_t dk, std::int64_t dv) {
  const std::int64_t N = 200, H = 16, P = N + 9;
  std::vector<std::int32_t> index(N);
  for (std::int64_t n = 0; n < N; ++n) index[n] = static_cast<std::int32_t>((n * 37 + 5) % P);
  index[17] = -1;
  index[150] = static_cast<std::int32_t>(P + 3);  // out of the pool: skipped too
  check_decode_pool<Op, In>(dk, dv, 1.f, H, P, index, 2);
}

}  // namespace

TEMPLATE_TEST_CASE("decode step through a state pool", "[cuda][decode]", vla::op::Vla, vla::op::LinearAttention,
                   vla::op::DeltaNet) {
  check_decode<TestType, float>(64, 64);
  check_decode<TestType, float>(32, 128);
  check_decode<TestType, __nv_bfloat16>(128, 64);
  check_decode<TestType, __half>(64, 32);
}

TEMPLATE_TEST_CASE("decode step with huge finite q (~1e37): finite outputs that match the CPU", "[cuda][decode][huge]",
                   vla::op::Vla, vla::op::LinearAttention) {
  check_decode<TestType, float>(64, 64, 1e37f);
  check_decode<TestType, float>(128, 32, 1e37f);
}

TEMPLATE_TEST_CASE("decode step, many pairs (several per warp)", "[cuda][decode]", vla::op::Vla, vla::op::LinearAttention,
                   vla::op::DeltaNet) {
  check_decode_many<TestType, __nv_bfloat16>(64, 64);
  check_decode_many<TestType, float>(32, 128);
}

TEST_CASE("init_states writes the fresh state", "[cuda][decode]") {
  const std::int64_t count = 6, dk = 64, dv = 32;
  DeviceState st(count, dk, dv);
  st.poison();
  vla::Config cfg;
  cfg.lambda0 = 0.25;
  const vla::cuda::Status s = vla::cuda::init_states(st.buffers(), count, dk, dv, cfg, cudaStream_t{});
  REQUIRE(s.ok());
  VT_CUDA(cudaDeviceSynchronize());
  const HostState h = st.download();
  for (std::int64_t c = 0; c < count; ++c)
    for (std::int64_t i = 0; i < dk; ++i)
      for (std::int64_t j = 0; j < dk; ++j) REQUIRE(h.A[(c * dk + i) * dk + j] == (i == j ? 4.f : 0.f));
  for (float x : h.S) REQUIRE(x == 0.f);
  for (float x : h.z) REQUIRE(x == 0.f);
  for (auto x : h.steps) REQUIRE(x == 0);
}
