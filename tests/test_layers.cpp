// vla/layers/attention.hpp: the multi-head layer of each kind against a float64 reference written
// here from the authors' equations (plain loops over the recurrences of tests/reference.hpp), decode
// equal to prefill, slots in any order, and every bad argument refused before the cache changes.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "reference.hpp"
#include "support.hpp"
#include "vla/layers/attention.hpp"

namespace {

using vla::layers::AttentionKind;
template <class S>
using Rows = vla::TokenRows<S>;

template <class S>
vla::layers::Linear<S> random_linear(std::mt19937& rng, int out, int in, bool bias, double scale) {
  std::normal_distribution<double> n01;
  vla::layers::Linear<S> l;
  l.weight.resize(out, in);
  for (Eigen::Index i = 0; i < l.weight.size(); ++i) l.weight.data()[i] = static_cast<S>(scale * n01(rng));
  if (bias) {
    l.bias.resize(out);
    for (int i = 0; i < out; ++i) l.bias(i) = static_cast<S>(0.1 * n01(rng));
  }
  return l;
}

template <class S>
vla::layers::AttentionWeights<S> random_weights(AttentionKind kind, int d, int H, unsigned seed, bool norm) {
  std::mt19937 rng(seed);
  const double sc = 1.0 / std::sqrt(static_cast<double>(d));
  vla::layers::AttentionWeights<S> w;
  w.q = random_linear<S>(rng, d, d, true, sc);
  w.k = random_linear<S>(rng, d, d, true, sc);
  w.v = random_linear<S>(rng, d, d, true, sc);
  w.o = random_linear<S>(rng, d, d, true, sc);
  if (kind == AttentionKind::vla) w.u = random_linear<S>(rng, d, d, false, sc);
  if (kind == AttentionKind::deltanet) w.beta = random_linear<S>(rng, H, d, true, sc);
  if (norm) {
    vla::layers::LayerNorm<S> ln;
    ln.weight.resize(d);
    ln.bias.resize(d);
    std::normal_distribution<double> n01;
    for (int i = 0; i < d; ++i) ln.weight(i) = static_cast<S>(1 + 0.1 * n01(rng)), ln.bias(i) = static_cast<S>(0.1 * n01(rng));
    w.out_norm = ln;
  }
  return w;
}

template <class S>
vla::layers::AttentionWeights<double> widen(const vla::layers::AttentionWeights<S>& w) {
  auto lin = [](const vla::layers::Linear<S>& l) {
    vla::layers::Linear<double> r;
    r.weight = l.weight.template cast<double>();
    r.bias = l.bias.template cast<double>();
    return r;
  };
  vla::layers::AttentionWeights<double> r;
  r.q = lin(w.q), r.k = lin(w.k), r.v = lin(w.v), r.o = lin(w.o), r.u = lin(w.u), r.beta = lin(w.beta);
  if (w.out_norm) {
    vla::layers::LayerNorm<double> ln;
    ln.weight = w.out_norm->weight.template cast<double>();
    ln.bias = w.out_norm->bias.template cast<double>();
    ln.eps = w.out_norm->eps;
    r.out_norm = ln;
  }
  return r;
}

// y = x Wᵀ + b, in double, row by row.
std::vector<double> ref_linear(const vla::layers::Linear<double>& l, const std::vector<double>& x, int T) {
  const int out = static_cast<int>(l.weight.rows()), in = static_cast<int>(l.weight.cols());
  std::vector<double> y(static_cast<std::size_t>(T * out));
  for (int t = 0; t < T; ++t)
    for (int o = 0; o < out; ++o) {
      double s = l.bias.size() ? l.bias(o) : 0.0;
      for (int i = 0; i < in; ++i) s += x[static_cast<std::size_t>(t * in + i)] * l.weight(o, i);
      y[static_cast<std::size_t>(t * out + o)] = s;
    }
  return y;
}

// The authors' layer (docs/layers.md), double: projections, feature maps, the recurrence per head
// from a fresh state, LayerNorm if any, the output projection.
std::vector<double> ref_layer(AttentionKind kind, const vla::layers::AttentionWeights<double>& w, int H,
                              const vla::Config& cfg, const std::vector<double>& x, int T, int d) {
  const int dh = d / H;
  std::vector<double> q = ref_linear(w.q, x, T), kr = ref_linear(w.k, x, T), v = ref_linear(w.v, x, T);
  std::vector<double> u, beta, k = kr;
  if (kind == AttentionKind::vla) u = ref_linear(w.u, kr, T);
  if (kind == AttentionKind::deltanet) {
    beta = ref_linear(w.beta, x, T);
    for (double& b : beta) b = 1 / (1 + std::exp(-b));
  }
  for (double& e : q) e = vt::elu1(e);
  if (kind != AttentionKind::deltanet)
    for (double& e : k) e = vt::elu1(e);
  std::vector<double> o(static_cast<std::size_t>(T * d));
  for (int h = 0; h < H; ++h) {
    ref::Vla rv(dh, dh, vt::params(cfg));
    ref::LinearAttention rl(dh, dh, vt::params(cfg));
    ref::DeltaNet rd(dh, dh);
    for (int t = 0; t < T; ++t) {
      const std::size_t at = static_cast<std::size_t>(t * d + h * dh);
      if (kind == AttentionKind::vla) rv.step(&q[at], &k[at], &v[at], &u[at], &o[at]);
      if (kind == AttentionKind::linear_attention) rl.step(&q[at], &k[at], &v[at], &o[at]);
      if (kind == AttentionKind::deltanet) rd.step(&q[at], &k[at], &v[at], beta[static_cast<std::size_t>(t * H + h)], &o[at]);
    }
  }
  if (w.out_norm)
    for (int t = 0; t < T; ++t) {
      double mean = 0, var = 0;
      for (int c = 0; c < d; ++c) mean += o[static_cast<std::size_t>(t * d + c)] / d;
      for (int c = 0; c < d; ++c) var += std::pow(o[static_cast<std::size_t>(t * d + c)] - mean, 2) / d;
      for (int c = 0; c < d; ++c) {
        double& e = o[static_cast<std::size_t>(t * d + c)];
        e = (e - mean) / std::sqrt(var + w.out_norm->eps) * w.out_norm->weight(c) + w.out_norm->bias(c);
      }
    }
  return ref_linear(w.o, o, T);
}

template <class S>
Rows<S> random_rows(int T, int d, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n01;
  Rows<S> x(T, d);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<S>(n01(rng));
  return x;
}

const AttentionKind kKinds[] = {AttentionKind::vla, AttentionKind::linear_attention, AttentionKind::deltanet};

vla::layers::AttentionSpec spec_of(AttentionKind kind, int d, int H) {
  vla::layers::AttentionSpec s;
  s.kind = kind;
  s.d_model = d;
  s.heads = H;
  return s;
}

}  // namespace

