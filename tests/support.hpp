// tests/support.hpp — what the test files share: random streams, tolerances, comparisons.
#pragma once

#include <catch2/catch.hpp>
#include <vla/vla.hpp>

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "reference.hpp"

namespace vt {

// ---- Tolerances against the float64 reference, stated once per scalar type, relative RMS
// ‖out − ref‖/‖ref‖ on benign random streams (T ≤ 400, dk, dv ≤ 64), inputs rounded to Scalar first.
// Measured (printed by test_reference.cpp and test_forward.cpp): double ≤ 1.2e-15, float ≤ 2.0e-6
// (VlaState with refresh on/off and other configs, the baselines, the batched forward). The bounds
// keep a margin of ~1000× (double) and ~50× (float).
template <class Scalar>
struct Tol;
template <>
struct Tol<double> {
  static constexpr double ref = 1e-12;
  static constexpr const char* name = "double";
};
template <>
struct Tol<float> {
  static constexpr double ref = 1e-4;
  static constexpr const char* name = "float";
};

/// A stream of T steps of inputs, generated in double; row t of q is q[t*dk .. t*dk+dk).
struct Stream {
  int dk = 0, dv = 0, T = 0;
  std::vector<double> q, k, v, u, beta;
  const double* qt(int t) const { return q.data() + std::size_t(t) * dk; }
  const double* kt(int t) const { return k.data() + std::size_t(t) * dk; }
  const double* vt(int t) const { return v.data() + std::size_t(t) * dv; }
  const double* ut(int t) const { return u.data() + std::size_t(t) * dk; }
};

inline double elu1(double x) { return x > 0 ? x + 1 : std::exp(x); }

/// Fresh random inputs: q, k = ELU(x)+1 of standard normals (the paper's feature map), v, u
/// standard normal, beta uniform in (0, 1]. Never zero.
inline Stream random_stream(int dk, int dv, int T, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n01(0.0, 1.0);
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  Stream s;
  s.dk = dk, s.dv = dv, s.T = T;
  s.q.resize(std::size_t(T) * dk), s.k.resize(std::size_t(T) * dk), s.u.resize(std::size_t(T) * dk);
  s.v.resize(std::size_t(T) * dv), s.beta.resize(T);
  for (int t = 0; t < T; ++t) {
    for (int i = 0; i < dk; ++i) s.q[std::size_t(t) * dk + i] = elu1(n01(rng));
    for (int i = 0; i < dk; ++i) s.k[std::size_t(t) * dk + i] = elu1(n01(rng));
    for (int i = 0; i < dk; ++i) s.u[std::size_t(t) * dk + i] = n01(rng);
    for (int i = 0; i < dv; ++i) s.v[std::size_t(t) * dv + i] = n01(rng);
    s.beta[t] = 1.0 - u01(rng);  // (0, 1]
  }
  return s;
}

/// Zeroes, at random steps (seeded), about one step in eight of each of k, u, q and v: the defined
/// zero-vector steps of docs/maths.md §2 mixed into a stream.
inline void zero_some_vectors(Stream& s, unsigned seed) {
  std::mt19937 rng(seed);
  const std::size_t dk = std::size_t(s.dk), dv = std::size_t(s.dv);
  for (std::size_t t = 0; t < std::size_t(s.T); ++t) {
    const unsigned r = rng() % 8;
    if (r == 0) std::fill(s.k.begin() + t * dk, s.k.begin() + (t + 1) * dk, 0.0);
    if (r == 1) std::fill(s.u.begin() + t * dk, s.u.begin() + (t + 1) * dk, 0.0);
    if (r == 2) std::fill(s.q.begin() + t * dk, s.q.begin() + (t + 1) * dk, 0.0);
    if (r == 3) std::fill(s.v.begin() + t * dv, s.v.begin() + (t + 1) * dv, 0.0);
  }
}

/// Rounds every input to Scalar (and back), so the reference sees exactly what the library sees.
template <class Scalar>
Stream rounded(Stream s) {
  for (auto* vec : {&s.q, &s.k, &s.v, &s.u, &s.beta})
    for (double& x : *vec) x = double(Scalar(x));
  return s;
}

template <class Scalar>
std::vector<Scalar> cast(const std::vector<double>& x) {
  return std::vector<Scalar>(x.begin(), x.end());
}

template <class Scalar>
using CMap = Eigen::Map<const vla::Vector<Scalar>>;

/// ‖a − b‖ / ‖b‖ over all entries.
inline double rel_rms(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

template <class Derived>
std::vector<double> to_vec(const Eigen::MatrixBase<Derived>& m) {  // row-major, as the reference
  std::vector<double> out;
  out.reserve(std::size_t(m.size()));
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index j = 0; j < m.cols(); ++j) out.push_back(double(m(i, j)));
  return out;
}

template <class Derived>
bool all_finite(const Eigen::MatrixBase<Derived>& m) {
  return m.allFinite();
}

/// Bit-for-bit equality of two dense Eigen objects (same shape, same bytes).
template <class A, class B>
bool bitwise_equal(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  using S = typename A::Scalar;
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  if (a.size() == 0) return true;
  const vla::Matrix<S> x = a, y = b;
  return std::memcmp(x.data(), y.data(), sizeof(S) * std::size_t(x.size())) == 0;
}
template <class T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), sizeof(T) * a.size()) == 0);
}

