// Experiment 5: the time split's conditioning (docs/maths.md §4b, vla/time_split.hpp). One head,
// dk = dv = 64 (the GPU kernels' size), library defaults (refresh every 20 steps), T = 32,768 × scale
// tokens split into R = 1 … 512 spans (span length T/R), in float64 and float32, against the unsplit
// float64 run on the same inputs (rounded to float once, so both precisions see the same numbers).
// Also the all-gather variant: every span's A summary composed pairwise into one for the whole
// stream, applied to the initial A, against the unsplit final A.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "common.hpp"
#include "vla/time_split.hpp"

namespace vlaexp {
namespace {

constexpr int kD = 64;
constexpr int kSeeds = 3;
const int kSpans[] = {1, 8, 64, 512};

struct StreamDef {
  const char* name;
  const char* what;
};
const StreamDef kStreams[] = {
    {"random_u_eq_k", "random ELU+1 keys, u = k (the paper's setting)"},
    {"random_u_indep", "random ELU+1 keys, u independent N(0, I)"},
    {"repeated_key", "one ELU+1 key repeated for the whole stream, u = k (A shrinks along one direction only)"},
    {"u_subspace", "u confined to a fixed 16-dim subspace (a quarter of the space), keys random"},
};
constexpr int kNumStreams = sizeof(kStreams) / sizeof(kStreams[0]);

using Rows = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowsF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct Inputs {
  Rows q, k, v, u;
};

Inputs make(int kind, std::int64_t T, std::uint64_t seed) {
  Rng r(seed);
  Inputs in{Rows(T, kD), Rows(T, kD), Rows(T, kD), Rows(T, kD)};
  auto elu1 = [](double x) { return x > 0 ? x + 1 : std::exp(x); };
  Vec key0(kD);
  for (int i = 0; i < kD; ++i) key0[i] = elu1(r.normal());
  for (std::int64_t t = 0; t < T; ++t)
    for (int i = 0; i < kD; ++i) {
      in.q(t, i) = elu1(r.normal());
      in.k(t, i) = kind == 2 ? key0[i] : elu1(r.normal());
      in.v(t, i) = r.normal();
      const double g = r.normal();
      in.u(t, i) = kind == 1 ? g : kind == 3 ? (i < kD / 4 ? g : 0.0) : in.k(t, i);
    }
  // Round once to float: both precisions see the same inputs.
  for (Rows* m : {&in.q, &in.k, &in.v, &in.u}) *m = m->cast<float>().cast<double>();
  return in;
}

double rel(const Mat& a, const Mat& b) { return (a - b).norm() / b.norm(); }

struct Result {
  double o = 0, S = 0, A = 0, mismatch = 0;
};

template <class Scalar>
Result run(const Inputs& in, int spans, const Rows& o_ref, const vla::VlaSnapshot<double>& fin_ref, int threads) {
  const vla::Config cfg;
  using R = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const R q = in.q.cast<Scalar>(), k = in.k.cast<Scalar>(), v = in.v.cast<Scalar>(), u = in.u.cast<Scalar>();
  R o(q.rows(), v.cols());
  vla::SplitStats st;
  const auto fin = vla::split_forward<Scalar>(cfg, vla::VlaState<Scalar>(kD, kD, cfg).save(), q, k, v, u, o,
                                              {spans, threads}, &st);
  Result r;
  r.o = rel(o.template cast<double>(), o_ref);
  r.S = rel(fin.S.template cast<double>(), fin_ref.S);
  r.A = rel(fin.A.template cast<double>(), fin_ref.A);
  r.mismatch = st.max_transfer_mismatch;
  return r;
}

/// Every span's A summary composed pairwise (an all-gather's tree), applied to the initial A.
template <class Scalar>
double tree_error(const Inputs& in, int spans, const vla::VlaSnapshot<double>& fin_ref) {
  const vla::Config cfg;
  const std::int64_t T = in.q.rows();
  using R = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const R k = in.k.cast<Scalar>(), u = in.u.cast<Scalar>();
  std::vector<vla::PenaltyTransfer<Scalar>> tr;
  for (int r = 0; r < spans; ++r) {
    const std::int64_t a = T * r / spans, b = T * (r + 1) / spans;
    tr.push_back(vla::penalty_transfer<Scalar>(cfg, a, u.middleRows(a, b - a), k.middleRows(a, b - a)));
  }
  while (tr.size() > 1) {
    std::vector<vla::PenaltyTransfer<Scalar>> up;
    for (std::size_t i = 0; i + 1 < tr.size(); i += 2) up.push_back(vla::compose(tr[i], tr[i + 1]));
    if (tr.size() % 2) up.push_back(tr.back());
    tr = up;
  }
  const vla::Matrix<Scalar> A0 = vla::VlaState<Scalar>(kD, kD, cfg).A();
  return rel(vla::apply_transfer(tr[0], A0).template cast<double>(), fin_ref.A);
}

}  // namespace

void run_time_split(const Options& opt) {
  const std::int64_t T = std::max<std::int64_t>(1024, std::int64_t(32768 * opt.scale));
  constexpr int kNumSpans = sizeof(kSpans) / sizeof(kSpans[0]);
  // [stream][spans][seed][precision]
  std::vector<Result> res(std::size_t(kNumStreams) * kNumSpans * kSeeds * 2);
  std::vector<double> tree(std::size_t(kNumStreams) * kSeeds * 2);
  parallel_jobs(std::int64_t(kNumStreams) * kSeeds, opt.threads, [&](std::int64_t job) {
    const int s = int(job / kSeeds), seed = int(job % kSeeds);
    const Inputs in = make(s, T, seed_of(std::string("time_split/") + kStreams[s].name, seed));
    const vla::Config cfg;
    vla::VlaState<double> ref(kD, kD, cfg);
    Rows o_ref(T, kD);
    for (std::int64_t t = 0; t < T; ++t)
      o_ref.row(t) = ref.step(in.q.row(t).transpose(), in.k.row(t).transpose(), in.v.row(t).transpose(),
                              in.u.row(t).transpose())
                         .transpose();
    const auto fin_ref = ref.save();
    for (int p = 0; p < kNumSpans; ++p) {
      auto at = [&](int prec) -> Result& {
        return res[((std::size_t(s) * kNumSpans + p) * kSeeds + seed) * 2 + prec];
      };
      at(0) = run<double>(in, kSpans[p], o_ref, fin_ref, 1);
      at(1) = run<float>(in, kSpans[p], o_ref, fin_ref, 1);
    }
    tree[(std::size_t(s) * kSeeds + seed) * 2 + 0] = tree_error<double>(in, 512, fin_ref);
    tree[(std::size_t(s) * kSeeds + seed) * 2 + 1] = tree_error<float>(in, 512, fin_ref);
  });

  Csv csv(opt.out_dir + "/time_split.csv", "stream,spans,span_length,seed,precision,err_o,err_S,err_A,summary_vs_steps");
  Table t({"stream", "spans R (span length)", "float64: o", "S", "A", "float32: o", "S", "A",
           "A summary vs its steps, f64 / f32"});
  for (int s = 0; s < kNumStreams; ++s)
    for (int p = 0; p < kNumSpans; ++p) {
      std::vector<double> col[2][4];
      for (int seed = 0; seed < kSeeds; ++seed)
        for (int prec = 0; prec < 2; ++prec) {
          const Result& r = res[((std::size_t(s) * kNumSpans + p) * kSeeds + seed) * 2 + prec];
          csv.row(kStreams[s].name, kSpans[p], T / kSpans[p], seed, prec == 0 ? "float64" : "float32", r.o, r.S, r.A,
                  r.mismatch);
          col[prec][0].push_back(r.o), col[prec][1].push_back(r.S), col[prec][2].push_back(r.A);
          col[prec][3].push_back(r.mismatch);
        }
      auto mx = [](const std::vector<double>& x) { return fmt(quantile(x, 1.0), 2); };
      t.row({kStreams[s].name, std::to_string(kSpans[p]) + " (" + grouped(T / kSpans[p]) + ")", mx(col[0][0]),
             mx(col[0][1]), mx(col[0][2]), mx(col[1][0]), mx(col[1][1]), mx(col[1][2]),
             kSpans[p] == 1 ? "—" : mx(col[0][3]) + " / " + mx(col[1][3])});
    }
  std::string note = "Relative Frobenius errors against the unsplit float64 run, worst of " + std::to_string(kSeeds) +
                     " seeds; T = " + grouped(T) + ", dk = dv = " + std::to_string(kD) +
                     ", defaults. R = 1 is the unsplit run itself (float32: its own rounding). "
                     "All-gather tree (512 summaries composed pairwise, applied once), error of the final A, worst seed: ";
  for (int s = 0; s < kNumStreams; ++s) {
    double w[2] = {0, 0};
    for (int seed = 0; seed < kSeeds; ++seed)
      for (int prec = 0; prec < 2; ++prec) w[prec] = std::max(w[prec], tree[(std::size_t(s) * kSeeds + seed) * 2 + prec]);
    note += std::string(s ? "; " : "") + kStreams[s].name + " " + fmt(w[0], 2) + " (f64), " + fmt(w[1], 2) + " (f32)";
  }
  t.write(opt, "time_split", note + ".");
  std::printf("%s\n%s\n", t.str().c_str(), note.c_str());
}

}  // namespace vlaexp