TEST_CASE("layers: each kind's prefill matches the float64 reference layer", "[layers]") {
  const int d = 32, H = 4, T = 150;  // 150 tokens: seven refresh periods
  for (AttentionKind kind : kKinds)
    for (bool norm : {false, true}) {
      CAPTURE(vla::layers::kind_name(kind), norm);
      const auto wf = random_weights<float>(kind, d, H, 11, norm);
      const Rows<float> x = random_rows<float>(T, d, 12);
      const std::vector<double> xd = vt::to_vec(x.cast<double>());
      const vla::layers::AttentionSpec spec = spec_of(kind, d, H);
      const std::vector<double> want = ref_layer(kind, widen(wf), H, spec.op, xd, T, d);

      vla::layers::Attention<vla::backend::Cpu, double> ld(spec, widen(wf));
      auto cd = ld.make_cache(1);
      Rows<double> yd;
      ld.prefill(x.cast<double>(), cd, 0, yd);
      CHECK(vt::rel_rms(vt::to_vec(yd), want) < 1e-12);

      vla::layers::Attention<vla::backend::Cpu, float> lf(spec, wf);
      auto cf = lf.make_cache(1);
      Rows<float> yf;
      lf.prefill(x, cf, 0, yf);
      CHECK(vt::rel_rms(vt::to_vec(yf.cast<double>()), want) < 2e-6);
    }
}

