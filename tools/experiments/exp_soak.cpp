// Experiment 6 (issue 13's soak, CPU): 10⁶ steps of one VLA head in float32 beside the same stream
// in float64, and how far float drifts. dk = dv = 64 (as the GPU soak, bench/gpu/soak_gpu.sh),
// library defaults (λ0 0.1, refresh every 20 steps by 1e-3, output normaliser on). Inputs are drawn
// in double and rounded once to float, so the two runs see the same tokens; the float64 run is the
// reference. Streams: the paper's setting (random ELU+1 keys, u = k), and two of experiment 2's
// harder ones at this length: values drifting 1 → 1e3 in scale, and rare 1e3 outliers in k, u, v.
//
// Measured at ten points of the stream (t = T/10, 2T/10, …): rel RMS of o over the 1,000 tokens
// before t; rel Frobenius distance of S and A from the float64 run and of z; ‖S‖_F and, in float64,
// the exact cond(A) (vla::measure). Any non-finite output or state is counted. T scales with --scale.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "common.hpp"
#include "vla/diagnostics.hpp"

namespace vlaexp {
namespace {

constexpr int kD = 64;
constexpr std::int64_t kWindow = 1000;

struct SoakStream {
  const char* name;
  const char* what;
};
const SoakStream kSoakStreams[] = {
    {"random_u_eq_k", "random ELU+1 keys, u = k (the paper's setting)"},
    {"value_drift", "as random_u_eq_k, value scale drifting geometrically 1 → 1e3 over the stream"},
    {"outliers", "as random_u_eq_k, each step with probability 1e-3 an outlier: k, u, v scaled by 1e3"},
};
constexpr int kNumSoak = sizeof(kSoakStreams) / sizeof(kSoakStreams[0]);

struct Point {
  std::int64_t t = 0;
  double o_window = 0, s_err = 0, a_err = 0, z_err = 0, s_norm = 0, cond = 0;
};
struct SoakResult {
  std::vector<Point> points;
  std::int64_t nonfinite = 0;
  double seconds = 0;
};

double rel_fro(const Mat& a, const Mat& ref) { return (a - ref).norm() / std::max(ref.norm(), 1e-300); }

SoakResult soak(int kind, std::int64_t T) {
  Rng r(seed_of(std::string("soak/") + kSoakStreams[kind].name, 0));
  const vla::Config cfg;
  vla::VlaState<double> ds(kD, kD, cfg);
  vla::VlaState<float> fs(kD, kD, cfg);
  Vec q(kD), k(kD), v(kD), u(kD), od(kD);
  Eigen::VectorXf qf(kD), kf(kD), vf(kD), uf(kD), of(kD);
  SoakResult res;
  double num = 0, den = 0;  // the current window's Σ|o_f − o_d|², Σ|o_d|²
  const auto t0 = std::chrono::steady_clock::now();
  for (std::int64_t t = 1; t <= T; ++t) {
    q = vla::elu_plus_one(r.normal_vec(kD));
    k = vla::elu_plus_one(r.normal_vec(kD));
    v = r.normal_vec(kD);
    if (kind == 1) v *= std::pow(1e3, static_cast<double>(t - 1) / static_cast<double>(T - 1));
    if (kind == 2 && r.uniform() < 1e-3) {
      k *= 1e3;
      v *= 1e3;
    }
    u = k;
    qf = q.cast<float>(), kf = k.cast<float>(), vf = v.cast<float>(), uf = u.cast<float>();
    // The float run takes the inputs as rounded; the reference takes the same rounded values.
    ds.step(qf.cast<double>(), kf.cast<double>(), vf.cast<double>(), uf.cast<double>(), od);
    fs.step(qf, kf, vf, uf, of);
    if (!of.allFinite()) ++res.nonfinite;
    if (t % (T / 10) > T / 10 - kWindow || t % (T / 10) == 0) {  // the window before a checkpoint
      num += (of.cast<double>() - od).squaredNorm();
      den += od.squaredNorm();
    }
    if (t % (T / 10) == 0) {
      Point p;
      p.t = t;
      p.o_window = std::sqrt(num / std::max(den, 1e-300));
      num = den = 0;
      p.s_err = rel_fro(fs.S().cast<double>(), ds.S());
      p.a_err = rel_fro(fs.A().cast<double>(), ds.A());
      p.z_err = (fs.z().cast<double>() - ds.z()).norm() / ds.z().norm();
      p.s_norm = ds.S().norm();
      p.cond = vla::measure<double>(ds, k, vla::DiagnosticsOptions::Condition::Exact).cond;
      if (!fs.S().allFinite() || !fs.A().allFinite() || !fs.z().allFinite()) ++res.nonfinite;
      res.points.push_back(p);
    }
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace

void run_soak(const Options& opt) {
  const std::int64_t T = std::max<std::int64_t>(10 * kWindow, std::llround(1e6 * opt.scale) / 10 * 10);
  std::fprintf(stderr, "[soak] %d streams, T = %lld, dk = dv = %d, float32 beside float64\n", kNumSoak,
               static_cast<long long>(T), kD);
  std::vector<SoakResult> res(kNumSoak);
  parallel_jobs(kNumSoak, opt.threads, [&](std::int64_t s) { res[s] = soak(static_cast<int>(s), T); });

  Csv csv(opt.out_dir + "/soak.csv", "stream,t,o_window_rel_rms,S_rel,A_rel,z_rel,S_norm_f64,cond_A_f64");
  Table tab({"stream", "worst o window (rel RMS)", "at t", "o window at T", "S at T", "A at T", "z at T",
             "max ‖S‖_F (f64)", "cond(A_T) f64", "non-finite", "s"});
  for (int s = 0; s < kNumSoak; ++s) {
    const SoakResult& r = res[s];
    const Point* worst = &r.points.front();
    double smax = 0;
    for (const Point& p : r.points) {
      csv.row(kSoakStreams[s].name, p.t, p.o_window, p.s_err, p.a_err, p.z_err, p.s_norm, p.cond);
      if (p.o_window > worst->o_window) worst = &p;
      smax = std::max(smax, p.s_norm);
    }
    const Point& last = r.points.back();
    tab.row({kSoakStreams[s].name, fmt(worst->o_window, 2), grouped(worst->t), fmt(last.o_window, 2), fmt(last.s_err, 2),
             fmt(last.a_err, 2), fmt(last.z_err, 2), fmt(smax, 3), fmt(last.cond, 3), std::to_string(r.nonfinite),
             fixed(r.seconds, 1)});
  }
  std::string note = "T = " + grouped(T) + " steps, one head, dk = dv = " + std::to_string(kD) +
                     ", library defaults; float32 against float64 on the same (rounded) inputs, errors relative. "
                     "o windows: the " + grouped(kWindow) + " tokens before each of ten checkpoints. Streams:\n";
  for (const auto& st : kSoakStreams) note += std::string("- `") + st.name + "`: " + st.what + "\n";
  tab.write(opt, "soak", note);
}

}  // namespace vlaexp
