// libFuzzer harness: the CPU forward's host checks (extents, cu_seqlens, initial states of
// arbitrary bits, NaN/Inf anywhere, options) for all three ops and both paths. Invariants:
//  - a rejected call throws std::invalid_argument and leaves o and the final state bit for bit
//    as they were (any other exception is a failure);
//  - an accepted call whose tokens are bounded and whose state starts fresh writes no NaN into o or
//    the final state. The bound is what each op can represent: VLA normalises k, u and α and its
//    output rule is scale-safe (docs/maths.md §2), so any |x| ≤ 1e30; linear attention's S = Σ v kᵀ
//    and DeltaNet's o = S q are plain products, so |x| ≤ 1e9 keeps their true results in float's
//    range (beyond it an overflow to ±inf, and inf − inf, is the float format's, not a bug).
#include <vla/vla.hpp>

#include <stdexcept>
#include <type_traits>
#include <vector>

#include "fuzz_common.hpp"

namespace {

template <class Op>
void run(vfuzz::Reader& in) {
  const bool bounded = in.byte() % 2 == 0;
  const int max_exp = std::is_same<Op, vla::op::Vla>::value ? 30 : 9;
  auto value = [&] { return bounded ? in.bounded_float(max_exp) : in.raw_float(); };
  vla::ForwardArgs<float> a;
  a.batch = in.range(-1, 3);
  a.seq_len = in.range(-1, 6);
  a.heads = in.range(0, 3);
  a.dk = in.range(0, 5);
  a.dv = in.range(0, 5);
  const bool varlen = in.byte() % 3 == 0;
  std::vector<std::int64_t> cu;
  std::int64_t tokens = std::max<std::int64_t>(0, a.batch) * std::max<std::int64_t>(0, a.seq_len);
  if (varlen && a.batch >= 0) {
    cu.resize(static_cast<std::size_t>(a.batch + 1));
    for (auto& c : cu) c = in.range(-1, 12);  // may start off 0 or decrease: must be refused
    if (in.byte() % 2) {                      // usually a valid prefix sum
      cu[0] = 0;
      for (std::size_t i = 1; i < cu.size(); ++i) cu[i] = cu[i - 1] + (cu[i] < 0 ? 0 : cu[i] % 5);
    }
    a.cu_seqlens = cu.data();
    tokens = 0;
    for (auto c : cu) tokens = std::max(tokens, c);
  }
  const std::int64_t H = std::max<std::int64_t>(0, a.heads), dk = std::max<std::int64_t>(0, a.dk),
                     dv = std::max<std::int64_t>(0, a.dv);
  std::vector<float> q(std::size_t(tokens * H * dk) + 1), k(q.size()), u(q.size()), v(std::size_t(tokens * H * dv) + 1),
      beta(std::size_t(tokens * H) + 1), o(v.size());
  for (auto* x : {&q, &k, &u, &v}) for (auto& e : *x) e = value();
  for (auto& e : beta) e = in.byte() % 16 == 0 ? value() : static_cast<float>(in.range(1, 255)) / 255.f;
  a.q = in.byte() % 32 ? q.data() : nullptr;
  a.k = k.data(), a.v = v.data(), a.u = u.data(), a.beta = beta.data(), a.o = o.data();
  const std::int64_t pairs = std::max<std::int64_t>(0, a.batch) * H;
  std::vector<float> A0(std::size_t(pairs * dk * dk) + 1), S0(std::size_t(pairs * dv * dk) + 1), z0(std::size_t(pairs * dk) + 1);
  std::vector<std::int64_t> t0(std::size_t(pairs) + 1);
  const bool with_init = in.byte() % 2 == 0;
  if (with_init) {
    const bool good = in.byte() % 2 == 0;  // a valid SPD start, or arbitrary bits
    for (std::int64_t p = 0; p < pairs; ++p)
      for (std::int64_t i = 0; i < dk; ++i)
        for (std::int64_t j = 0; j < dk; ++j)
          A0[std::size_t((p * dk + i) * dk + j)] = good ? (i == j ? 1.f + float(in.byte() % 16) / 4.f : 0.f)
                                                        : in.raw_float();
    for (auto& e : S0) e = good ? in.bounded_float() * 1e-20f : in.raw_float();
    for (auto& e : z0) e = good ? 0.f : in.raw_float();
    for (auto& e : t0) e = good ? in.range(0, 40) : in.i64();
    a.initial_state = {A0.data(), S0.data(), z0.data(), t0.data()};
    if (in.byte() % 8 == 0) a.initial_state.z = nullptr;  // partial: must be refused
  }
  std::vector<float> A1(A0.size(), -7.f), S1(S0.size(), -7.f), z1(z0.size(), -7.f);
  std::vector<std::int64_t> t1(t0.size(), -7);
  if (in.byte() % 2) a.final_state = {A1.data(), S1.data(), z1.data(), t1.data()};
  vla::Config cfg;
  if (in.byte() % 4 == 0) cfg.refresh_period = in.range(-1, 7);
  // λ0 within three decades of the default for the no-NaN check; any bits for the rejection check.
  // (At λ0 ~ 1e-19, A0 ~ 1e18·I, float Sherman–Morrison cancels catastrophically on a repeated
  // direction and A stops being positive definite: found by this harness, docs/maths.md §6.)
  const bool odd_lambda = in.byte() % 8 == 0;
  if (odd_lambda) cfg.lambda0 = bounded ? 0.1 * std::pow(10.0, in.range(-3, 3)) : double(in.raw_float());
  vla::CpuOptions opt;
  opt.threads = in.range(-1, 2);
  opt.path = static_cast<vla::Path>(in.range(0, 2));
  opt.chunk = in.range(-1, 5);
  opt.check_positive_definite = in.byte() % 2;
  for (auto& e : o) e = -7.f;
  const std::vector<float> o0 = o, A10 = A1, S10 = S1, z10 = z1;
  const std::vector<std::int64_t> t10 = t1;
  try {
    vla::forward<vla::backend::Cpu, Op>(a, cfg, opt);
  } catch (const std::invalid_argument&) {
    auto same = [](const auto& x, const auto& y) { return std::memcmp(x.data(), y.data(), x.size() * sizeof(x[0])) == 0; };
    if (!same(o, o0) || !same(A1, A10) || !same(S1, S10) || !same(z1, z10) || !same(t1, t10))
      vfuzz::broken("a rejected forward wrote to o or the final state");
    return;
  }
  if (bounded && !with_init) {
    for (float e : o)
      if (std::isnan(e)) vfuzz::broken("NaN in o from bounded tokens and a fresh state");
    if (a.final_state.S)
      for (auto* x : {&A1, &S1, &z1})
        for (float e : *x)
          if (std::isnan(e)) vfuzz::broken("NaN in the final state from bounded tokens and a fresh state");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  vfuzz::Reader in{data, size};
  switch (in.byte() % 3) {
    case 0: run<vla::op::Vla>(in); break;
    case 1: run<vla::op::LinearAttention>(in); break;
    default: run<vla::op::DeltaNet>(in); break;
  }
  return 0;
}
