// tools/experiments/common.hpp — what every experiment shares: a portable seeded RNG, a job pool
// over seeds, statistics, CSV and Markdown table writers, the paper's random-init projections.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "vla/vla.hpp"

namespace vlaexp {

using Vec = Eigen::VectorXd;
using Mat = Eigen::MatrixXd;

/// Settings shared by every experiment (from the command line).
struct Options {
  std::string out_dir = "docs/figures";
  int threads = 0;      ///< 0 = all hardware threads
  double scale = 1.0;   ///< multiplies the long sequence lengths (e.g. 0.1 for a quick smoke run)
};

/// splitmix64 with Box–Muller: the same numbers on every platform and standard library.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : s_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  /// Uniform in (0, 1).
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  double normal() {
    if (have_spare_) {
      have_spare_ = false;
      return spare_;
    }
    const double r = std::sqrt(-2.0 * std::log(uniform())), th = 6.283185307179586 * uniform();
    spare_ = r * std::sin(th);
    have_spare_ = true;
    return r * std::cos(th);
  }
  std::int64_t below(std::int64_t n) { return static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(n)); }
  Vec normal_vec(Eigen::Index n) {
    Vec x(n);
    for (Eigen::Index i = 0; i < n; ++i) x[i] = normal();
    return x;
  }
  Mat normal_mat(Eigen::Index r, Eigen::Index c) {
    Mat m(r, c);
    for (Eigen::Index j = 0; j < c; ++j)
      for (Eigen::Index i = 0; i < r; ++i) m(i, j) = normal();
    return m;
  }
  /// PyTorch nn.Linear's default weight init: U(−1/√fan_in, 1/√fan_in). Rows = out, cols = in.
  Mat linear_init(Eigen::Index out, Eigen::Index in) {
    const double b = 1.0 / std::sqrt(static_cast<double>(in));
    Mat m(out, in);
    for (Eigen::Index j = 0; j < in; ++j)
      for (Eigen::Index i = 0; i < out; ++i) m(i, j) = b * (2.0 * uniform() - 1.0);
    return m;
  }

 private:
  std::uint64_t s_;
  double spare_ = 0;
  bool have_spare_ = false;
};

/// A seed for (experiment, configuration, seed index): fixed, so reruns reproduce.
inline std::uint64_t seed_of(const std::string& what, std::uint64_t seed) {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char ch : what) h = (h ^ ch) * 1099511628211ull;
  return h ^ (seed * 0x9E3779B97F4A7C15ull);
}

