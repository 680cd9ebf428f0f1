// The time split (docs/maths.md §4b, vla/time_split.hpp): one sequence cut into 1–16 spans whose
// summaries (z: a sum, A: a linear-fractional 2dk×2dk map, S: affine given A) join them, then every
// span rerun from its start — against the unsplit recurrence, in double and in float, on random and
// adversarial streams, with refresh steps on both sides of span boundaries, a warm initial state,
// zero vectors, more spans than tokens; summaries composed by a tree; refusals.
#include <cstdio>

#include "support.hpp"
#include "vla/time_split.hpp"

namespace {

template <class Scalar>
using Rows = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class Scalar>
Rows<Scalar> rows(const std::vector<double>& x, int T, int d) {
  return Eigen::Map<const Rows<double>>(x.data(), T, d).template cast<Scalar>();
}

template <class Scalar>
struct Inputs {
  Rows<Scalar> q, k, v, u;
  explicit Inputs(const vt::Stream& s)
      : q(rows<Scalar>(s.q, s.T, s.dk)), k(rows<Scalar>(s.k, s.T, s.dk)), v(rows<Scalar>(s.v, s.T, s.dv)),
        u(rows<Scalar>(s.u, s.T, s.dk)) {}
};

/// The unsplit run: VlaState stepped through every token.
template <class Scalar>
vla::VlaSnapshot<Scalar> unsplit(const vla::Config& cfg, const vla::VlaSnapshot<Scalar>& init, const Inputs<Scalar>& in,
                                 Rows<Scalar>& o) {
  vla::VlaState<Scalar> st(init, cfg);
  o.resize(in.q.rows(), in.v.cols());
  for (Eigen::Index t = 0; t < in.q.rows(); ++t)
    o.row(t) = st.step(in.q.row(t).transpose(), in.k.row(t).transpose(), in.v.row(t).transpose(),
                       in.u.row(t).transpose())
                   .transpose();
  return st.save();
}

template <class A, class B>
double rel(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  const double den = double(b.template cast<double>().norm());
  const double num = double((a.template cast<double>() - b.template cast<double>()).norm());
  return den > 0 ? num / den : num;
}

struct Errors {
  double o = 0, A = 0, S = 0, z = 0, mismatch = 0;
  double worst() const { return std::max({o, A, S, z}); }
};

/// Split run against the unsplit one, both in Scalar.
template <class Scalar>
Errors split_vs_unsplit(const vla::Config& cfg, const vla::VlaSnapshot<Scalar>& init, const vt::Stream& s, int spans,
                        int threads = 1) {
  const Inputs<Scalar> in(s);
  Rows<Scalar> o_ref, o(s.T, s.dv);
  o.setConstant(std::numeric_limits<Scalar>::quiet_NaN());  // poisoned: every row must be written
  const auto fin_ref = unsplit(cfg, init, in, o_ref);
  vla::SplitStats stats;
  const auto fin = vla::split_forward<Scalar>(cfg, init, in.q, in.k, in.v, in.u, o, {spans, threads}, &stats);
  REQUIRE(o.allFinite());
  REQUIRE(fin.steps == fin_ref.steps);
  Errors e;
  e.o = rel(o, o_ref), e.A = rel(fin.A, fin_ref.A), e.S = rel(fin.S, fin_ref.S), e.z = rel(fin.z, fin_ref.z);
  e.mismatch = stats.max_transfer_mismatch;
  return e;
}

/// Split run in Scalar (spans = 1: the unsplit run) against the unsplit run in double.
template <class Scalar>
Errors float_vs_float64(const vla::Config& cfg, const vt::Stream& s, int spans) {
  const Inputs<double> ind(s);
  const Inputs<Scalar> in(s);
  Rows<double> o_ref;
  const auto fin_ref = unsplit(cfg, vla::VlaState<double>(s.dk, s.dv, cfg).save(), ind, o_ref);
  Rows<Scalar> o(s.T, s.dv);
  vla::SplitStats stats;
  const auto fin = vla::split_forward<Scalar>(cfg, vla::VlaState<Scalar>(s.dk, s.dv, cfg).save(), in.q, in.k, in.v,
                                              in.u, o, {spans, 1}, &stats);
  REQUIRE(o.allFinite());
  Errors e;
  e.o = rel(o, o_ref), e.A = rel(fin.A, fin_ref.A), e.S = rel(fin.S, fin_ref.S), e.z = rel(fin.z, fin_ref.z);
  e.mismatch = stats.max_transfer_mismatch;
  return e;
}

template <class Scalar>
vla::VlaSnapshot<Scalar> fresh(int dk, int dv, const vla::Config& cfg) {
  return vla::VlaState<Scalar>(dk, dv, cfg).save();
}

/// A warm state: a fresh one run through `steps` tokens of another stream (phase ≠ 0, S ≠ 0).
template <class Scalar>
vla::VlaSnapshot<Scalar> warm(int dk, int dv, const vla::Config& cfg, int steps, unsigned seed) {
  const vt::Stream w = vt::random_stream(dk, dv, steps, seed);
  vla::VlaState<Scalar> st(dk, dv, cfg);
  std::vector<double> sink;
  vt::run_vla(st, w, 0, steps, sink);
  return st.save();
}

void print(const char* what, int spans, const Errors& e) {
  std::printf("  time split %-34s spans %2d: o %.1e  A %.1e  S %.1e  z %.1e  (A summary vs own steps %.1e)\n", what,
              spans, e.o, e.A, e.S, e.z, e.mismatch);
}

}  // namespace