TEST_CASE("layers: decode one token at a time equals the prefill, slots in any order", "[layers]") {
  const int d = 32, H = 4, T = 45;
  for (AttentionKind kind : kKinds) {
    CAPTURE(vla::layers::kind_name(kind));
    const vla::layers::AttentionSpec spec = spec_of(kind, d, H);
    vla::layers::Attention<vla::backend::Cpu, double> layer(spec, widen(random_weights<float>(kind, d, H, 3, true)));
    const Rows<double> xa = random_rows<double>(T, d, 4), xb = random_rows<double>(T, d, 5);
    // Prefill: sequence a in slot 0, sequence b in slot 3, separately.
    auto pre = layer.make_cache(4);
    Rows<double> ya, yb;
    layer.prefill(xa, pre, 0, ya);
    layer.prefill(xb, pre, 3, yb);
    // Decode: both together, one token per call, slots given as {3, 0} (not consecutive: gathered).
    auto dec = layer.make_cache(4);
    Rows<double> ya2(T, d), yb2(T, d);
    for (int t = 0; t < T; ++t) {
      Rows<double> xt(2, d), yt;
      xt.row(0) = xb.row(t);
      xt.row(1) = xa.row(t);
      layer.decode(xt, dec, {3, 0}, yt);
      yb2.row(t) = yt.row(0);
      ya2.row(t) = yt.row(1);
    }
    CHECK(vt::rel_rms(vt::to_vec(ya2), vt::to_vec(ya)) < 1e-13);
    CHECK(vt::rel_rms(vt::to_vec(yb2), vt::to_vec(yb)) < 1e-13);
    for (int h = 0; h < H; ++h) {
      CHECK(vt::rel_rms(vt::to_vec(dec.get(0, h).S), vt::to_vec(pre.get(0, h).S)) < 1e-13);
      if (kind == AttentionKind::vla) CHECK(dec.get(3, h).steps == T);  // the baselines keep no step count
      CHECK(vt::same_snapshot(dec.get(1, h), layer.make_cache(1).get(0, h)));  // untouched slots stay fresh
    }
    // Consecutive slots (in place) and a prompt split in two give the same as one prefill.
    auto split = layer.make_cache(2);
    Rows<double> y1, y2;
    layer.prefill(xa.topRows(20), split, 1, y1);
    layer.prefill(xa.bottomRows(T - 20), split, 1, y2);
    CHECK(vt::rel_rms(vt::to_vec(y1), vt::to_vec(ya.topRows(20))) < 1e-13);
    CHECK(vt::rel_rms(vt::to_vec(y2), vt::to_vec(ya.bottomRows(T - 20))) < 1e-13);
  }
}

TEST_CASE("layers: DeltaNet's β comes from a sigmoid per head, an underflowing one included", "[layers]") {
  const int d = 16, H = 2;
  auto w = random_weights<float>(AttentionKind::deltanet, d, H, 8, false);
  w.beta.bias(1) = -200.f;  // head 1's sigmoid underflows to 0 in float: clamped to FLT_MIN, not refused
  vla::layers::Attention<vla::backend::Cpu, float> layer(spec_of(AttentionKind::deltanet, d, H), w);
  const Rows<float> x = random_rows<float>(30, d, 9);
  const auto in = layer.project(x);
  REQUIRE(in.beta.rows() == 30);
  REQUIRE(in.beta.cols() == H);
  CHECK(in.beta.col(1).maxCoeff() == std::numeric_limits<float>::min());
  CHECK(in.beta.col(0).minCoeff() > 0.f);
  CHECK(in.beta.col(0).maxCoeff() < 1.f);
  auto cache = layer.make_cache(1);
  Rows<float> y;
  layer.prefill(x, cache, 0, y);
  CHECK(vt::all_finite(y));
}

