// Invalid input: each rejected case throws std::invalid_argument, and afterwards the state (or the
// forward's output and final-state buffers, pre-filled with a sentinel) is exactly what it was.
#include <limits>

#include "batch.hpp"

namespace {

template <class Scalar>
using Vec = vla::Vector<Scalar>;

template <class Scalar>
vla::VlaState<Scalar> warmed(int dk, int dv, int steps, unsigned seed) {
  vla::VlaState<Scalar> st(dk, dv);
  std::vector<double> sink;
  vt::run_vla(st, vt::random_stream(dk, dv, steps, seed), 0, steps, sink);
  return st;
}

template <class Scalar>
Vec<Scalar> ones(Eigen::Index n) {
  return Vec<Scalar>::Constant(n, Scalar(0.5));
}

template <class Scalar>
std::vector<Scalar> bad_values() {
  return {std::numeric_limits<Scalar>::quiet_NaN(), std::numeric_limits<Scalar>::infinity(),
          -std::numeric_limits<Scalar>::infinity()};
}

}  // namespace

TEMPLATE_TEST_CASE("VlaState::step rejects size mismatches and non-finite inputs, state unchanged", "[invalid][state]",
                   float, double) {
  const int dk = 13, dv = 7;
  auto st = warmed<TestType>(dk, dv, 19, 1);  // the next step would refresh: a change would show
  const auto before = st.save();
  const Vec<TestType> q = ones<TestType>(dk), k = ones<TestType>(dk), v = ones<TestType>(dv), u = ones<TestType>(dk);
  auto expect_throw_unchanged = [&](const Vec<TestType>& q_, const Vec<TestType>& k_, const Vec<TestType>& v_,
                                    const Vec<TestType>& u_, const char* what) {
    INFO(what);
    CHECK_THROWS_AS(st.step(q_, k_, v_, u_), std::invalid_argument);
    Vec<TestType> o = Vec<TestType>::Constant(dv, TestType(-9));
    CHECK_THROWS_AS(st.step(q_, k_, v_, u_, o), std::invalid_argument);
    CHECK((o.array() == TestType(-9)).all());
    CHECK_THROWS_AS(st.check_step(q_, k_, v_, u_), std::invalid_argument);
    CHECK(vt::same_snapshot(st.save(), before));
  };
  for (int d : {-1, 1}) {
    expect_throw_unchanged(ones<TestType>(dk + d), k, v, u, "q size");
    expect_throw_unchanged(q, ones<TestType>(dk + d), v, u, "k size");
    expect_throw_unchanged(q, k, ones<TestType>(dv + d), u, "v size");
    expect_throw_unchanged(q, k, v, ones<TestType>(dk + d), "u size");
  }
  expect_throw_unchanged(Vec<TestType>(0), k, v, u, "q empty");
  expect_throw_unchanged(q, k, v, ones<TestType>(dv), "u with v's size");
  for (TestType bad : bad_values<TestType>()) {
    for (int pos : {0, 6, dk - 1}) {
      Vec<TestType> x = q;
      x[pos] = bad;
      expect_throw_unchanged(x, k, v, u, "non-finite q");
      expect_throw_unchanged(q, x, v, u, "non-finite k");
      expect_throw_unchanged(q, k, v, x, "non-finite u");
    }
    for (int pos : {0, dv - 1}) {
      Vec<TestType> x = v;
      x[pos] = bad;
      expect_throw_unchanged(q, k, x, u, "non-finite v");
    }
  }
  // o of the wrong size (in-place overload).
  Vec<TestType> o_bad = Vec<TestType>::Constant(dv + 1, TestType(-9));
  CHECK_THROWS_AS(st.step(q, k, v, u, o_bad), std::invalid_argument);
  CHECK((o_bad.array() == TestType(-9)).all());
  CHECK(vt::same_snapshot(st.save(), before));
  // And the state still works: the valid step now refreshes on time.
  CHECK_NOTHROW(st.step(q, k, v, u));
  CHECK(st.steps() == before.steps + 1);
}

