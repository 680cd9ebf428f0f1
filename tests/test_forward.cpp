// The batched CPU forward (fixed-length and varlen, initial state in, final state out, any thread
// count) against single-head steps — bit for bit, the same code path — and streaming (docs/maths.md §3): any
// split of a sequence with the state carried equals the whole run, bit for bit.
#include "batch.hpp"

namespace {

using vt::Batch;
using vt::StateBuf;

// Initial states for P pairs: each pair warmed up on its own random stream for a different number
// of steps (so the refresh phases differ), including the fresh state (0 steps).
template <class Scalar>
StateBuf<Scalar> warm_states(std::int64_t P, int dk, int dv, const vla::Config& cfg, unsigned seed) {
  StateBuf<Scalar> sb(P, dk, dv);
  for (std::int64_t p = 0; p < P; ++p) {
    const int steps = int((p * 17 + 3) % 46) * (p == 1 ? 0 : 1);
    const vt::Stream s = vt::random_stream(dk, dv, steps, seed + unsigned(p));
    vla::VlaState<Scalar> st(dk, dv, cfg);
    std::vector<double> sink;
    vt::run_vla(st, s, 0, steps, sink);
    sb.put(p, st.save());
  }
  return sb;
}

// Replays every (sequence, head) of the batch through VlaState::step on copies of its token rows
// and checks the forward's outputs and final state bit for bit.
template <class Scalar>
void check_vla_against_single_head(const Batch<Scalar>& b, const vla::Config& cfg, const StateBuf<Scalar>* init,
                                   const StateBuf<Scalar>* fin) {
  for (std::int64_t n = 0; n < b.N; ++n) {
    for (std::int64_t h = 0; h < b.H; ++h) {
      const std::int64_t p = n * b.H + h;
      vla::VlaState<Scalar> st = init ? vla::VlaState<Scalar>(init->get(p), cfg) : vla::VlaState<Scalar>(b.dk, b.dv, cfg);
      vla::Matrix<Scalar> expect(b.len(n), b.dv);
      for (std::int64_t t = 0; t < b.len(n); ++t) {
        const auto x = vt::token(b, b.first(n) + t, h);
        expect.row(t) = st.step(x.q, x.k, x.v, x.u).transpose();
      }
      INFO("sequence " << n << " head " << h << " length " << b.len(n));
      CHECK(vt::bitwise_equal(vt::outputs_of(b, n, h), expect));
      if (fin) CHECK(vt::same_snapshot(fin->get(p), st.save()));
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE("batched VLA forward equals single-head steps bit for bit (fixed-length)", "[forward]", float,
                   double) {
  const vla::Config cfg;
  for (int threads : {1, 2, 3, 7, 0}) {
    INFO("threads " << threads);
    Batch<TestType> b = vt::random_batch<TestType>(3, 45, 2, 13, 7, 1);
    StateBuf<TestType> fin(b.N * b.H, 13, 7);
    auto a = b.args();
    a.final_state = fin.out();
    vla::forward<vla::backend::Cpu>(a, cfg, vla::CpuOptions{threads});
    check_vla_against_single_head<TestType>(b, cfg, nullptr, &fin);
  }
  // Without a final state, and with the default CpuOptions.
  Batch<TestType> b = vt::random_batch<TestType>(2, 30, 3, 32, 64, 2);
  vla::forward<vla::backend::Cpu>(b.args(), cfg);
  check_vla_against_single_head<TestType>(b, cfg, nullptr, nullptr);
}

TEMPLATE_TEST_CASE("batched VLA forward: varlen, initial state in, final state out", "[forward]", float, double) {
  vla::Config cfg;
  cfg.refresh_period = 7;
  // Includes an empty sequence and a one-token sequence.
  Batch<TestType> b = vt::random_batch<TestType>(5, 0, 2, 13, 7, 3, {0, 17, 17, 60, 61, 100});
  const StateBuf<TestType> init = warm_states<TestType>(b.N * b.H, 13, 7, cfg, 50);
  StateBuf<TestType> fin(b.N * b.H, 13, 7);
  auto a = b.args();
  a.seq_len = 12345;  // ignored when cu_seqlens is set
  a.initial_state = init.in();
  a.final_state = fin.out();
  vla::forward<vla::backend::Cpu>(a, cfg, vla::CpuOptions{2});
  check_vla_against_single_head<TestType>(b, cfg, &init, &fin);
  // The empty sequence's final state is its initial state.
  for (std::int64_t h = 0; h < b.H; ++h) CHECK(vt::same_snapshot(fin.get(1 * b.H + h), init.get(1 * b.H + h)));
  // Skipping the Cholesky check of the initial states changes no result.
  Batch<TestType> b2 = b;
  std::fill(b2.o.begin(), b2.o.end(), TestType(-7.25));
  StateBuf<TestType> fin2(b.N * b.H, 13, 7);
  auto a2 = b2.args();
  a2.initial_state = init.in();
  a2.final_state = fin2.out();
  vla::CpuOptions nocheck;
  nocheck.threads = 1;
  nocheck.check_positive_definite = false;
  vla::forward<vla::backend::Cpu>(a2, cfg, nocheck);
  CHECK(vt::bitwise_equal(b2.o, b.o));
  CHECK(vt::bitwise_equal(fin2.A, fin.A));
  CHECK(vt::bitwise_equal(fin2.S, fin.S));
}

TEMPLATE_TEST_CASE("batched forward: thread count does not change a bit", "[forward]", float, double) {
  const vla::Config cfg;
  Batch<TestType> b1 = vt::random_batch<TestType>(4, 0, 3, 13, 7, 4, {0, 5, 40, 41, 90});
  const StateBuf<TestType> init = warm_states<TestType>(b1.N * b1.H, 13, 7, cfg, 70);
  Batch<TestType> b2 = b1;
  StateBuf<TestType> f1(b1.N * b1.H, 13, 7), f2(b1.N * b1.H, 13, 7);
  auto a1 = b1.args(), a2 = b2.args();
  a1.initial_state = init.in(), a2.initial_state = init.in();
  a1.final_state = f1.out(), a2.final_state = f2.out();
  vla::forward<vla::backend::Cpu>(a1, cfg, vla::CpuOptions{1});
  vla::forward<vla::backend::Cpu>(a2, cfg, vla::CpuOptions{2});
  CHECK(vt::bitwise_equal(b1.o, b2.o));
  CHECK(vt::bitwise_equal(f1.A, f2.A));
  CHECK(vt::bitwise_equal(f1.S, f2.S));
  CHECK(vt::bitwise_equal(f1.z, f2.z));
  CHECK(f1.steps == f2.steps);
  // Baselines too.
  Batch<TestType> b3 = b1, b4 = b1;
  vla::linear_attention_forward<vla::backend::Cpu>(b3.args(), cfg, vla::CpuOptions{1});
  vla::linear_attention_forward<vla::backend::Cpu>(b4.args(), cfg, vla::CpuOptions{2});
  CHECK(vt::bitwise_equal(b3.o, b4.o));
  vla::deltanet_forward<vla::backend::Cpu>(b3.args(), cfg, vla::CpuOptions{1});
  vla::deltanet_forward<vla::backend::Cpu>(b4.args(), cfg, vla::CpuOptions{2});
  CHECK(vt::bitwise_equal(b3.o, b4.o));
}

TEMPLATE_TEST_CASE("batched VLA forward matches the float64 reference", "[forward][reference]", float, double) {
  const vla::Config cfg;
  Batch<TestType> b = vt::random_batch<TestType>(2, 0, 2, 13, 7, 5, {0, 80, 200});
  vla::forward<vla::backend::Cpu>(b.args(), cfg);
  double worst = 0;
  for (std::int64_t n = 0; n < b.N; ++n)
    for (std::int64_t h = 0; h < b.H; ++h) {
      ref::Vla r(13, 7, vt::params(cfg));
      const std::vector<double> rout = vt::ref_replay(r, b, n, h);
      std::vector<double> out;
      const vla::Matrix<TestType> got = vt::outputs_of(b, n, h);
      for (Eigen::Index t = 0; t < got.rows(); ++t)
        for (Eigen::Index i = 0; i < got.cols(); ++i) out.push_back(double(got(t, i)));
      const double err = vt::rel_rms(out, rout);
      CHECK(err <= vt::Tol<TestType>::ref);
      worst = std::max(worst, err);
    }
  WARN("forward<Cpu> " << vt::Tol<TestType>::name << " vs reference: worst rel RMS " << worst);
}

TEMPLATE_TEST_CASE("baseline forwards equal single-head steps bit for bit and match the reference",
                   "[forward][baseline]", float, double) {
  vla::Config cfg;
  Batch<TestType> b = vt::random_batch<TestType>(3, 0, 2, 13, 7, 6, {0, 30, 30, 71});
  const std::int64_t P = b.N * b.H;
  // Initial states: random S (and positive z for linear attention).
  StateBuf<TestType> init(P, 13, 7);
  std::mt19937 rng(8);
  std::normal_distribution<double> n01;
  for (auto& x : init.S) x = TestType(n01(rng));
  for (auto& x : init.z) x = TestType(std::abs(n01(rng)) * 5);
  for (int which = 0; which < 2; ++which) {
    const bool la = which == 0;
    INFO((la ? "linear attention" : "deltanet"));
    StateBuf<TestType> fin(P, 13, 7);
    std::fill(b.o.begin(), b.o.end(), TestType(-7.25));
    auto a = b.args();
    a.initial_state = init.in();
    a.initial_state.A = nullptr, a.initial_state.steps = nullptr;  // parts these ops do not use
    if (!la) a.initial_state.z = nullptr;
    a.final_state = fin.out();
    a.final_state.A = nullptr, a.final_state.steps = nullptr;
    if (!la) a.final_state.z = nullptr;
    if (la)
      vla::linear_attention_forward<vla::backend::Cpu>(a, cfg, vla::CpuOptions{2});
    else
      vla::deltanet_forward<vla::backend::Cpu>(a, cfg, vla::CpuOptions{2});
    double worst = 0;
    for (std::int64_t n = 0; n < b.N; ++n)
      for (std::int64_t h = 0; h < b.H; ++h) {
        const std::int64_t p = n * b.H + h;
        vla::LinearAttentionState<TestType> ls(init.get_S(p), init.get_z(p), cfg);
        vla::DeltaNetState<TestType> ds(init.get_S(p));
        ref::LinearAttention lr(13, 7, vt::params(cfg));
        ref::DeltaNet dr(13, 7);
        const auto s0 = vt::to_vec(init.get_S(p)), z0 = vt::to_vec(init.get_z(p));
        lr.S = s0, lr.z = z0, dr.S = s0;
        vla::Matrix<TestType> expect(b.len(n), 7);
        std::vector<double> rout, out, o(7);
        for (std::int64_t t = 0; t < b.len(n); ++t) {
          const auto x = vt::token(b, b.first(n) + t, h);
          expect.row(t) = (la ? ls.step(x.q, x.k, x.v) : ds.step(x.q, x.k, x.v, x.beta)).transpose();
          const Eigen::VectorXd q = x.q.template cast<double>(), k = x.k.template cast<double>(),
                                v = x.v.template cast<double>();
          if (la)
            lr.step(q.data(), k.data(), v.data(), o.data());
          else
            dr.step(q.data(), k.data(), v.data(), double(x.beta), o.data());
          rout.insert(rout.end(), o.begin(), o.end());
          for (Eigen::Index i = 0; i < 7; ++i) out.push_back(double(expect(t, i)));
        }
        const vla::Matrix<TestType> got = vt::outputs_of(b, n, h);
        CHECK(vt::bitwise_equal(got, expect));
        CHECK(vt::bitwise_equal(fin.get_S(p), la ? ls.S() : ds.S()));
        if (la) CHECK(vt::bitwise_equal(fin.get_z(p), ls.z()));
        if (!rout.empty()) {
          const double err = vt::rel_rms(out, rout);
          CHECK(err <= vt::Tol<TestType>::ref);
          worst = std::max(worst, err);
        }
        const double es = vt::rel_rms(vt::to_vec(fin.get_S(p)), la ? lr.S : dr.S);
        CHECK(es <= vt::Tol<TestType>::ref);
      }
    WARN((la ? "linear_attention_forward " : "deltanet_forward ")
         << vt::Tol<TestType>::name << " vs reference: worst rel RMS " << worst);
  }
}

TEMPLATE_TEST_CASE("a zero-length forward writes the initial (or fresh) state out", "[forward]", float, double) {
  vla::Config cfg;
  cfg.lambda0 = 0.5;
  Batch<TestType> b = vt::random_batch<TestType>(2, 0, 2, 5, 3, 9);  // T = 0
  StateBuf<TestType> fin(4, 5, 3);
  auto a = b.args();
  a.final_state = fin.out();
  vla::forward<vla::backend::Cpu>(a, cfg);
  const vla::VlaState<TestType> fresh(5, 3, cfg);
  for (std::int64_t p = 0; p < 4; ++p) CHECK(vt::same_snapshot(fin.get(p), fresh.save()));
  const StateBuf<TestType> init = warm_states<TestType>(4, 5, 3, cfg, 90);
  StateBuf<TestType> fin2(4, 5, 3);
  a.initial_state = init.in();
  a.final_state = fin2.out();
  vla::forward<vla::backend::Cpu>(a, cfg, vla::CpuOptions{2});
  for (std::int64_t p = 0; p < 4; ++p) CHECK(vt::same_snapshot(fin2.get(p), init.get(p)));
  // batch = 0 is a valid no-op: nothing is written. The buffers behind it are real and poisoned (o
  // from a T = 6 batch, a final state of sentinels), so a write anywhere would show, bit for bit.
  Batch<TestType> big = vt::random_batch<TestType>(2, 6, 2, 5, 3, 10);
  const std::vector<TestType> o0 = big.o;
  StateBuf<TestType> fin3(4, 5, 3);
  const StateBuf<TestType> fin30 = fin3;
  auto nothing_written = [&] {
    return vt::bitwise_equal(big.o, o0) && vt::bitwise_equal(fin3.A, fin30.A) && vt::bitwise_equal(fin3.S, fin30.S) &&
           vt::bitwise_equal(fin3.z, fin30.z) && fin3.steps == fin30.steps;
  };
  for (int threads : {1, 2}) {
    INFO("threads " << threads);
    for (bool with_init : {false, true}) {
      INFO("initial state " << with_init);
      for (vla::Path path : {vla::Path::recurrent, vla::Path::chunked}) {
        auto e = big.args();
        e.batch = 0;
        e.final_state = fin3.out();
        if (with_init) e.initial_state = init.in();
        vla::CpuOptions opt{threads};
        opt.path = path;
        CHECK_NOTHROW(vla::forward<vla::backend::Cpu>(e, cfg, opt));
        CHECK(nothing_written());
        std::vector<std::int64_t> cu0 = {0};  // varlen with no sequences
        e.cu_seqlens = cu0.data();
        CHECK_NOTHROW(vla::forward<vla::backend::Cpu>(e, cfg, opt));
        CHECK(nothing_written());
      }
      // The baselines too.
      auto e = big.args();
      e.batch = 0;
      e.final_state = {nullptr, fin3.S.data(), fin3.z.data(), nullptr};
      if (with_init) e.initial_state = {nullptr, init.S.data(), init.z.data(), nullptr};
      CHECK_NOTHROW(vla::linear_attention_forward<vla::backend::Cpu>(e, cfg, vla::CpuOptions{threads}));
      CHECK(nothing_written());
      e.final_state.z = nullptr;
      e.initial_state.z = nullptr;
      CHECK_NOTHROW(vla::deltanet_forward<vla::backend::Cpu>(e, cfg, vla::CpuOptions{threads}));
      CHECK(nothing_written());
    }
  }
  // seq_len = 0 with batch > 0: o (here a real, poisoned buffer) is not touched either.
  auto e = big.args();
  e.seq_len = 0;
  e.final_state = fin3.out();
  vla::forward<vla::backend::Cpu>(e, cfg);
  CHECK(vt::bitwise_equal(big.o, o0));
  for (std::int64_t p = 0; p < 4; ++p) CHECK(vt::same_snapshot(fin3.get(p), fresh.save()));
}

// README / layout.hpp: the final state may alias the initial state — one buffer set updated in place
// (a decode loop). Every op and path, several threads, a varlen batch with an empty sequence: the
// in-place run must equal the run into separate buffers bit for bit (outputs and state), and a
// decode loop of T one-token in-place calls must equal one T-token call.
TEMPLATE_TEST_CASE("the final state may alias the initial state (in-place decode)", "[forward][streaming]", float,
                   double) {
  vla::Config cfg;
  cfg.refresh_period = 7;
  const int dk = 9, dv = 5;
  const std::vector<std::int64_t> cu = {0, 23, 23, 70, 71};
  const std::int64_t H = 2, P = 4 * H;
  const StateBuf<TestType> init = warm_states<TestType>(P, dk, dv, cfg, 120);
  enum class Op { Vla, LinearAttention, DeltaNet };
  for (Op op : {Op::Vla, Op::LinearAttention, Op::DeltaNet}) {
    for (vla::Path path : {vla::Path::recurrent, vla::Path::chunked}) {
      if (op == Op::LinearAttention && path == vla::Path::chunked) continue;  // no chunked linear attention
      for (int threads : {1, 3}) {
        INFO("op " << int(op) << " path " << (path == vla::Path::chunked ? "chunked" : "recurrent") << " threads "
                   << threads);
        vla::CpuOptions opt{threads};
        opt.path = path;
        opt.chunk = 8;
        // Which state parts the op uses (the others stay null).
        auto parts_in = [&](const StateBuf<TestType>& sb) {
          vla::StateBuffers<const TestType> x = sb.in();
          if (op != Op::Vla) x.A = nullptr, x.steps = nullptr;
          if (op == Op::DeltaNet) x.z = nullptr;
          return x;
        };
        auto parts_out = [&](StateBuf<TestType>& sb) {
          vla::StateBuffers<TestType> x = sb.out();
          if (op != Op::Vla) x.A = nullptr, x.steps = nullptr;
          if (op == Op::DeltaNet) x.z = nullptr;
          return x;
        };
        auto run = [&](vla::ForwardArgs<TestType> a) {
          if (op == Op::Vla) vla::forward<vla::backend::Cpu>(a, cfg, opt);
          if (op == Op::LinearAttention) vla::linear_attention_forward<vla::backend::Cpu>(a, cfg, opt);
          if (op == Op::DeltaNet) vla::deltanet_forward<vla::backend::Cpu>(a, cfg, opt);
        };
        Batch<TestType> sep = vt::random_batch<TestType>(4, 0, H, dk, dv, 130, cu);
        Batch<TestType> inp = sep;
        StateBuf<TestType> fin(P, dk, dv), buf = init;
        auto a = sep.args();
        a.initial_state = parts_in(init);
        a.final_state = parts_out(fin);
        run(a);
        auto b = inp.args();
        b.initial_state = parts_in(buf);
        b.final_state = parts_out(buf);  // the same buffers
        run(b);
        CHECK(vt::bitwise_equal(inp.o, sep.o));
        CHECK(vt::bitwise_equal(buf.S, fin.S));
        if (op != Op::DeltaNet) CHECK(vt::bitwise_equal(buf.z, fin.z));
        if (op == Op::Vla) {
          CHECK(vt::bitwise_equal(buf.A, fin.A));
          CHECK(buf.steps == fin.steps);
        }
        // The empty sequence (index 1) keeps its initial state in place.
        CHECK(vt::bitwise_equal(buf.get_S(1 * H), init.get_S(1 * H)));
      }
    }
  }
  // Decode: T one-token in-place calls on one buffer set equal one T-token call (VLA, 2 heads).
  const std::int64_t T = 30;
  Batch<TestType> whole = vt::random_batch<TestType>(1, T, H, dk, dv, 140);
  StateBuf<TestType> fin(H, dk, dv), buf(H, dk, dv);
  for (std::int64_t p = 0; p < H; ++p) buf.put(p, init.get(p));
  auto a = whole.args();
  a.initial_state = buf.in();
  a.final_state = fin.out();
  vla::forward<vla::backend::Cpu>(a, cfg, vla::CpuOptions{2});
  std::vector<TestType> o(std::size_t(H * dv));
  for (std::int64_t t = 0; t < T; ++t) {
    vla::ForwardArgs<TestType> d;
    d.batch = 1, d.seq_len = 1, d.heads = H, d.dk = dk, d.dv = dv;
    d.q = whole.q.data() + t * H * dk, d.k = whole.k.data() + t * H * dk, d.u = whole.u.data() + t * H * dk;
    d.v = whole.v.data() + t * H * dv, d.o = o.data();
    d.initial_state = buf.in(), d.final_state = buf.out();
    vla::forward<vla::backend::Cpu>(d, cfg, vla::CpuOptions{2});
    INFO("decode step " << t);
    REQUIRE(vt::bitwise_equal(o, std::vector<TestType>(whole.o.begin() + t * H * dv, whole.o.begin() + (t + 1) * H * dv)));
  }
  for (std::int64_t p = 0; p < H; ++p) CHECK(vt::same_snapshot(buf.get(p), fin.get(p)));
}

// ---- Streaming (docs/maths.md §3)

TEMPLATE_TEST_CASE("VlaState: any split T1+T2 with save/restore equals the whole run bit for bit", "[streaming]",
                   float, double) {
  const int dk = 13, dv = 7, T = 90;
  for (int period : {20, 0, 7}) {
    vla::Config cfg;
    cfg.refresh_period = period;
    const vt::Stream s = vt::random_stream(dk, dv, T, 31 + unsigned(period));
    vla::VlaState<TestType> whole(dk, dv, cfg);
    std::vector<double> wo;
    vt::run_vla(whole, s, 0, T, wo);
    for (int t1 : {0, 1, 6, 7, 19, 20, 21, 39, 40, 41, 89, 90}) {
      INFO("refresh_period " << period << " split at " << t1);
      vla::VlaState<TestType> first(dk, dv, cfg);
      std::vector<double> so;
      vt::run_vla(first, s, 0, t1, so);
      const vla::VlaSnapshot<TestType> snap = first.save();
      // (a) restore into a different state object that has seen other data
      vla::VlaState<TestType> second(dk, dv, cfg);
      std::vector<double> junk;
      vt::run_vla(second, vt::random_stream(dk, dv, 5, 1), 0, 5, junk);
      second.restore(snap);
      vt::run_vla(second, s, t1, T, so);
      CHECK(vt::bitwise_equal(so, wo));
      CHECK(vt::same_snapshot(second.save(), whole.save()));
      // (b) construct from the snapshot; (c) copy the state (a value type)
      vla::VlaState<TestType> third(snap, cfg);
      vla::VlaState<TestType> fourth = first;
      std::vector<double> o3(so.begin(), so.begin() + std::ptrdiff_t(t1) * dv), o4 = o3;
      vt::run_vla(third, s, t1, T, o3);
      vt::run_vla(fourth, s, t1, T, o4);
      CHECK(vt::bitwise_equal(o3, wo));
      CHECK(vt::bitwise_equal(o4, wo));
      CHECK(vt::same_snapshot(fourth.save(), whole.save()));
    }
    // Decode: one step at a time through save/restore every step.
    vla::VlaState<TestType> dec(dk, dv, cfg);
    std::vector<double> dout;
    for (int t = 0; t < T; ++t) {
      vla::VlaState<TestType> next(dec.save(), cfg);
      vt::run_vla(next, s, t, t + 1, dout);
      dec = next;
    }
    CHECK(vt::bitwise_equal(dout, wo));
  }
}

namespace {
// Tokens [t0, t1) of every sequence of a fixed-length batch, as a batch of its own.
template <class Scalar>
Batch<Scalar> slice(const Batch<Scalar>& b, std::int64_t t0, std::int64_t t1) {
  Batch<Scalar> s = b;
  s.T = t1 - t0;
  auto cut = [&](const std::vector<Scalar>& x, std::int64_t width) {
    std::vector<Scalar> y;
    for (std::int64_t n = 0; n < b.N; ++n)
      y.insert(y.end(), x.begin() + (n * b.T + t0) * width, x.begin() + (n * b.T + t1) * width);
    return y;
  };
  s.q = cut(b.q, b.H * b.dk), s.k = cut(b.k, b.H * b.dk), s.u = cut(b.u, b.H * b.dk);
  s.v = cut(b.v, b.H * b.dv), s.o = cut(b.o, b.H * b.dv), s.beta = cut(b.beta, b.H);
  return s;
}
}  // namespace

TEMPLATE_TEST_CASE("batched forward: any split with final_state -> initial_state equals the whole run", "[streaming]",
                   float, double) {
  const vla::Config cfg;
  const std::int64_t N = 2, T = 64, H = 2, dk = 13, dv = 7, P = N * H;
  Batch<TestType> whole = vt::random_batch<TestType>(N, T, H, dk, dv, 41);
  const StateBuf<TestType> init = warm_states<TestType>(P, int(dk), int(dv), cfg, 110);
  for (int op = 0; op < 3; ++op) {
    auto run = [&](Batch<TestType>& b, const StateBuf<TestType>& in, StateBuf<TestType>& out, int threads) {
      auto a = b.args();
      a.initial_state = in.in();
      a.final_state = out.out();
      if (op == 0) vla::forward<vla::backend::Cpu>(a, cfg, vla::CpuOptions{threads});
      if (op == 1) vla::linear_attention_forward<vla::backend::Cpu>(a, cfg, vla::CpuOptions{threads});
      if (op == 2) vla::deltanet_forward<vla::backend::Cpu>(a, cfg, vla::CpuOptions{threads});
    };
    // Baselines read only their parts; the VLA warm states have finite S and z, which is all they need.
    StateBuf<TestType> wfin(P, dk, dv);
    run(whole, init, wfin, 1);
    for (std::int64_t t1 : {std::int64_t(0), std::int64_t(1), std::int64_t(19), std::int64_t(20), std::int64_t(33),
                            std::int64_t(63), T}) {
      INFO("op " << op << " split at " << t1);
      Batch<TestType> p1 = slice(whole, 0, t1), p2 = slice(whole, t1, T);
      std::fill(p1.o.begin(), p1.o.end(), TestType(-1)), std::fill(p2.o.begin(), p2.o.end(), TestType(-1));
      StateBuf<TestType> mid(P, dk, dv), fin(P, dk, dv);
      run(p1, init, mid, 2);
      run(p2, mid, fin, 1);
      CHECK(vt::bitwise_equal(p1.o, slice(whole, 0, t1).o));
      CHECK(vt::bitwise_equal(p2.o, slice(whole, t1, T).o));
      CHECK(vt::bitwise_equal(fin.S, wfin.S));
      if (op != 2) CHECK(vt::bitwise_equal(fin.z, wfin.z));
      if (op == 0) {
        CHECK(vt::bitwise_equal(fin.A, wfin.A));
        CHECK(fin.steps == wfin.steps);
      }
    }
    // Decode: T forwards of one token each.
    StateBuf<TestType> cur = init;
    std::vector<TestType> dec_o;
    for (std::int64_t t = 0; t < T; ++t) {
      Batch<TestType> one = slice(whole, t, t + 1);
      StateBuf<TestType> next(P, dk, dv);
      run(one, cur, next, 1);
      cur = next;
      CHECK(vt::bitwise_equal(one.o, slice(whole, t, t + 1).o));
    }
    CHECK(vt::bitwise_equal(cur.S, wfin.S));
    if (op == 0) CHECK(vt::bitwise_equal(cur.A, wfin.A));
  }
}