TEST_CASE("layers: bad weights, inputs, caches and slots are refused by name, the cache unchanged", "[layers][invalid]") {
  const int d = 16, H = 4;
  const auto spec = spec_of(AttentionKind::vla, d, H);
  auto w = random_weights<float>(AttentionKind::vla, d, H, 1, true);
  {
    auto bad = w;
    bad.k.weight.resize(d, d + 1);
    CHECK_THROWS_WITH((vla::layers::Attention<vla::backend::Cpu, float>(spec, bad)), Catch::Contains("k.weight must be [16, 16]"));
    bad = w;
    bad.u.bias = vla::layers::RowVector<float>::Zero(d);
    CHECK_THROWS_WITH((vla::layers::Attention<vla::backend::Cpu, float>(spec, bad)), Catch::Contains("u.bias must be absent"));
    bad = w;
    bad.o.weight(2, 3) = std::nanf("");
    CHECK_THROWS_WITH((vla::layers::Attention<vla::backend::Cpu, float>(spec, bad)), Catch::Contains("o holds a NaN"));
    auto s2 = spec;
    s2.heads = 5;
    CHECK_THROWS_WITH((vla::layers::Attention<vla::backend::Cpu, float>(s2, w)), Catch::Contains("multiple of heads"));
    auto s3 = spec_of(AttentionKind::deltanet, d, H);
    CHECK_THROWS_WITH((vla::layers::Attention<vla::backend::Cpu, float>(s3, w)), Catch::Contains("beta.weight must be [4, 16]"));
  }
  vla::layers::Attention<vla::backend::Cpu, float> layer(spec, w);
  auto cache = layer.make_cache(3);
  Rows<float> y0;
  layer.prefill(random_rows<float>(7, d, 2), cache, 1, y0);
  std::vector<vla::VlaSnapshot<float>> before;
  for (int s = 0; s < 3; ++s)
    for (int h = 0; h < H; ++h) before.push_back(cache.get(s, h));
  auto unchanged = [&] {
    std::size_t i = 0;
    for (int s = 0; s < 3; ++s)
      for (int h = 0; h < H; ++h)
        if (!vt::same_snapshot(cache.get(s, h), before[i++])) return false;
    return true;
  };
  Rows<float> y = Rows<float>::Constant(1, 1, 42.f);
  Rows<float> x = random_rows<float>(5, d, 3);
  CHECK_THROWS_WITH(layer.prefill(x, cache, 3, y), Catch::Contains("slot 3 is out of range"));
  CHECK_THROWS_WITH(layer.prefill(random_rows<float>(5, d + 1, 3), cache, 0, y), Catch::Contains("17 columns, d_model is 16"));
  Rows<float> xn = x;
  xn(4, 7) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(layer.prefill(xn, cache, 1, y), Catch::Contains("NaN or an infinity"));
  CHECK_THROWS_WITH(layer.decode(x.topRows(2), cache, {1, 1}, y), Catch::Contains("slot 1 is given twice"));
  CHECK_THROWS_WITH(layer.decode(x.topRows(2), cache, {0, -1}, y), Catch::Contains("slot -1 is out of range"));
  CHECK_THROWS_WITH(layer.decode(x.topRows(2), cache, {0}, y), Catch::Contains("2 rows for 1 slots"));
  vla::HostStates<float> other(3, H, d / H + 1, d / H + 1);
  CHECK_THROWS_WITH(layer.prefill(x, other, 0, y), Catch::Contains("the cache is for 4 heads of 5"));
  CHECK(unchanged());
  CHECK((y.rows() == 1 && y(0, 0) == 42.f));  // y untouched by a refused call
}
