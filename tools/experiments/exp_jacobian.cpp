// Experiment 3: the recurrence Jacobian J_t = I − k̂α̂ᵀ (docs/maths.md §5), next to the paper's
// "Proposition 2: ‖J_t‖₂ = 1 exactly".
//
// Per step: ‖J_t‖₂ from the closed form of c_t = k̂ᵀα̂ (vla::measure), checked against an SVD of
// the explicit J_t every 97 steps. Over non-overlapping windows of W = 10, 100, 1000 steps: the
// product J_{t+1}···J_{t+W} (the factor by which S_{t+W} depends on S_t) formed explicitly in
// double (P ← P − (P k̂)α̂ᵀ each step), its 2-norm by an SVD, and next to it the bound ∏‖J‖₂
// that "norm 1 per step" reasoning uses.
#include <Eigen/SVD>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "common.hpp"
#include "vla/diagnostics.hpp"

namespace vlaexp {
namespace {

constexpr int kDk = 32;
constexpr int kWindows[] = {10, 100, 1000};
constexpr int kNumW = 3;

struct Setting {
  const char* name;
  const char* what;
};
const Setting kSettings[] = {
    {"paper_head", "one head of the paper's setting: random tokens, embeddings, LayerNorm, ELU+1 key projection; u = k"},
    {"u_indep", "random ELU+1 keys, u independent N(0, I)"},
    {"u_subspace", "random ELU+1 keys, u confined to a fixed 8-dim subspace (docs/maths.md §5: “up to 1.35”)"},
    {"aligned_span", "keys (= u) in a fixed 4-dim positive cone"},
};
constexpr int kNumSettings = sizeof(kSettings) / sizeof(kSettings[0]);

struct Result {
  std::vector<double> jac;                // every step
  std::vector<double> logp[kNumW];        // log10 ‖P_W‖₂ per window
  std::vector<double> logbound[kNumW];    // log10 ∏‖J‖₂ per window
  double svd_max_err = 0;                 // max |closed form − SVD|
  std::int64_t exactly_one = 0;           // steps with ‖J‖₂ == 1 to 1e-12
  std::int64_t exactly_one_first = 0;     // of which the first step (A isotropic before it)
};

Result run(int setting, std::uint64_t seed, std::int64_t T) {
  Rng r(seed_of(std::string("jac-") + kSettings[setting].name, seed));
  // paper_head: embeddings and the key projection of one head.
  Mat E, Wk, basis;
  if (setting == 0) {
    E = r.normal_mat(128, 8192);
    Wk = r.linear_init(kDk, 128);
  }
  if (setting == 2) basis = r.normal_mat(kDk, 8);
  if (setting == 3) {
    basis = r.normal_mat(kDk, 4);
    phi_inplace(basis);
  }
  vla::VlaState<double> st(kDk, kDk);
  Result res;
  res.jac.reserve(static_cast<std::size_t>(T));
  const Mat I = Mat::Identity(kDk, kDk);
  Mat P[kNumW], J(kDk, kDk);
  Vec pk(kDk);
  double logb[kNumW] = {0, 0, 0};
  for (auto& p : P) p = I;
  Vec q, k, v, u, o(kDk), x(128), xn;
  Mat X(128, 1), Xn;
  for (std::int64_t t = 0; t < T; ++t) {
    v = r.normal_vec(kDk);
    q = vla::elu_plus_one(r.normal_vec(kDk));
    switch (setting) {
      case 0: {
        X.col(0) = E.col(r.below(8192));
        layer_norm_cols(X, Xn);
        k = vla::elu_plus_one(Wk * Xn.col(0));
        u = k;
        break;
      }
      case 1: k = vla::elu_plus_one(r.normal_vec(kDk)); u = r.normal_vec(kDk); break;
      case 2: k = vla::elu_plus_one(r.normal_vec(kDk)); u = basis * r.normal_vec(8); break;
      case 3: k = basis * r.normal_vec(4).cwiseAbs(); u = k; break;
    }
    st.step_unchecked(q, k, v, u, o);
    const vla::DiagnosticRecord rec = vla::measure<double>(st, k, vla::DiagnosticsOptions::Condition::Off);
    res.jac.push_back(rec.jacobian);
    if (std::fabs(rec.jacobian - 1.0) < 1e-12) {
      ++res.exactly_one;
      res.exactly_one_first += t == 0;
    }
    // The explicit J_t = I − k̂ α̂ᵀ with α = A_t k̂ (A_t: the A after this step's update and refresh).
    const Vec kh = k.normalized();
    const Vec ah = (st.A() * kh).normalized();
    J = I - kh * ah.transpose();
    if (t % 97 == 0) {
      Eigen::JacobiSVD<Mat> svd(J);
      res.svd_max_err = std::max(res.svd_max_err, std::fabs(svd.singularValues()(0) - rec.jacobian));
    }
    for (int w = 0; w < kNumW; ++w) {
      // S_t = S_{t−1} J_t, so the window's map is J_{t+1} J_{t+2} ···, right-multiplied:
      // P ← P J_t = P − (P k̂) α̂ᵀ (the same product, in O(dk²) instead of a dense O(dk³) multiply).
      pk.noalias() = P[w] * kh;
      P[w].noalias() -= pk * ah.transpose();
      logb[w] += std::log10(rec.jacobian);
      if ((t + 1) % kWindows[w] == 0) {
        Eigen::JacobiSVD<Mat> svd(P[w]);
        res.logp[w].push_back(std::log10(svd.singularValues()(0)));
        res.logbound[w].push_back(logb[w]);
        P[w] = I;
        logb[w] = 0;
      }
    }
  }
  return res;
}

}  // namespace

void run_jacobian(const Options& opt) {
  const int seeds = 5;
  const std::int64_t T = 10000;
  std::fprintf(stderr, "[jacobian] %d settings x %d seeds, T = %lld\n", kNumSettings, seeds, static_cast<long long>(T));
  std::vector<Result> res(static_cast<std::size_t>(kNumSettings * seeds));
  parallel_jobs(kNumSettings * seeds, opt.threads, [&](std::int64_t i) {
    res[static_cast<std::size_t>(i)] = run(static_cast<int>(i / seeds), static_cast<std::uint64_t>(i % seeds), T);
  });

  // Histogram of ‖J_t‖₂ − 1 on a log scale (all seeds pooled), as a density per decade.
  {
    Csv csv(opt.out_dir + "/jacobian_hist.csv", "setting,log10_jm1_center,density,count,steps");
    const double lo = -6, hi = 0, nb = 60, width = (hi - lo) / nb;
    for (int s = 0; s < kNumSettings; ++s) {
      std::vector<std::int64_t> cnt(static_cast<std::size_t>(nb), 0);
      std::int64_t n = 0, below = 0;
      for (int seed = 0; seed < seeds; ++seed)
        for (double j : res[static_cast<std::size_t>(s * seeds + seed)].jac) {
          ++n;
          const double x = std::log10(std::max(j - 1.0, 1e-300));
          if (x < lo) {
            ++below;
            continue;
          }
          cnt[static_cast<std::size_t>(std::min(nb - 1, std::floor((x - lo) / width)))]++;
        }
      for (int b = 0; b < static_cast<int>(nb); ++b)
        csv.row(kSettings[s].name, lo + (b + 0.5) * width,
                static_cast<double>(cnt[static_cast<std::size_t>(b)]) / static_cast<double>(n) / width,
                cnt[static_cast<std::size_t>(b)], n);
      (void)below;
    }
  }
  // Per-step norms: quantiles per seed, then mean ± sd over seeds.
  Table t1({"setting", "min ‖J_t‖₂", "median", "99th pct.", "max", "steps with ‖J_t‖₂ = 1", "closed form vs SVD"});
  Csv qcsv(opt.out_dir + "/jacobian_quantiles.csv", "setting,seed,min,median,p99,max,exactly_one,steps,svd_max_err");
  for (int s = 0; s < kNumSettings; ++s) {
    std::vector<double> mn, md, p99, mx;
    std::int64_t ones = 0, ones_first = 0, steps = 0;
    double err = 0;
    for (int seed = 0; seed < seeds; ++seed) {
      const Result& r = res[static_cast<std::size_t>(s * seeds + seed)];
      mn.push_back(quantile(r.jac, 0));
      md.push_back(quantile(r.jac, 0.5));
      p99.push_back(quantile(r.jac, 0.99));
      mx.push_back(quantile(r.jac, 1));
      ones += r.exactly_one;
      ones_first += r.exactly_one_first;
      steps += static_cast<std::int64_t>(r.jac.size());
      err = std::max(err, r.svd_max_err);
      qcsv.row(kSettings[s].name, seed, mn.back(), md.back(), p99.back(), mx.back(), r.exactly_one, r.jac.size(),
               r.svd_max_err);
    }
    t1.row({kSettings[s].name, pm(stats(mn), 5), pm(stats(md), 5), pm(stats(p99), 5), pm(stats(mx), 4),
            grouped(ones) + " of " + grouped(steps) + (ones > 0 && ones == ones_first ? " (step 1 of each seed)" : ""), "≤ " + fmt(err, 2)});
  }
  std::string note = "T = " + grouped(T) + " steps per seed, seeds 0–" + std::to_string(seeds - 1) +
                     ", dk = 32, float64, library defaults; quantiles per seed, then mean ± sd over seeds. Settings:\n";
  for (const auto& sd : kSettings) note += "- `" + std::string(sd.name) + "`: " + sd.what + "\n";
  t1.write(opt, "jacobian_steps", note);

  // Window products.
  Table t2({"setting", "W", "median ‖J_{t+1}···J_{t+W}‖₂", "max over windows", "median ∏‖J‖₂ (the naive bound)",
            "windows with product norm > 1 + 1e-9"});
  Csv wcsv(opt.out_dir + "/jacobian_windows.csv", "setting,W,seed,log10_min,log10_p10,log10_median,log10_p90,log10_max,log10_bound_median,windows,above_one");
  for (int s = 0; s < kNumSettings; ++s)
    for (int w = 0; w < kNumW; ++w) {
      std::vector<double> med, mx, bnd;
      std::int64_t above = 0, total = 0;
      for (int seed = 0; seed < seeds; ++seed) {
        const Result& r = res[static_cast<std::size_t>(s * seeds + seed)];
        const auto& lp = r.logp[w];
        med.push_back(quantile(lp, 0.5));
        mx.push_back(quantile(lp, 1));
        bnd.push_back(quantile(r.logbound[w], 0.5));
        std::int64_t a = 0;
        for (double x : lp) a += x > 1e-9;  // > 1 beyond rounding
        above += a;
        total += static_cast<std::int64_t>(lp.size());
        wcsv.row(kSettings[s].name, kWindows[w], seed, quantile(lp, 0), quantile(lp, 0.1), med.back(),
                 quantile(lp, 0.9), mx.back(), bnd.back(), lp.size(), a);
      }
      auto p10 = [](const Stats& st) { return fmt(std::pow(10.0, st.mean)) + " (10^±" + fmt(st.sd, 2) + ")"; };
      t2.row({kSettings[s].name, std::to_string(kWindows[w]), p10(stats(med)), p10(stats(mx)), p10(stats(bnd)),
              std::to_string(above) + " of " + std::to_string(total)});
    }
  t2.write(opt, "jacobian_windows",
           "Non-overlapping windows over the same runs. Norms are 10^(mean over seeds of log10 of the per-seed "
           "median / max), with the sd of that log10 over seeds. For W < dk = 32 the product has norm ≥ 1 whatever "
           "the inputs (some direction is orthogonal to all W keys and passes unchanged), so W = 10 tests amplification "
           "only; W ≥ 100 can show decay.");
}

}  // namespace vlaexp
