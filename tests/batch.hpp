// tests/batch.hpp — buffers for the batched forward: [tokens, H, d] inputs, per-(sequence, head)
// state buffers, and the single-head replay that the forward is checked against.
#pragma once

#include "support.hpp"

namespace vt {

template <class Scalar>
struct Batch {
  std::int64_t N = 0, T = 0, H = 0, dk = 0, dv = 0;
  std::vector<std::int64_t> cu;  // empty: fixed-length [N, T]; else N+1 offsets (varlen)
  std::vector<Scalar> q, k, v, u, beta, o;

  std::int64_t tokens() const { return cu.empty() ? N * T : cu.back(); }
  std::int64_t first(std::int64_t n) const { return cu.empty() ? n * T : cu[std::size_t(n)]; }
  std::int64_t len(std::int64_t n) const { return cu.empty() ? T : cu[std::size_t(n) + 1] - cu[std::size_t(n)]; }
  std::int64_t xk(std::int64_t tok, std::int64_t h) const { return (tok * H + h) * dk; }
  std::int64_t xv(std::int64_t tok, std::int64_t h) const { return (tok * H + h) * dv; }

  // The forward requires non-null q, k, v, (u,) o even when there are no tokens; an empty
  // std::vector's data() may be null, so zero-token buffers point at a dummy element.
  Scalar dummy[1] = {Scalar(0)};
  Scalar* ptr(std::vector<Scalar>& x) { return x.empty() ? dummy : x.data(); }

  vla::ForwardArgs<Scalar> args() {
    vla::ForwardArgs<Scalar> a;
    a.batch = N, a.seq_len = T, a.heads = H, a.dk = dk, a.dv = dv;
    a.cu_seqlens = cu.empty() ? nullptr : cu.data();
    a.q = ptr(q), a.k = ptr(k), a.v = ptr(v), a.u = ptr(u), a.beta = ptr(beta), a.o = ptr(o);
    return a;
  }
};

/// Random batch: q, k = ELU+1 of normals, v, u normal, beta in (0, 1]. o is filled with `fill`.
template <class Scalar>
Batch<Scalar> random_batch(std::int64_t N, std::int64_t T, std::int64_t H, std::int64_t dk, std::int64_t dv,
                           unsigned seed, std::vector<std::int64_t> cu = {}, Scalar fill = Scalar(-7.25)) {
  Batch<Scalar> b;
  b.N = N, b.T = T, b.H = H, b.dk = dk, b.dv = dv, b.cu = std::move(cu);
  if (!b.cu.empty()) REQUIRE(std::int64_t(b.cu.size()) == N + 1);
  std::mt19937 rng(seed);
  std::normal_distribution<double> n01;
  std::uniform_real_distribution<double> u01;
  const std::size_t nk = std::size_t(b.tokens() * H * dk), nv = std::size_t(b.tokens() * H * dv);
  b.q.resize(nk), b.k.resize(nk), b.u.resize(nk), b.v.resize(nv), b.o.assign(nv, fill);
  b.beta.resize(std::size_t(b.tokens() * H));
  for (auto& x : b.q) x = Scalar(elu1(n01(rng)));
  for (auto& x : b.k) x = Scalar(elu1(n01(rng)));
  for (auto& x : b.u) x = Scalar(n01(rng));
  for (auto& x : b.v) x = Scalar(n01(rng));
  for (auto& x : b.beta) x = Scalar(1.0 - u01(rng));
  return b;
}

/// State buffers for P = N·H pairs, row-major as layout.hpp describes.
template <class Scalar>
struct StateBuf {
  std::int64_t P = 0, dk = 0, dv = 0;
  std::vector<Scalar> A, S, z;
  std::vector<std::int64_t> steps;
  StateBuf() = default;
  StateBuf(std::int64_t P_, std::int64_t dk_, std::int64_t dv_, Scalar fill = Scalar(-3.5))
      : P(P_), dk(dk_), dv(dv_), A(std::size_t(P_ * dk_ * dk_), fill), S(std::size_t(P_ * dv_ * dk_), fill),
        z(std::size_t(P_ * dk_), fill), steps(std::size_t(P_), -99) {}
  vla::StateBuffers<Scalar> out() { return {A.data(), S.data(), z.data(), steps.data()}; }
  vla::StateBuffers<const Scalar> in() const { return {A.data(), S.data(), z.data(), steps.data()}; }

