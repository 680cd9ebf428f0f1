// vla/rows.hpp: the forward from row-per-token Eigen matrices and HostStates. Column-major and sliced
// inputs give the bits of contiguous row-major ones, a strided output is written in place, streaming
// through HostStates equals one call, and every mismatch is refused by name before any write.
#include "batch.hpp"

namespace {

using RowsF = vla::TokenRows<float>;

struct Inputs {
  RowsF q, k, v, u;
};
Inputs make_inputs(std::int64_t T, std::int64_t H, std::int64_t dk, std::int64_t dv, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01;
  Inputs x{RowsF(T, H * dk), RowsF(T, H * dk), RowsF(T, H * dv), RowsF(T, H * dk)};
  for (auto* m : {&x.q, &x.k, &x.v, &x.u})
    for (Eigen::Index i = 0; i < m->size(); ++i) m->data()[i] = n01(rng);
  vla::elu_plus_one_inplace(x.q.data(), x.q.size());
  vla::elu_plus_one_inplace(x.k.data(), x.k.size());
  return x;
}

}  // namespace

TEST_CASE("forward_rows equals the ForwardArgs forward, bit for bit", "[rows]") {
  const std::int64_t T = 70, H = 3, dk = 8, dv = 5;
  const Inputs x = make_inputs(T, H, dk, dv, 1);
  RowsF o(T, H * dv);
  vla::forward_rows(x.q, x.k, x.v, x.u, o, H, vla::Config{});
  std::vector<float> o2(std::size_t(T * H * dv), -1.f);
  vla::ForwardArgs<float> a;
  a.batch = 1, a.seq_len = T, a.heads = H, a.dk = dk, a.dv = dv;
  a.q = x.q.data(), a.k = x.k.data(), a.v = x.v.data(), a.u = x.u.data(), a.o = o2.data();
  vla::forward<vla::backend::Cpu>(a, vla::Config{});
  CHECK(std::memcmp(o.data(), o2.data(), o2.size() * sizeof(float)) == 0);
}

TEST_CASE("forward_rows: column-major, sliced inputs and a strided output give the same bits", "[rows]") {
  const std::int64_t T = 50, H = 2, dk = 8, dv = 4;
  const Inputs x = make_inputs(T, H, dk, dv, 2);
  RowsF ref(T, H * dv);
  vla::forward_rows(x.q, x.k, x.v, x.u, ref, H, vla::Config{});
  // Column-major copies (Eigen's default storage).
  const Eigen::MatrixXf qc = x.q, kc = x.k, vc = x.v, uc = x.u;
  RowsF o1(T, H * dv);
  vla::forward_rows(qc, kc, vc, uc, o1, H, vla::Config{});
  CHECK(vt::bitwise_equal(o1, ref));
  // Inputs sliced out of wider row-major matrices (rows not contiguous), output into a block of one.
  RowsF wide(T, 3 * H * dk + H * dv + 7);
  wide.setRandom();
  wide.middleCols(0, H * dk) = x.q;
  wide.middleCols(H * dk, H * dk) = x.k;
  wide.middleCols(2 * H * dk, H * dk) = x.u;
  wide.middleCols(3 * H * dk, H * dv) = x.v;
  RowsF out(T + 2, H * dv + 3);
  out.setConstant(-9.f);
  vla::forward_rows(wide.middleCols(0, H * dk), wide.middleCols(H * dk, H * dk),
                                         wide.middleCols(3 * H * dk, H * dv), wide.middleCols(2 * H * dk, H * dk),
                                         out.block(1, 2, T, H * dv), H, vla::Config{});
  CHECK(vt::bitwise_equal(out.block(1, 2, T, H * dv), ref));
  CHECK((out.row(0).array() == -9.f).all());
  CHECK((out.col(0).array() == -9.f).all());
}

