// Parity with the authors' own implementation: fixtures made by running their published VLAv3 module
// (github.com/Vishal-sys-code/variational-linear-attention, src/models/attention/vla_v3.py at commit
// 71b33b1) in float64 under torch.autograd — tools/parity/make_fixture.py, which hooks their code's
// calls to capture the op's q, k, v, u and output, and takes autograd's gradients of Σ o·dO with
// respect to q, k, v, u. None of their code is in this repository; the fixtures are its outputs.
//
// Fixture layout (little-endian): "VLAFIX01", int64 T, int64 d, then double lambda_0, stab_eps,
// per_eps, int64 period, double denom_eps, double (unused), then ten T×d row-major double arrays:
// q, k, v, u (the op's inputs), o (their output), dO, and autograd's dq, dk, dv, du.
#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "support.hpp"
#include "vla/backward.hpp"

#ifndef VLA_FIXTURE_DIR
#error "VLA_FIXTURE_DIR must point at tests/fixtures"
#endif

namespace {

struct Fixture {
  std::int64_t T = 0, d = 0, period = 0;
  double lambda0 = 0, stab_eps = 0, per_eps = 0, denom_eps = 0;
  std::array<vla::Matrix<double>, 10> a;  // q k v u o dO dq dk dv du
};

Fixture load(const std::string& name) {
  const std::string path = std::string(VLA_FIXTURE_DIR) + "/" + name;
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  char magic[8];
  f.read(magic, 8);
  REQUIRE(std::memcmp(magic, "VLAFIX01", 8) == 0);
  Fixture x;
  double unused = 0;
  f.read(reinterpret_cast<char*>(&x.T), 8);
  f.read(reinterpret_cast<char*>(&x.d), 8);
  f.read(reinterpret_cast<char*>(&x.lambda0), 8);
  f.read(reinterpret_cast<char*>(&x.stab_eps), 8);
  f.read(reinterpret_cast<char*>(&x.per_eps), 8);
  f.read(reinterpret_cast<char*>(&x.period), 8);
  f.read(reinterpret_cast<char*>(&x.denom_eps), 8);
  f.read(reinterpret_cast<char*>(&unused), 8);
  REQUIRE(x.T > 0);
  REQUIRE(x.d > 0);
  for (auto& m : x.a) {
    vla::Matrix<double> rows(x.d, x.T);  // column t = token t (the file is T×d row-major)
    f.read(reinterpret_cast<char*>(rows.data()), std::streamsize(sizeof(double) * rows.size()));
    m = rows.transpose();
  }
  REQUIRE(f.good());
  return x;
}

double rel(const vla::Matrix<double>& a, const vla::Matrix<double>& b) { return (a - b).norm() / b.norm(); }

}  // namespace

TEST_CASE("authors' VLAv3 in float64: our forward and backward agree with it", "[parity]") {
  for (const char* name : {"authors_vlav3_d16_T96.bin", "authors_vlav3_d8_T240.bin"}) {
    const Fixture x = load(name);
    vla::Config cfg;  // their constants, not vla's defaults
    cfg.lambda0 = x.lambda0;  // their A_0 = (1/lambda_0)·I, as ours
    cfg.stab_eps = x.stab_eps;
    cfg.refresh_eps = x.per_eps;
    cfg.refresh_period = int(x.period);
    cfg.denom_eps = x.denom_eps;
    const auto& [q, k, v, u, o_theirs, d_o, dq, dk, dv, du] = x.a;
    vla::VlaState<double> st(x.d, x.d, cfg);
    const auto init = st.save();
    vla::Matrix<double> o(x.T, x.d);
    for (Eigen::Index t = 0; t < x.T; ++t)
      o.row(t) = st.step(q.row(t).transpose(), k.row(t).transpose(), v.row(t).transpose(), u.row(t).transpose())
                     .transpose();
    const vla::VlaGradients<double> g = vla::vla_backward<double>(init, cfg, q, k, v, u, d_o);
    // Their recurrence uses u as given (it is unit length from their normalize), ours normalises it
    // (docs/maths.md §2.1: û = u/‖u‖/√dk), so our op is invariant to u's length and its gradient
    // has no radial part: ours must equal theirs with the radial part removed, (I − u uᵀ) du_t for
    // unit u_t. Their radial part is real for their function and simply not a direction ours has.
    vla::Matrix<double> du_tangent = du;
    for (Eigen::Index t = 0; t < x.T; ++t) {
      REQUIRE(std::abs(u.row(t).norm() - 1) <= 1e-14);
      du_tangent.row(t) -= du.row(t).dot(u.row(t)) * u.row(t);
    }
    const double e[5] = {rel(o, o_theirs), rel(g.dq, dq), rel(g.dk, dk), rel(g.dv, dv), rel(g.du, du_tangent)};
    std::printf("  authors' VLAv3 %-26s o %.1e  dq %.1e  dk %.1e  dv %.1e  du (tangential) %.1e\n", name, e[0], e[1], e[2], e[3],
                e[4]);
    CHECK(e[0] <= 1e-13);  // measured ≤ 2.5e-16
    for (int i = 1; i < 5; ++i) CHECK(e[i] <= 1e-12);  // measured ≤ 9.1e-16
  }
}