TEST_CASE("time split: one span is the unsplit run, bit for bit", "[time_split]") {
  const vla::Config cfg;
  const vt::Stream s = vt::random_stream(16, 8, 300, 11);
  const auto init = warm<double>(16, 8, cfg, 37, 12);
  const Inputs<double> in(s);
  Rows<double> o_ref, o(s.T, s.dv);
  const auto fin_ref = unsplit(cfg, init, in, o_ref);
  const auto fin = vla::split_forward<double>(cfg, init, in.q, in.k, in.v, in.u, o, {1, 1});
  CHECK(vt::bitwise_equal(o, o_ref));
  CHECK(vt::same_snapshot(fin, fin_ref));
}

TEST_CASE("time split: 2 to 16 spans against the unsplit run, double", "[time_split]") {
  // T = 1000 cuts at multiples of 1000/spans: refresh steps (every 20) fall on both sides of most cuts.
  for (const bool warm_start : {false, true})
    for (const int refresh : {20, 7, 1, 0}) {
      vla::Config cfg;
      cfg.refresh_period = refresh;
      const vt::Stream s = vt::random_stream(16, 8, 1000, 21 + unsigned(refresh));
      const auto init = warm_start ? warm<double>(16, 8, cfg, 53, 22) : fresh<double>(16, 8, cfg);
      for (const int spans : {2, 3, 4, 7, 8, 16}) {
        const Errors e = split_vs_unsplit<double>(cfg, init, s, spans);
        if (spans == 16 || spans == 3) {
          char what[64];
          std::snprintf(what, sizeof what, "double random%s refresh %d", warm_start ? " warm" : "", refresh);
          print(what, spans, e);
        }
        CHECK(e.worst() <= 1e-12);
        CHECK(e.mismatch <= 1e-12);
      }
    }
}

TEST_CASE("time split: adversarial streams and zero vectors, double and float", "[time_split]") {
  const vla::Config cfg;
  for (const vt::Kind kind : {vt::Kind::Aligned, vt::Kind::RepeatedKey, vt::Kind::RepeatedAligned, vt::Kind::Subspace,
                              vt::Kind::Drift, vt::Kind::Outliers}) {
    vt::Stream s = vt::adversarial(kind, 32, 16, 2000, 31);
    // Float is held to the float64 unsplit run: the split may add at most what float's own
    // rounding already costs the unsplit float run on that stream (×4), and never more than 1e-4
    // where that own cost is below it (issue 14's bound).
    const Errors own = float_vs_float64<float>(cfg, s, 1);
    for (const int spans : {4, 16}) {
      const Errors d = split_vs_unsplit<double>(cfg, fresh<double>(32, 16, cfg), s, spans);
      const Errors f = float_vs_float64<float>(cfg, s, spans);
      if (spans == 16) {
        print((std::string("double ") + vt::kind_name(kind)).c_str(), spans, d);
        print((std::string("float unsplit vs f64 ") + vt::kind_name(kind)).c_str(), 1, own);
        print((std::string("float vs f64 ") + vt::kind_name(kind)).c_str(), spans, f);
      }
      CHECK(d.worst() <= 1e-11);
      CHECK(f.worst() <= std::max(1e-4, 4 * own.worst()));
    }
  }
  vt::Stream s = vt::random_stream(16, 16, 1000, 41);
  vt::zero_some_vectors(s, 42);
  const Errors d = split_vs_unsplit<double>(cfg, fresh<double>(16, 16, cfg), s, 8);
  print("double zero vectors", 8, d);
  CHECK(d.worst() <= 1e-12);
}