TEMPLATE_TEST_CASE("restore and the snapshot constructor reject a bad snapshot, state unchanged", "[invalid][state]",
                   float, double) {
  using Mat = vla::Matrix<TestType>;
  auto st = warmed<TestType>(13, 7, 25, 2);
  const auto before = st.save();
  const auto good = warmed<TestType>(13, 7, 40, 3).save();
  auto expect_rejected = [&](const vla::VlaSnapshot<TestType>& snap, const char* what) {
    INFO(what);
    CHECK_THROWS_AS(st.restore(snap), std::invalid_argument);
    CHECK(vt::same_snapshot(st.save(), before));
    CHECK_THROWS_AS(vla::VlaState<TestType>(snap, vla::Config{}), std::invalid_argument);
  };
  for (TestType bad : bad_values<TestType>()) {
    auto s = good;
    s.A(2, 2) = bad;
    expect_rejected(s, "non-finite A");
    s = good;
    s.S(6, 12) = bad;
    expect_rejected(s, "non-finite S");
    s = good;
    s.z[0] = bad;
    expect_rejected(s, "non-finite z");
  }
  auto s = good;
  s.A(0, 5) += TestType(0.25);
  expect_rejected(s, "asymmetric A");
  s = good;
  s.A = -good.A;
  expect_rejected(s, "negative definite A");
  s = good;
  s.A(4, 4) = -s.A(4, 4);
  s.A(4, 4) = TestType(-1);
  expect_rejected(s, "indefinite A");
  s = good;  // symmetric, positive diagonal, yet indefinite: only the Cholesky check sees it
  s.A = Mat::Identity(13, 13);
  s.A(1, 2) = s.A(2, 1) = TestType(2);
  expect_rejected(s, "indefinite A with a positive diagonal");
  s = good;
  s.A = Mat::Zero(13, 13);
  expect_rejected(s, "zero A");
  s = good;
  s.A = Mat(13, 12);
  s.A.setIdentity();
  expect_rejected(s, "non-square A");
  s = good;
  s.A = Mat(0, 0);
  expect_rejected(s, "empty A");
  s = good;
  s.S = Mat::Zero(7, 12);
  expect_rejected(s, "S with the wrong number of columns");
  s = good;
  s.S = Mat(0, 13);
  expect_rejected(s, "S with no rows (dv = 0)");
  s = good;
  s.z = Vec<TestType>::Zero(12);
  expect_rejected(s, "z of the wrong size");
  s = good;
  s.steps = -1;
  expect_rejected(s, "negative step count");
  // A bad config with a good snapshot.
  vla::Config bad_cfg;
  bad_cfg.stab_eps = -1;
  CHECK_THROWS_AS(vla::VlaState<TestType>(good, bad_cfg), std::invalid_argument);
  // A good snapshot restores.
  CHECK_NOTHROW(st.restore(good));
  CHECK(vt::same_snapshot(st.save(), good));
}