  void put(std::int64_t p, const vla::VlaSnapshot<Scalar>& s) {
    for (std::int64_t i = 0; i < dk; ++i)
      for (std::int64_t j = 0; j < dk; ++j) A[std::size_t((p * dk + i) * dk + j)] = s.A(i, j);
    put_S(p, s.S);
    for (std::int64_t i = 0; i < dk; ++i) z[std::size_t(p * dk + i)] = s.z[i];
    steps[std::size_t(p)] = s.steps;
  }
  void put_S(std::int64_t p, const vla::Matrix<Scalar>& m) {
    for (std::int64_t i = 0; i < dv; ++i)
      for (std::int64_t j = 0; j < dk; ++j) S[std::size_t((p * dv + i) * dk + j)] = m(i, j);
  }
  vla::VlaSnapshot<Scalar> get(std::int64_t p) const {
    vla::VlaSnapshot<Scalar> s;
    s.A.resize(dk, dk), s.S = get_S(p), s.z.resize(dk);
    for (std::int64_t i = 0; i < dk; ++i)
      for (std::int64_t j = 0; j < dk; ++j) s.A(i, j) = A[std::size_t((p * dk + i) * dk + j)];
    for (std::int64_t i = 0; i < dk; ++i) s.z[i] = z[std::size_t(p * dk + i)];
    s.steps = steps[std::size_t(p)];
    return s;
  }
  vla::Matrix<Scalar> get_S(std::int64_t p) const {
    vla::Matrix<Scalar> m(dv, dk);
    for (std::int64_t i = 0; i < dv; ++i)
      for (std::int64_t j = 0; j < dk; ++j) m(i, j) = S[std::size_t((p * dv + i) * dk + j)];
    return m;
  }
  vla::Vector<Scalar> get_z(std::int64_t p) const {
    vla::Vector<Scalar> m(dk);
    for (std::int64_t i = 0; i < dk; ++i) m[i] = z[std::size_t(p * dk + i)];
    return m;
  }
};

/// Copies of one (sequence, head)'s token rows: fresh vectors, so the single-head replay reads
/// different addresses (and alignments) than the forward.
template <class Scalar>
struct Tok {
  vla::Vector<Scalar> q, k, v, u;
  Scalar beta;
};
template <class Scalar>
Tok<Scalar> token(const Batch<Scalar>& b, std::int64_t tok, std::int64_t h) {
  Tok<Scalar> t;
  t.q = CMap<Scalar>(b.q.data() + b.xk(tok, h), b.dk);
  t.k = CMap<Scalar>(b.k.data() + b.xk(tok, h), b.dk);
  t.u = CMap<Scalar>(b.u.data() + b.xk(tok, h), b.dk);
  t.v = CMap<Scalar>(b.v.data() + b.xv(tok, h), b.dv);
  t.beta = b.beta[std::size_t(tok * b.H + h)];
  return t;
}

/// The o rows of one (sequence, head), in token order.
template <class Scalar>
vla::Matrix<Scalar> outputs_of(const Batch<Scalar>& b, std::int64_t n, std::int64_t h) {
  vla::Matrix<Scalar> m(b.len(n), b.dv);
  for (std::int64_t t = 0; t < b.len(n); ++t)
    m.row(t) = CMap<Scalar>(b.o.data() + b.xv(b.first(n) + t, h), b.dv).transpose();
  return m;
}

/// Runs the tokens of sequence n, head h of a batch through the float64 reference r (which holds
/// its state); returns the outputs in token order.
template <class Scalar>
std::vector<double> ref_replay(ref::Vla& r, const Batch<Scalar>& b, std::int64_t n, std::int64_t h) {
  std::vector<double> o(std::size_t(b.dv)), out;
  for (std::int64_t t = 0; t < b.len(n); ++t) {
    const auto x = token(b, b.first(n) + t, h);
    const Eigen::VectorXd q = x.q.template cast<double>(), k = x.k.template cast<double>(),
                          v = x.v.template cast<double>(), u = x.u.template cast<double>();
    r.step(q.data(), k.data(), v.data(), u.data(), o.data());
    out.insert(out.end(), o.begin(), o.end());
  }
  return out;
}

}  // namespace vt