TEST_CASE("time split: float against the float64 unsplit run over 20k steps", "[time_split]") {
  const vla::Config cfg;
  const vt::Stream s = vt::rounded<float>(vt::random_stream(32, 32, 20000, 51));
  const Inputs<double> ind(s);
  const Inputs<float> inf(s);
  Rows<double> o_ref;
  const auto fin_ref = unsplit(cfg, fresh<double>(32, 32, cfg), ind, o_ref);
  for (const int spans : {1, 16}) {
    Rows<float> o(s.T, s.dv);
    const auto fin = vla::split_forward<float>(cfg, fresh<float>(32, 32, cfg), inf.q, inf.k, inf.v, inf.u, o, {spans, 2});
    REQUIRE(o.allFinite());
    Errors e;
    e.o = rel(o, o_ref), e.A = rel(fin.A, fin_ref.A), e.S = rel(fin.S, fin_ref.S), e.z = rel(fin.z, fin_ref.z);
    print("float vs float64 unsplit, T 20k", spans, e);
    CHECK(e.worst() <= 1e-4);
  }
}

TEST_CASE("time split: threads, empty spans and a tree of summaries", "[time_split]") {
  const vla::Config cfg;
  const vt::Stream s = vt::random_stream(16, 8, 10, 61);
  const Inputs<double> in(s);
  const auto init = warm<double>(16, 8, cfg, 19, 62);  // the first token of the stream refreshes
  SECTION("the thread count does not change a bit") {
    const vt::Stream l = vt::random_stream(16, 8, 700, 63);
    const Inputs<double> li(l);
    Rows<double> o1(l.T, l.dv), o2(l.T, l.dv);
    const auto f1 = vla::split_forward<double>(cfg, init, li.q, li.k, li.v, li.u, o1, {5, 1});
    const auto f2 = vla::split_forward<double>(cfg, init, li.q, li.k, li.v, li.u, o2, {5, 2});
    CHECK(vt::bitwise_equal(o1, o2));
    CHECK(vt::same_snapshot(f1, f2));
  }
  SECTION("more spans than tokens: empty spans are the identity") {
    const Errors e = split_vs_unsplit<double>(cfg, init, s, 16);
    CHECK(e.worst() <= 1e-13);
  }
  SECTION("a tree of composed summaries gives the span starts of the serial chain") {
    const vt::Stream l = vt::random_stream(16, 8, 960, 64);
    const Inputs<double> li(l);
    std::vector<vla::PenaltyTransfer<double>> tr;
    for (int r = 0; r < 8; ++r)
      tr.push_back(vla::penalty_transfer<double>(cfg, init.steps + 120 * r, li.u.middleRows(120 * r, 120),
                                                 li.k.middleRows(120 * r, 120)));
    while (tr.size() > 1) {  // pairwise, as an all-gather would combine them
      std::vector<vla::PenaltyTransfer<double>> up;
      for (std::size_t i = 0; i + 1 < tr.size(); i += 2) up.push_back(vla::compose(tr[i], tr[i + 1]));
      tr = up;
    }
    Rows<double> o_ref;
    const auto fin_ref = unsplit(cfg, init, li, o_ref);
    CHECK(tr[0].steps == 960);
    CHECK(rel(vla::apply_transfer(tr[0], init.A), fin_ref.A) <= 1e-12);
    CHECK(rel(init.z + tr[0].key_sum, fin_ref.z) <= 1e-14);
  }
}

TEST_CASE("time split: bad input is refused before any output is written", "[time_split]") {
  const vla::Config cfg;
  const vt::Stream s = vt::random_stream(8, 4, 50, 71);
  Inputs<double> in(s);
  const auto init = fresh<double>(8, 4, cfg);
  Rows<double> o = Rows<double>::Constant(50, 4, 7.0);
  auto untouched = [&] { return (o.array() == 7.0).all(); };
  CHECK_THROWS_AS(vla::split_forward<double>(cfg, init, in.q, in.k, in.v, in.u, o, {0, 1}), std::invalid_argument);
  CHECK_THROWS_AS(vla::split_forward<double>(cfg, init, in.q, in.k, in.v, in.u, o, {2, -1}), std::invalid_argument);
  Rows<double> short_v = in.v.topRows(49);
  CHECK_THROWS_AS(vla::split_forward<double>(cfg, init, in.q, in.k, short_v, in.u, o, {2, 1}), std::invalid_argument);
  in.k(37, 3) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(vla::split_forward<double>(cfg, init, in.q, in.k, in.v, in.u, o, {2, 1}), std::invalid_argument);
  in.k(37, 3) = 1.0;
  auto bad = init;
  bad.A(0, 0) = -1.0;  // not positive definite
  CHECK_THROWS_AS(vla::split_forward<double>(cfg, bad, in.q, in.k, in.v, in.u, o, {2, 1}), std::invalid_argument);
  vla::Config bad_cfg;
  bad_cfg.lambda0 = 0;
  CHECK_THROWS_AS(vla::split_forward<double>(bad_cfg, init, in.q, in.k, in.v, in.u, o, {2, 1}), std::invalid_argument);
  CHECK(untouched());
}