TEMPLATE_TEST_CASE("baseline steps reject bad input, state unchanged", "[invalid][baseline]", float, double) {
  const int dk = 9, dv = 5;
  vla::LinearAttentionState<TestType> la(dk, dv);
  vla::DeltaNetState<TestType> dn(dk, dv);
  const Vec<TestType> q = ones<TestType>(dk), k = ones<TestType>(dk), v = ones<TestType>(dv);
  la.step(q, k, v);
  dn.step(q, k, v, TestType(0.5));
  const vla::Matrix<TestType> la_s = la.S(), dn_s = dn.S();
  const Vec<TestType> la_z = la.z();
  auto unchanged = [&] {
    CHECK(vt::bitwise_equal(la.S(), la_s));
    CHECK(vt::bitwise_equal(la.z(), la_z));
    CHECK(vt::bitwise_equal(dn.S(), dn_s));
  };
  for (int d : {-1, 1}) {
    CHECK_THROWS_AS(la.step(ones<TestType>(dk + d), k, v), std::invalid_argument);
    CHECK_THROWS_AS(la.step(q, ones<TestType>(dk + d), v), std::invalid_argument);
    CHECK_THROWS_AS(la.step(q, k, ones<TestType>(dv + d)), std::invalid_argument);
    CHECK_THROWS_AS(dn.step(ones<TestType>(dk + d), k, v, TestType(0.5)), std::invalid_argument);
    CHECK_THROWS_AS(dn.step(q, ones<TestType>(dk + d), v, TestType(0.5)), std::invalid_argument);
    CHECK_THROWS_AS(dn.step(q, k, ones<TestType>(dv + d), TestType(0.5)), std::invalid_argument);
    unchanged();
  }
  for (TestType bad : bad_values<TestType>()) {
    Vec<TestType> x = q, y = v;
    x[3] = bad, y[4] = bad;
    CHECK_THROWS_AS(la.step(x, k, v), std::invalid_argument);
    CHECK_THROWS_AS(la.step(q, x, v), std::invalid_argument);
    CHECK_THROWS_AS(la.step(q, k, y), std::invalid_argument);
    CHECK_THROWS_AS(dn.step(x, k, v, TestType(0.5)), std::invalid_argument);
    CHECK_THROWS_AS(dn.step(q, x, v, TestType(0.5)), std::invalid_argument);
    CHECK_THROWS_AS(dn.step(q, k, y, TestType(0.5)), std::invalid_argument);
    unchanged();
  }
  for (TestType beta : {TestType(0), -TestType(0), TestType(-0.5), TestType(1) + std::numeric_limits<TestType>::epsilon(),
                        TestType(2), std::numeric_limits<TestType>::quiet_NaN(), std::numeric_limits<TestType>::infinity()}) {
    INFO("beta " << beta);
    CHECK_THROWS_AS(dn.step(q, k, v, beta), std::invalid_argument);
    unchanged();
  }
  CHECK_NOTHROW(dn.step(q, k, v, TestType(1)));  // β = 1 is allowed
  // Bad restores.
  vla::Matrix<TestType> s_nan = la_s;
  s_nan(0, 0) = std::numeric_limits<TestType>::quiet_NaN();
  CHECK_THROWS_AS(vla::LinearAttentionState<TestType>(s_nan, la_z, vla::Config{}), std::invalid_argument);
  CHECK_THROWS_AS(vla::LinearAttentionState<TestType>(la_s, Vec<TestType>::Zero(dk + 1), vla::Config{}),
                  std::invalid_argument);
  Vec<TestType> z_inf = la_z;
  z_inf[1] = std::numeric_limits<TestType>::infinity();
  CHECK_THROWS_AS(vla::LinearAttentionState<TestType>(la_s, z_inf, vla::Config{}), std::invalid_argument);
  CHECK_THROWS_AS(vla::DeltaNetState<TestType>(s_nan), std::invalid_argument);
}

// ---- The batched forward: each bad argument throws before anything is written.

namespace {

template <class Scalar>
struct ForwardFixture {
  vt::Batch<Scalar> b = vt::random_batch<Scalar>(3, 0, 2, 5, 4, 7, {0, 6, 6, 15});
  vt::StateBuf<Scalar> init, fin;
  std::vector<Scalar> o0;
  vt::StateBuf<Scalar> fin0;
  ForwardFixture() : init(6, 5, 4), fin(6, 5, 4) {
    for (std::int64_t p = 0; p < 6; ++p) init.put(p, warmed<Scalar>(5, 4, int(p) * 7, 100 + unsigned(p)).save());
    o0 = b.o;
    fin0 = fin;
  }
  vla::ForwardArgs<Scalar> args() {
    auto a = b.args();
    a.initial_state = init.in();
    a.final_state = fin.out();
    return a;
  }
  // The sentinels in o and the final-state buffers are exactly as they were.
  bool untouched() const {
    return vt::bitwise_equal(b.o, o0) && vt::bitwise_equal(fin.A, fin0.A) && vt::bitwise_equal(fin.S, fin0.S) &&
           vt::bitwise_equal(fin.z, fin0.z) && fin.steps == fin0.steps;
  }
};

template <class Op, class Scalar>
void run_op(const vla::ForwardArgs<Scalar>& a, const vla::Config& cfg, int threads) {
  vla::forward<vla::backend::Cpu, Op>(a, cfg, vla::CpuOptions{threads});
}

}  // namespace