template <class Scalar>
bool same_snapshot(const vla::VlaSnapshot<Scalar>& a, const vla::VlaSnapshot<Scalar>& b) {
  return bitwise_equal(a.A, b.A) && bitwise_equal(a.S, b.S) && bitwise_equal(a.z, b.z) && a.steps == b.steps;
}

inline ref::Params params(const vla::Config& c) {
  ref::Params p;
  p.lambda0 = c.lambda0, p.stab_eps = c.stab_eps, p.refresh_period = c.refresh_period;
  p.refresh_eps = c.refresh_eps, p.denom_eps = c.denom_eps, p.normalize = c.normalize_output;
  return p;
}

/// Runs steps [t0, t1) of a stream through the reference; appends the outputs.
inline void run_ref(ref::Vla& r, const Stream& s, int t0, int t1, std::vector<double>& out) {
  std::vector<double> o(s.dv);
  for (int t = t0; t < t1; ++t) {
    r.step(s.qt(t), s.kt(t), s.vt(t), s.ut(t), o.data());
    out.insert(out.end(), o.begin(), o.end());
  }
}

/// Runs steps [t0, t1) of a stream through a VlaState; appends the outputs.
template <class Scalar>
void run_vla(vla::VlaState<Scalar>& st, const Stream& s, int t0, int t1, std::vector<double>& out) {
  const auto q = cast<Scalar>(s.q), k = cast<Scalar>(s.k), v = cast<Scalar>(s.v), u = cast<Scalar>(s.u);
  const std::size_t dk = std::size_t(s.dk), dv = std::size_t(s.dv);
  for (int t = t0; t < t1; ++t) {
    const vla::Vector<Scalar> o = st.step(CMap<Scalar>(q.data() + t * dk, s.dk), CMap<Scalar>(k.data() + t * dk, s.dk),
                                          CMap<Scalar>(v.data() + t * dv, s.dv), CMap<Scalar>(u.data() + t * dk, s.dk));
    for (Eigen::Index i = 0; i < o.size(); ++i) out.push_back(double(o[i]));
  }
}

// ---- Adversarial streams (docs/maths.md §6), rounded to float: shared by the stability tests of
// the recurrent path and the chunked path's tests.
enum class Kind { Aligned, RepeatedKey, RepeatedAligned, Subspace, Drift, Outliers };
inline const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Aligned: return "aligned (u = k)";
    case Kind::RepeatedKey: return "one key repeated";
    case Kind::RepeatedAligned: return "one key repeated, u = k";
    case Kind::Subspace: return "u in a quarter subspace";
    case Kind::Drift: return "value scale drift 1e3";
    case Kind::Outliers: return "rare 1e3 outliers";
  }
  return "?";
}

inline Stream adversarial(Kind kind, int dk, int dv, int T, unsigned seed) {
  Stream s = random_stream(dk, dv, T, seed);
  std::mt19937 rng(seed + 1000);
  switch (kind) {
    case Kind::Aligned:  // penalty directions are the keys themselves
      s.u = s.k;
      break;
    case Kind::RepeatedKey:  // every step writes with the same key
      for (int t = 1; t < T; ++t) std::copy(s.k.begin(), s.k.begin() + dk, s.k.begin() + std::ptrdiff_t(t) * dk);
      break;
    case Kind::RepeatedAligned:  // the same key every step, and it is the penalty direction too:
      // M grows along one direction only (rank-1 growth, cond(A) ~ t/dk/λ0 without the refresh)
      for (int t = 1; t < T; ++t) std::copy(s.k.begin(), s.k.begin() + dk, s.k.begin() + std::ptrdiff_t(t) * dk);
      s.u = s.k;
      break;
    case Kind::Subspace:  // û confined to the first dk/4 coordinates
      for (int t = 0; t < T; ++t)
        for (int i = dk / 4; i < dk; ++i) s.u[std::size_t(t) * dk + i] = 0;
      break;
    case Kind::Drift:  // |v| drifts over three decades
      for (int t = 0; t < T; ++t)
        for (int i = 0; i < dv; ++i) s.v[std::size_t(t) * dv + i] *= std::pow(1e3, double(t) / (T - 1));
      break;
    case Kind::Outliers:  // one step in 500 has v and k a thousand times larger
      for (int t = 0; t < T; ++t)
        if (rng() % 500 == 0) {
          for (int i = 0; i < dv; ++i) s.v[std::size_t(t) * dv + i] *= 1e3;
          for (int i = 0; i < dk; ++i) s.k[std::size_t(t) * dk + i] *= 1e3;
        }
      break;
  }
  return rounded<float>(s);
}

}  // namespace vt
