// batched: the [B, T, H, D] forward on the CPU backend, then continue the same sequences from the
// returned final state (chunked prefill), and a variable-length batch through cu_seqlens.
#include <vla/vla.hpp>

#include <cstdio>
#include <random>
#include <vector>

int main() {
  const std::int64_t B = 2, T = 256, H = 4, dk = 64, dv = 64;
  std::mt19937 gen(1);
  std::normal_distribution<float> nd;
  auto randn = [&](std::size_t n) {
    std::vector<float> x(n);
    for (auto& e : x) e = nd(gen);
    return x;
  };
  std::vector<float> q = randn(B * T * H * dk), k = randn(B * T * H * dk), u = randn(B * T * H * dk),
                     v = randn(B * T * H * dv), o(B * T * H * dv);
  vla::elu_plus_one_inplace(q.data(), static_cast<std::int64_t>(q.size()));
  vla::elu_plus_one_inplace(k.data(), static_cast<std::int64_t>(k.size()));

  // Final state out: A [B,H,dk,dk], S [B,H,dv,dk], z [B,H,dk], steps [B,H].
  std::vector<float> A(B * H * dk * dk), S(B * H * dv * dk), z(B * H * dk);
  std::vector<std::int64_t> steps(B * H);

  vla::ForwardArgs<float> args;
  args.batch = B;
  args.seq_len = T;
  args.heads = H;
  args.dk = dk;
  args.dv = dv;
  args.q = q.data();
  args.k = k.data();
  args.v = v.data();
  args.u = u.data();
  args.o = o.data();
  args.final_state = {A.data(), S.data(), z.data(), steps.data()};
  vla::forward<vla::backend::Cpu>(args, vla::Config{}, vla::CpuOptions{0});  // 0 = all cores
  std::printf("fixed-length: B=%lld T=%lld H=%lld d=%lld, o[0]=%.5f, steps[0]=%lld\n", (long long)B, (long long)T,
              (long long)H, (long long)dk, o[0], (long long)steps[0]);

  // Continue from that state for one more token per sequence (a decode step is T = 1).
  vla::ForwardArgs<float> next = args;
  next.seq_len = 1;
  next.initial_state = {A.data(), S.data(), z.data(), steps.data()};
  next.final_state = {A.data(), S.data(), z.data(), steps.data()};  // in place is allowed
  vla::forward<vla::backend::Cpu>(next, vla::Config{});
  std::printf("after one decode step: steps[0]=%lld\n", (long long)steps[0]);

  // Variable-length batch: two sequences of 100 and 412 tokens packed as [512, H, D].
  const std::int64_t cu[] = {0, 100, 512};
  vla::ForwardArgs<float> var = args;
  var.cu_seqlens = cu;
  var.final_state = {};
  vla::forward<vla::backend::Cpu>(var, vla::Config{});
  std::printf("varlen: sequences of %lld and %lld tokens, o[last]=%.5f\n", (long long)(cu[1] - cu[0]),
              (long long)(cu[2] - cu[1]), o[(cu[2] - 1) * H * dv]);

  // Bad input is rejected before anything is written.
  q[5] = std::numeric_limits<float>::quiet_NaN();
  try {
    vla::forward<vla::backend::Cpu>(args, vla::Config{});
  } catch (const std::invalid_argument& e) {
    std::printf("rejected: %s\n", e.what());
  }
  return 0;
}