TEMPLATE_TEST_CASE("forward rejects each bad argument and writes nothing", "[invalid][forward]", float, double) {
  using Op = vla::op::Vla;
  ForwardFixture<TestType> fx;
  const vla::Config cfg;
  // The fixture itself is valid (and is then reset).
  {
    ForwardFixture<TestType> ok;
    CHECK_NOTHROW(run_op<Op>(ok.args(), cfg, 2));
    CHECK_FALSE(ok.untouched());
  }
  auto rejected = [&](const vla::ForwardArgs<TestType>& a, const char* what, const vla::Config& c = vla::Config{},
                      int threads = 2) {
    INFO(what);
    CHECK_THROWS_AS(run_op<Op>(a, c, threads), std::invalid_argument);
    CHECK(fx.untouched());
  };
  auto a = fx.args();
  // Null pointers.
  a = fx.args(), a.q = nullptr, rejected(a, "null q");
  a = fx.args(), a.k = nullptr, rejected(a, "null k");
  a = fx.args(), a.v = nullptr, rejected(a, "null v");
  a = fx.args(), a.u = nullptr, rejected(a, "null u");
  a = fx.args(), a.o = nullptr, rejected(a, "null o");
  // Extents.
  a = fx.args(), a.batch = -1, rejected(a, "negative batch");
  a = fx.args(), a.heads = 0, rejected(a, "zero heads");
  a = fx.args(), a.dk = 0, rejected(a, "zero dk");
  a = fx.args(), a.dv = -3, rejected(a, "negative dv");
  a = fx.args(), a.cu_seqlens = nullptr, a.seq_len = -1, rejected(a, "negative seq_len");
  // cu_seqlens.
  std::vector<std::int64_t> cu_bad0 = {1, 6, 6, 15}, cu_dec = {0, 6, 5, 15}, cu_dec_last = {0, 6, 6, 2};
  a = fx.args(), a.cu_seqlens = cu_bad0.data(), rejected(a, "cu_seqlens[0] != 0");
  a = fx.args(), a.cu_seqlens = cu_dec.data(), rejected(a, "decreasing cu_seqlens");
  a = fx.args(), a.cu_seqlens = cu_dec_last.data(), rejected(a, "decreasing cu_seqlens at the end");
  // Partial states.
  a = fx.args(), a.initial_state.A = nullptr, rejected(a, "initial_state without A");
  a = fx.args(), a.initial_state.S = nullptr, rejected(a, "initial_state without S");
  a = fx.args(), a.initial_state.z = nullptr, rejected(a, "initial_state without z");
  a = fx.args(), a.initial_state.steps = nullptr, rejected(a, "initial_state without steps");
  a = fx.args(), a.initial_state = {}, a.initial_state.A = fx.init.A.data(), rejected(a, "initial_state: A only");
  a = fx.args(), a.final_state.A = nullptr, rejected(a, "final_state without A");
  a = fx.args(), a.final_state.steps = nullptr, rejected(a, "final_state without steps");
  a = fx.args(), a.final_state.z = nullptr, rejected(a, "final_state without z");
  // Threads and config.
  a = fx.args(), rejected(a, "negative threads", cfg, -1);
  vla::Config bad;
  bad.lambda0 = 0;
  rejected(fx.args(), "lambda0 = 0", bad);
  bad = cfg, bad.refresh_period = -2;
  rejected(fx.args(), "negative refresh_period", bad);
  bad = cfg, bad.denom_eps = std::numeric_limits<double>::quiet_NaN();
  rejected(fx.args(), "NaN denom_eps", bad);
  // Non-finite inputs, first and last element of each buffer.
  for (TestType badv : bad_values<TestType>()) {
    for (auto* buf : {&fx.b.q, &fx.b.k, &fx.b.v, &fx.b.u}) {
      for (std::size_t pos : {std::size_t(0), buf->size() - 1}) {
        const TestType keep = (*buf)[pos];
        (*buf)[pos] = badv;
        rejected(fx.args(), "non-finite input");
        (*buf)[pos] = keep;
      }
    }
  }
  // Bad initial states (in the last pair, so earlier pairs would already be loadable).
  auto bad_init = [&](auto mutate, const char* what) {
    const auto keep = fx.init;
    mutate(fx.init);
    rejected(fx.args(), what);
    fx.init = keep;
  };
  const std::int64_t last = 5;
  bad_init([&](vt::StateBuf<TestType>& s) { s.A[std::size_t(last * 25)] = -1; }, "initial A not SPD");
  bad_init([&](vt::StateBuf<TestType>& s) { s.A[std::size_t(last * 25 + 1)] += 1; }, "initial A asymmetric");
  bad_init(
      [&](vt::StateBuf<TestType>& s) {
        for (int i = 0; i < 25; ++i) s.A[std::size_t(last * 25 + i)] = TestType(i % 6 == 0 ? 1 : 0);
        s.A[std::size_t(last * 25 + 1)] = s.A[std::size_t(last * 25 + 5)] = TestType(3);
      },
      "initial A indefinite with a positive diagonal (default CpuOptions checks positive definiteness)");
  bad_init([&](vt::StateBuf<TestType>& s) { s.A[std::size_t(last * 25 + 6)] = bad_values<TestType>()[0]; },
           "initial A NaN");
  bad_init([&](vt::StateBuf<TestType>& s) { s.S[std::size_t(last * 20 + 3)] = bad_values<TestType>()[1]; },
           "initial S Inf");
  bad_init([&](vt::StateBuf<TestType>& s) { s.z[std::size_t(last * 5)] = bad_values<TestType>()[0]; }, "initial z NaN");
  bad_init([&](vt::StateBuf<TestType>& s) { s.steps[std::size_t(last)] = -1; }, "initial steps negative");
  // With CpuOptions::check_positive_definite off, the O(dk²) checks still reject these.
  auto rejected_nocheck = [&](auto mutate, const char* what) {
    const auto keep = fx.init;
    mutate(fx.init);
    INFO(what << " (check_positive_definite off)");
    vla::CpuOptions opt;
    opt.threads = 2;
    opt.check_positive_definite = false;
    CHECK_THROWS_AS((vla::forward<vla::backend::Cpu, Op>(fx.args(), cfg, opt)), std::invalid_argument);
    CHECK(fx.untouched());
    fx.init = keep;
  };
  rejected_nocheck([&](vt::StateBuf<TestType>& s) { s.A[std::size_t(last * 25 + 12)] = -1; }, "negative diagonal");
  rejected_nocheck([&](vt::StateBuf<TestType>& s) { s.A[std::size_t(last * 25 + 0)] = 0; }, "zero diagonal");
  rejected_nocheck([&](vt::StateBuf<TestType>& s) { s.A[std::size_t(last * 25 + 1)] += 1; }, "asymmetric");
  rejected_nocheck([&](vt::StateBuf<TestType>& s) { s.A[std::size_t(last * 25 + 7)] = bad_values<TestType>()[0]; },
                   "NaN");
  rejected_nocheck([&](vt::StateBuf<TestType>& s) { s.steps[0] = -5; }, "negative steps");
  // Still valid afterwards.
  CHECK_NOTHROW(run_op<Op>(fx.args(), cfg, 2));
}