TEST_CASE("forward_rows with HostStates: two calls equal one, and varlen", "[rows][streaming]") {
  const std::int64_t T = 90, H = 2, dk = 8, dv = 6;
  const Inputs x = make_inputs(T, H, dk, dv, 3);
  const vla::Config cfg;
  vla::HostStates<float> whole(1, H, dk, dv, cfg), split(1, H, dk, dv, cfg);
  RowsF o(T, H * dv), o1(37, H * dv), o2(T - 37, H * dv);
  vla::forward_rows(x.q, x.k, x.v, x.u, o, H, cfg, &whole);
  vla::forward_rows(x.q.topRows(37), x.k.topRows(37), x.v.topRows(37), x.u.topRows(37), o1, H, cfg,
                                         &split);
  vla::forward_rows(x.q.bottomRows(T - 37), x.k.bottomRows(T - 37), x.v.bottomRows(T - 37),
                                         x.u.bottomRows(T - 37), o2, H, cfg, &split);
  CHECK(vt::bitwise_equal(o.topRows(37), o1));
  CHECK(vt::bitwise_equal(o.bottomRows(T - 37), o2));
  for (std::int64_t h = 0; h < H; ++h) CHECK(vt::same_snapshot(whole.get(0, h), split.get(0, h)));
  CHECK(whole.get(0, 1).steps == T);
  // Two sequences cut by cu_seqlens: each equals its own single-sequence run.
  vla::HostStates<float> two(2, H, dk, dv, cfg), first(1, H, dk, dv, cfg);
  RowsF ov(T, H * dv), of(40, H * dv);
  vla::forward_rows(x.q, x.k, x.v, x.u, ov, H, cfg, &two, vla::CpuOptions{}, {0, 40, T});
  vla::forward_rows(x.q.topRows(40), x.k.topRows(40), x.v.topRows(40), x.u.topRows(40), of, H, cfg,
                                         &first);
  CHECK(vt::bitwise_equal(ov.topRows(40), of));
  CHECK(vt::same_snapshot(two.get(0, 1), first.get(0, 1)));
  CHECK(two.get(1, 0).steps == T - 40);
}

TEST_CASE("forward_rows refuses mismatched extents by name, before any write", "[rows][invalid]") {
  const std::int64_t T = 20, H = 2, dk = 8, dv = 4;
  const Inputs x = make_inputs(T, H, dk, dv, 4);
  RowsF o = RowsF::Constant(T, H * dv, -3.f);
  const RowsF o0 = o;
  const vla::Config cfg;
  CHECK_THROWS_WITH(vla::forward_rows(x.q, x.k.topRows(19), x.v, x.u, o, H, cfg),
                    Catch::Contains("k is 19 × 16, expected 20 × 16"));
  CHECK_THROWS_WITH(vla::forward_rows(x.q, x.k, x.v, x.u, o, 3, cfg), Catch::Contains("not a multiple of heads"));
  RowsF wrong_o(T, H * dv + 1);
  CHECK_THROWS_WITH(vla::forward_rows(x.q, x.k, x.v, x.u, wrong_o, H, cfg), Catch::Contains("o is"));
  vla::HostStates<float> st(2, H, dk, dv, cfg);
  CHECK_THROWS_WITH(vla::forward_rows(x.q, x.k, x.v, x.u, o, H, cfg, &st), Catch::Contains("state holds 2 sequences"));
  CHECK_THROWS_WITH(vla::forward_rows(x.q, x.k, x.v, x.u, o, H, cfg, nullptr, vla::CpuOptions{}, {0, 5, 19}),
                    Catch::Contains("cu_seqlens"));
  CHECK(vt::bitwise_equal(o, o0));
  // Linear attention needs no u.
  CHECK_NOTHROW(vla::forward_rows<vla::op::LinearAttention>(x.q, x.k, x.v, RowsF(), o, H, cfg));
}

TEST_CASE("HostStates: fresh, get/set round trip, validated set, range checks", "[rows][state]") {
  vla::Config cfg;
  cfg.lambda0 = 0.5;
  vla::HostStates<double> st(2, 3, 4, 5, cfg);
  const auto fresh = st.get(1, 2);
  CHECK(fresh.A.isApprox(Eigen::MatrixXd::Identity(4, 4) * 2.0));
  CHECK(fresh.S.isZero(0));
  CHECK(fresh.steps == 0);
  vla::VlaState<double> head(4, 5, cfg);
  std::vector<double> sink;
  vt::run_vla(head, vt::random_stream(4, 5, 13, 9), 0, 13, sink);
  st.set(0, 1, head.save());
  CHECK(vt::same_snapshot(st.get(0, 1), head.save()));
  auto bad = head.save();
  bad.A(0, 0) = -1;
  CHECK_THROWS_AS(st.set(0, 1, bad), std::invalid_argument);
  CHECK(vt::same_snapshot(st.get(0, 1), head.save()));
  CHECK_THROWS_WITH(st.get(2, 0), Catch::Contains("out of range"));
  st.reset(0, 1);
  CHECK(vt::same_snapshot(st.get(0, 1), fresh));
}