/// Runs fn(i) for i in [0, n) on `threads` workers pulling jobs in order; results must be written
/// by index, so they do not depend on the thread count. Rethrows the first exception.
inline void parallel_jobs(std::int64_t n, int threads, const std::function<void(std::int64_t)>& fn) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = static_cast<int>(std::min<std::int64_t>(threads, std::max<std::int64_t>(n, 1)));
  std::atomic<std::int64_t> next{0};
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(threads));
  auto worker = [&](int w) {
    try {
      for (std::int64_t i; (i = next++) < n;) fn(i);
    } catch (...) {
      errors[static_cast<std::size_t>(w)] = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (int w = 1; w < threads; ++w) pool.emplace_back(worker, w);
  worker(0);
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// ---- statistics -------------------------------------------------------------------------------

struct Stats {
  double mean = 0, sd = 0, min = 0, max = 0;
  std::size_t n = 0;
};
inline Stats stats(const std::vector<double>& x) {
  Stats s;
  s.n = x.size();
  if (x.empty()) return s;
  s.min = *std::min_element(x.begin(), x.end());
  s.max = *std::max_element(x.begin(), x.end());
  for (double v : x) s.mean += v;
  s.mean /= static_cast<double>(x.size());
  if (x.size() > 1) {
    double ss = 0;
    for (double v : x) ss += (v - s.mean) * (v - s.mean);
    s.sd = std::sqrt(ss / static_cast<double>(x.size() - 1));  // sample sd
  }
  return s;
}
/// Linear-interpolated quantile, p in [0, 1].
inline double quantile(std::vector<double> x, double p) {
  if (x.empty()) return std::nan("");
  std::sort(x.begin(), x.end());
  const double pos = p * static_cast<double>(x.size() - 1);
  const std::size_t i = static_cast<std::size_t>(pos);
  if (i + 1 >= x.size()) return x.back();
  return x[i] + (pos - static_cast<double>(i)) * (x[i + 1] - x[i]);
}

/// Number formatting for tables: `sig` significant digits, scientific outside [1e-3, 1e5).
inline std::string fmt(double v, int sig = 3) {
  if (std::isnan(v)) return "n/a";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const double a = std::fabs(v);
  if (a != 0 && (a < 1e-3 || a >= 1e5))
    std::snprintf(buf, sizeof buf, "%.*e", sig - 1, v);
  else
    std::snprintf(buf, sizeof buf, "%.*g", sig, v);
  return buf;
}
inline std::string fixed(double v, int decimals) {
  if (std::isnan(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}
/// An integer with thousands separators: 1000000 → "1,000,000".
inline std::string grouped(std::int64_t v) {
  std::string s = std::to_string(v), out;
  const int n = static_cast<int>(s.size());
  for (int i = 0; i < n; ++i) {
    out += s[static_cast<std::size_t>(i)];
    if ((n - 1 - i) % 3 == 0 && i != n - 1 && s[static_cast<std::size_t>(i)] != '-') out += ',';
  }
  return out;
}
inline std::string pm(const Stats& s, int sig = 3) { return fmt(s.mean, sig) + " ± " + fmt(s.sd, 2); }

// ---- output -----------------------------------------------------------------------------------

/// A CSV file: header once, then rows of mixed fields.
class Csv {
 public:
  Csv(const std::string& path, const std::string& header) : f_(path) {
    if (!f_) throw std::runtime_error("cannot write " + path);
    f_ << header << '\n';
  }
  template <class... T>
  void row(const T&... fields) {
    std::ostringstream os;
    os.precision(6);
    bool first = true;
    auto put = [&](const auto& v) {
      if (!first) os << ',';
      first = false;
      os << v;
    };
    (put(fields), ...);
    f_ << os.str() << '\n';
  }

 private:
  std::ofstream f_;
};

/// A Markdown table, written to <out_dir>/tables/<name>.md and spliced into docs/experiments.md.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  std::string str() const {
    std::string s = "|";
    for (auto& h : header_) s += " " + h + " |";
    s += "\n|";
    for (std::size_t i = 0; i < header_.size(); ++i) s += i == 0 ? "---|" : "--:|";
    s += "\n";
    for (auto& r : rows_) {
      s += "|";
      for (auto& c : r) s += " " + c + " |";
      s += "\n";
    }
    return s;
  }
  void write(const Options& o, const std::string& name, const std::string& note = "") const {
    std::ofstream f(o.out_dir + "/tables/" + name + ".md");
    if (!f) throw std::runtime_error("cannot write table " + name);
    f << str();
    if (!note.empty()) f << "\n" << note << "\n";
  }

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

/// Log-spaced checkpoints 1 .. T (about `per_decade` per decade), always including `extra`.
inline std::vector<std::int64_t> log_checkpoints(std::int64_t T, int per_decade, std::vector<std::int64_t> extra = {}) {
  std::vector<std::int64_t> c = std::move(extra);
  const double steps = std::log10(static_cast<double>(T)) * per_decade;
  for (int i = 0; i <= static_cast<int>(std::ceil(steps)); ++i)
    c.push_back(std::min<std::int64_t>(T, std::llround(std::pow(10.0, i / static_cast<double>(per_decade)))));
  c.push_back(T);
  std::sort(c.begin(), c.end());
  c.erase(std::unique(c.begin(), c.end()), c.end());
  c.erase(std::remove_if(c.begin(), c.end(), [&](std::int64_t x) { return x < 1 || x > T; }), c.end());
  return c;
}

// ---- the paper's random-init projections ------------------------------------------------------

/// LayerNorm without affine parameters (its init: weight 1, bias 0), column-wise, eps 1e-5.
inline void layer_norm_cols(const Mat& x, Mat& y) {
  y.resize(x.rows(), x.cols());
  for (Eigen::Index j = 0; j < x.cols(); ++j) {
    const double mu = x.col(j).mean();
    const double var = (x.col(j).array() - mu).square().mean();
    y.col(j) = (x.col(j).array() - mu) / std::sqrt(var + 1e-5);
  }
}
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

/// ELU+1 applied in place to a matrix.
inline void phi_inplace(Mat& m) { vla::elu_plus_one_inplace(m.data(), static_cast<std::int64_t>(m.size())); }

void run_state_norm(const Options& o);
void run_adversarial(const Options& o);
void run_jacobian(const Options& o);
void run_recall(const Options& o);
void run_time_split(const Options& opt);
void run_soak(const Options& opt);
void run_state_norm_tinylm(const Options& opt);  // only where vla::io is built (VLA_EXPERIMENTS_TINYLM)

}  // namespace vlaexp