TEMPLATE_TEST_CASE("baseline forwards reject bad arguments and write nothing", "[invalid][forward][baseline]", float,
                   double) {
  const vla::Config cfg;
  // Linear attention: u is not required; a NaN in the initial z is rejected.
  {
    ForwardFixture<TestType> fx;
    auto a = fx.args();
    a.u = nullptr;
    a.initial_state.A = nullptr, a.initial_state.steps = nullptr;
    a.final_state.A = nullptr, a.final_state.steps = nullptr;
    auto b = a;
    fx.init.z[3] = std::numeric_limits<TestType>::quiet_NaN();
    CHECK_THROWS_AS(run_op<vla::op::LinearAttention>(b, cfg, 2), std::invalid_argument);
    CHECK(fx.untouched());
    b = a, b.final_state.z = nullptr;
    CHECK_THROWS_AS(run_op<vla::op::LinearAttention>(b, cfg, 1), std::invalid_argument);
    CHECK(fx.untouched());
    b = a, b.q = nullptr;
    CHECK_THROWS_AS(run_op<vla::op::LinearAttention>(b, cfg, 1), std::invalid_argument);
    CHECK(fx.untouched());
    fx.init.z[3] = TestType(1);
    CHECK_NOTHROW(run_op<vla::op::LinearAttention>(a, cfg, 2));
  }
  // DeltaNet: beta is required and must be in (0, 1] everywhere.
  {
    ForwardFixture<TestType> fx;
    auto a = fx.args();
    a.u = nullptr;
    a.initial_state = {}, a.initial_state.S = fx.init.S.data();
    a.final_state = {}, a.final_state.S = fx.fin.S.data();
    auto b = a;
    b.beta = nullptr;
    CHECK_THROWS_AS(run_op<vla::op::DeltaNet>(b, cfg, 2), std::invalid_argument);
    CHECK(fx.untouched());
    for (TestType beta : {TestType(0), TestType(-0.25), TestType(1.5), std::numeric_limits<TestType>::quiet_NaN(),
                          std::numeric_limits<TestType>::infinity()}) {
      for (std::size_t pos : {std::size_t(0), fx.b.beta.size() - 1}) {
        INFO("beta " << beta << " at " << pos);
        const TestType keep = fx.b.beta[pos];
        fx.b.beta[pos] = beta;
        CHECK_THROWS_AS(run_op<vla::op::DeltaNet>(a, cfg, 2), std::invalid_argument);
        CHECK(fx.untouched());
        fx.b.beta[pos] = keep;
      }
    }
    fx.init.S[7] = std::numeric_limits<TestType>::infinity();
    CHECK_THROWS_AS(run_op<vla::op::DeltaNet>(a, cfg, 2), std::invalid_argument);
    CHECK(fx.untouched());
    CHECK_THROWS_AS(run_op<vla::op::DeltaNet>(a, cfg, -1), std::invalid_argument);
    CHECK(fx.untouched());
    fx.init.S[7] = TestType(0);
    CHECK_NOTHROW(run_op<vla::op::DeltaNet>(a, cfg, 2));
  }
}

