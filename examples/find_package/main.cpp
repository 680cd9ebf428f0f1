#include <vla/vla.hpp>

#include <cstdio>

int main() {
  vla::VlaState<double> head(8, 4);
  const Eigen::VectorXd q = Eigen::VectorXd::Constant(8, 0.5), v = Eigen::VectorXd::Constant(4, 1.0);
  const Eigen::VectorXd o = head.step(q, q, v, q);
  std::printf("vla consumer: |o| = %.6f after %lld step\n", o.norm(), static_cast<long long>(head.steps()));
  return o.allFinite() ? 0 : 1;
}
