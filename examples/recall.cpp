// recall: training-free associative recall. Write n random key→value pairs into VLA, DeltaNet and
// linear attention, then read every key back (S k) and count exact matches: the retrieved vector's
// nearest stored value (by cosine) is the one written with that key. No training: this measures the
// memory rule itself, not a trained model. Usage: vla_recall [dk] [seeds]
#include <vla/vla.hpp>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

namespace {

using Vec = Eigen::VectorXd;

template <class Memory, class Write>
double exact_match(const std::vector<Vec>& keys, const std::vector<Vec>& values, Memory& mem, Write write) {
  for (std::size_t i = 0; i < keys.size(); ++i) write(mem, keys[i], values[i]);
  int hits = 0;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const Vec r = mem.S() * keys[i];
    std::size_t best = 0;
    double best_cos = -2;
    for (std::size_t j = 0; j < values.size(); ++j) {
      const double c = r.dot(values[j]) / (r.norm() * values[j].norm() + 1e-300);
      if (c > best_cos) best_cos = c, best = j;
    }
    hits += (best == i);
  }
  return double(hits) / double(keys.size());
}

}  // namespace

int main(int argc, char** argv) {
  const int dk = argc > 1 ? std::atoi(argv[1]) : 64;
  const int seeds = argc > 2 ? std::atoi(argv[2]) : 5;
  if (dk < 8 || seeds < 1) {
    std::fprintf(stderr, "usage: vla_recall [dk >= 8] [seeds >= 1]\n");
    return 2;
  }
  std::printf("Training-free associative recall, dk = dv = %d, keys φ(x) = ELU(x)+1 of N(0,1), values N(0,1),\n"
              "query = key, mean exact match over %d seeds (VLA: u = k, paper defaults).\n\n", dk, seeds);
  std::printf("%8s %10s %10s %10s\n", "n_pairs", "VLA", "DeltaNet", "LinearAtt");
  for (int n : {dk / 8, dk / 4, dk / 2, 3 * dk / 4, dk, 3 * dk / 2, 2 * dk}) {
    double acc[3] = {0, 0, 0};
    for (int seed = 0; seed < seeds; ++seed) {
      std::mt19937 gen(1000u * static_cast<unsigned>(n) + static_cast<unsigned>(seed));
      std::normal_distribution<double> nd;
      std::vector<Vec> keys(n), values(n);
      for (int i = 0; i < n; ++i) {
        keys[i] = vla::elu_plus_one(Vec(Vec::NullaryExpr(dk, [&] { return nd(gen); })));
        values[i] = Vec::NullaryExpr(dk, [&] { return nd(gen); });
      }
      vla::VlaState<double> vla_mem(dk, dk);
      vla::DeltaNetState<double> delta_mem(dk, dk);
      vla::LinearAttentionState<double> linear_mem(dk, dk);
      acc[0] += exact_match(keys, values, vla_mem, [](auto& m, const Vec& k, const Vec& v) { m.step(k, k, v, k); });
      acc[1] += exact_match(keys, values, delta_mem, [](auto& m, const Vec& k, const Vec& v) { m.step(k, k, v, 1.0); });
      acc[2] += exact_match(keys, values, linear_mem, [](auto& m, const Vec& k, const Vec& v) { m.step(k, k, v); });
    }
    std::printf("%8d %9.1f%% %9.1f%% %9.1f%%\n", n, 100 * acc[0] / seeds, 100 * acc[1] / seeds, 100 * acc[2] / seeds);
  }
  std::printf("\nELU+1 keys are positive and so strongly correlated. VLA's penalty inverse A learns their shared\n"
              "direction from the pairs written so far and writes along A k instead of k, so its accuracy first\n"
              "rises with n; DeltaNet (beta = 1) overwrites along the shared direction. docs/experiments.md has\n"
              "the full study (random and correlated keys, several seeds, mean and spread).\n");
  return 0;
}