TEST_CASE("forward's messages name the argument, the token, the head and the element", "[invalid][forward][messages]") {
  ForwardFixture<float> fx;
  const vla::Config cfg;
  // A non-finite input: by (token, head, element), here token 7, head 1, element 2 of q ([tokens, H=2, dk=5]).
  fx.b.q[std::size_t((7 * 2 + 1) * 5 + 2)] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(run_op<vla::op::Vla>(fx.args(), cfg, 1),
                    Catch::Contains("q has a non-finite entry at token 7, head 1, element 2"));
  CHECK(fx.untouched());
  fx.b.q[std::size_t((7 * 2 + 1) * 5 + 2)] = 0.5f;
  // A missing argument: one prefix, the op named once.
  auto a = fx.args();
  a.u = nullptr;
  CHECK_THROWS_WITH(run_op<vla::op::Vla>(a, cfg, 1), Catch::Equals("vla::forward<vla>: u (the penalty directions) is required"));
  // A bad initial state: by (sequence, head); pair 3 is sequence 1, head 1 (H = 2).
  fx.init.A[std::size_t(3 * 25)] = -1;
  CHECK_THROWS_WITH(run_op<vla::op::Vla>(fx.args(), cfg, 1),
                    Catch::Contains("initial_state of sequence 1, head 1") && Catch::Contains("positive definite"));
  CHECK(fx.untouched());
  // beta by (token, head).
  ForwardFixture<float> dn;
  dn.b.beta[std::size_t(4 * 2 + 1)] = 2.f;
  CHECK_THROWS_WITH((run_op<vla::op::DeltaNet>(dn.b.args(), cfg, 1)), Catch::Contains("beta must be in (0, 1] (token 4, head 1)"));
}

