// tests/cuda/reference.cpp — the float64 CPU reference behind reference.hpp.
#include "reference.hpp"

#include <cmath>
#include <random>

#include <vla/vla.hpp>

namespace vtest {
namespace {

std::vector<double> to_double(const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); }

/// A reference call's extents (the tokens' own layout); pointers are set by the caller.
vla::ForwardArgs<double, double> extents(std::int64_t batch, std::int64_t seq_len, const std::int64_t* cu,
                                         std::int64_t heads, std::int64_t dk, std::int64_t dv) {
  vla::ForwardArgs<double, double> a;
  a.batch = batch;
  a.seq_len = seq_len;
  a.cu_seqlens = cu;
  a.heads = heads;
  a.dk = dk;
  a.dv = dv;
  return a;
}

template <class Op>
Reference run(const Tokens& t, std::int64_t batch, std::int64_t seq_len, const std::int64_t* cu, std::int64_t heads,
              std::int64_t dk, std::int64_t dv, const vla::Config& cfg, const HostState* init) {
  vla::ForwardArgs<double, double> a = extents(batch, seq_len, cu, heads, dk, dv);
  const std::vector<double> q = to_double(t.q), k = to_double(t.k), v = to_double(t.v), u = to_double(t.u),
                            beta = to_double(t.beta);
  a.q = q.data(), a.k = k.data(), a.v = v.data(), a.u = u.data(), a.beta = beta.data();
  Reference r;
  r.o.assign(t.v.size(), 0.0);
  a.o = r.o.data();
  std::vector<double> A0, S0, z0;
  if (init) {
    A0 = to_double(init->A), S0 = to_double(init->S), z0 = to_double(init->z);
    a.initial_state = {Op::uses_A ? A0.data() : nullptr, S0.data(), Op::uses_z ? z0.data() : nullptr,
                       Op::uses_steps ? init->steps.data() : nullptr};
  }
  const std::int64_t count = batch * heads;
  r.A.assign(count * dk * dk, 0.0);
  r.S.assign(count * dv * dk, 0.0);
  r.z.assign(count * dk, 0.0);
  r.steps.assign(count, 0);
  a.final_state = {Op::uses_A ? r.A.data() : nullptr, r.S.data(), Op::uses_z ? r.z.data() : nullptr,
                   Op::uses_steps ? r.steps.data() : nullptr};
  vla::CpuOptions opt;
  opt.threads = 0;
  vla::forward<vla::backend::Cpu, Op>(a, cfg, opt);
  return r;
}

}  // namespace

Reference cpu_reference(OpId op, const Tokens& t, std::int64_t batch, std::int64_t seq_len, const std::int64_t* cu,
                        std::int64_t heads, std::int64_t dk, std::int64_t dv, const vla::Config& cfg,
                        const HostState* init) {
  switch (op) {
    case OpId::Vla: return run<vla::op::Vla>(t, batch, seq_len, cu, heads, dk, dv, cfg, init);
    case OpId::LinearAttention: return run<vla::op::LinearAttention>(t, batch, seq_len, cu, heads, dk, dv, cfg, init);
    default: return run<vla::op::DeltaNet>(t, batch, seq_len, cu, heads, dk, dv, cfg, init);
  }
}

GradReference cpu_backward_reference(const Tokens& t, const std::vector<float>& d_o, std::int64_t batch,
                                     std::int64_t seq_len, const std::int64_t* cu, std::int64_t heads, std::int64_t dk,
                                     std::int64_t dv, const vla::Config& cfg, const HostState* init,
                                     const HostState* d_final) {
  vla::ForwardArgs<double, double> a = extents(batch, seq_len, cu, heads, dk, dv);
  const std::vector<double> q = to_double(t.q), k = to_double(t.k), v = to_double(t.v), u = to_double(t.u),
                            go = to_double(d_o);
  std::vector<double> o(t.v.size());
  a.q = q.data(), a.k = k.data(), a.v = v.data(), a.u = u.data(), a.o = o.data();
  std::vector<double> A0, S0, z0, dA1, dS1, dz1;
  if (init) {
    A0 = to_double(init->A), S0 = to_double(init->S), z0 = to_double(init->z);
    a.initial_state = {A0.data(), S0.data(), z0.data(), init->steps.data()};
  }
  GradReference r;
  r.dq.resize(t.q.size()), r.dk.resize(t.k.size()), r.dv.resize(t.v.size()), r.du.resize(t.u.size());
  const std::int64_t count = batch * heads;
  r.dA.resize(count * dk * dk), r.dS.resize(count * dv * dk), r.dz.resize(count * dk);
  vla::GradArgs<double, double> g;
  g.d_o = go.data();
  if (d_final) {
    dA1 = to_double(d_final->A), dS1 = to_double(d_final->S), dz1 = to_double(d_final->z);
    g.d_final_state = {dA1.data(), dS1.data(), dz1.data(), nullptr};
  }
  g.d_q = r.dq.data(), g.d_k = r.dk.data(), g.d_v = r.dv.data(), g.d_u = r.du.data();
  g.d_initial_state = {r.dA.data(), r.dS.data(), r.dz.data(), nullptr};
  vla::CpuOptions opt;
  opt.threads = 0;
  vla::backward<vla::backend::Cpu, vla::op::Vla>(a, g, cfg, opt);
  return r;
}

HostState warm_state(OpId op, std::int64_t count, std::int64_t dk, std::int64_t dv, const vla::Config& cfg, int warm,
                     std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> ud(0.05f, 1.f);
  auto phi = [](float x) { return x > 0 ? x + 1.f : std::exp(x); };
  Tokens t;
  const std::int64_t n = count * warm;
  t.q.resize(n * dk), t.k.resize(n * dk), t.u.resize(n * dk), t.v.resize(n * dv), t.beta.resize(n);
  for (auto& x : t.q) x = phi(nd(rng));
  for (auto& x : t.k) x = phi(nd(rng));
  for (auto& x : t.u) x = nd(rng);
  for (auto& x : t.v) x = nd(rng);
  for (auto& x : t.beta) x = ud(rng);
  // [count, warm, 1, D]: one head per entry.
  const Reference r = cpu_reference(op, t, count, warm, nullptr, 1, dk, dv, cfg, nullptr);
  HostState h;
  h.resize(count, dk, dv);
  if (op == OpId::Vla) {
    for (std::size_t i = 0; i < r.A.size(); ++i) h.A[i] = static_cast<float>(r.A[i]);
    for (std::int64_t c = 0; c < count; ++c)  // exactly symmetric after rounding
      for (std::int64_t i = 0; i < dk; ++i)
        for (std::int64_t j = 0; j < i; ++j) h.A[(c * dk + j) * dk + i] = h.A[(c * dk + i) * dk + j];
  } else {
    for (std::int64_t c = 0; c < count; ++c)
      for (std::int64_t i = 0; i < dk; ++i) h.A[(c * dk + i) * dk + i] = 1.f;
  }
  for (std::size_t i = 0; i < r.S.size(); ++i) h.S[i] = static_cast<float>(r.S[i]);
  for (std::size_t i = 0; i < r.z.size(); ++i) h.z[i] = static_cast<float>(r.z[i]);
  h.steps = r.steps;
  return h;
}

}  // namespace vtest
