// quickstart: stream a sequence through one VLA head, token by token, and save/restore its state.
#include <vla/vla.hpp>

#include <cstdio>
#include <random>

int main() {
  const int dk = 32, dv = 32, steps = 1000;
  vla::Config cfg;                   // the paper's defaults: λ0 = 0.1, refresh every 20 steps, ...
  vla::VlaState<float> head(dk, dv, cfg);

  std::mt19937 gen(7);
  std::normal_distribution<float> nd;
  auto randn = [&](int n) { return Eigen::VectorXf(Eigen::VectorXf::NullaryExpr(n, [&] { return nd(gen); })); };

  Eigen::VectorXf o;
  vla::VlaSnapshot<float> halfway;
  for (int t = 0; t < steps; ++t) {
    const Eigen::VectorXf q = vla::elu_plus_one(randn(dk)), k = vla::elu_plus_one(randn(dk));
    const Eigen::VectorXf v = randn(dv), u = k;  // penalty direction = key, the paper's choice
    o = head.step(q, k, v, u);                   // throws std::invalid_argument on bad input
    if (t == steps / 2) halfway = head.save();
    if (t % 200 == 0 || t == steps - 1)
      std::printf("t=%4lld  |o|=%.4f  |S|_F=%.4f  cond(A)~%.1f\n", static_cast<long long>(head.steps()), o.norm(),
                  head.S().norm(), head.penalty().condition_estimate());
  }
  // A saved state resumes exactly where it was (the refresh phase travels with it).
  vla::VlaState<float> resumed(halfway, cfg);
  std::printf("resumed at step %lld; |S|_F there was %.4f\n", static_cast<long long>(resumed.steps()),
              resumed.S().norm());
  return 0;
}