// detail::require_finite_buffer scans in blocks of 4096 values (an integer OR over each block, then a
// search of a flagged block). The fixture above holds ~150 values per buffer (one block), with NaNs
// only at its ends, so a scan that skipped or misplaced later blocks would pass it. Here every
// buffer spans five blocks (17,600 values: T = 1100, H = 2, d = 8; the last block partial) and one
// non-finite value is planted alone in block 1, at the start of block 2, in block 3 and at the
// very end; the message must name its flat index, and o and the final state must stay untouched.
TEMPLATE_TEST_CASE("forward finds a lone non-finite value in any 4096-value block of a large buffer",
                   "[invalid][forward]", float, double) {
  const std::int64_t T = 1100, H = 2, d = 8;
  vt::Batch<TestType> b = vt::random_batch<TestType>(1, T, H, d, d, 31);
  vt::StateBuf<TestType> init(H, d, d), fin(H, d, d);
  for (std::int64_t p = 0; p < H; ++p) init.put(p, warmed<TestType>(int(d), int(d), 5 + int(p), 40 + unsigned(p)).save());
  const std::vector<TestType> o0 = b.o;
  const vt::StateBuf<TestType> fin0 = fin;
  auto args = [&] {
    auto a = b.args();
    a.initial_state = init.in();
    a.final_state = fin.out();
    return a;
  };
  const std::size_t n = std::size_t(T * H * d);
  REQUIRE(n > 4 * 4096);
  const std::size_t positions[] = {4096 + 123, 2 * 4096, 3 * 4096 + 7, n - 1};
  const char* names[] = {"q", "k", "v", "u"};
  std::vector<TestType>* bufs[] = {&b.q, &b.k, &b.v, &b.u};
  for (int which = 0; which < 4; ++which) {
    REQUIRE(bufs[which]->size() == n);
    for (std::size_t pos : positions) {
      for (TestType badv : bad_values<TestType>()) {
        INFO(names[which] << "[" << pos << "] = " << badv);
        const TestType keep = (*bufs[which])[pos];
        (*bufs[which])[pos] = badv;
        CHECK_THROWS_WITH(run_op<vla::op::Vla>(args(), vla::Config{}, 2),
                          Catch::Contains(std::string(names[which]) + " has a non-finite entry") &&
                              Catch::Contains("(flat index " + std::to_string(pos) + ")"));
        CHECK(vt::bitwise_equal(b.o, o0));
        CHECK(vt::bitwise_equal(fin.A, fin0.A));
        CHECK(vt::bitwise_equal(fin.S, fin0.S));
        CHECK(vt::bitwise_equal(fin.z, fin0.z));
        CHECK(fin.steps == fin0.steps);
        (*bufs[which])[pos] = keep;
      }
    }
  }
  // The clean buffers are accepted and written (so the throws above came from the planted values).
  CHECK_NOTHROW(run_op<vla::op::Vla>(args(), vla::Config{}, 2));
  CHECK_FALSE(vt::bitwise_equal(b.o, o0));
  CHECK(fin.steps[0] == init.steps[0] + T);
}
