// tests/reference.hpp — an independent float64 reference of the recurrences, written straight from
// docs/maths.md §2 (VLA) and section 7 (linear attention, DeltaNet) with plain loops over
// std::vector<double>. It uses nothing from the library: no Eigen, no vla:: class, no shared rule.
// Matrices are row-major: A[i*dk + j], S[i*dk + j] (S is dv×dk).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace ref {

/// The constants of docs/maths.md §2, with docs/maths.md's defaults (kept apart from vla::Config on purpose).
struct Params {
  double lambda0 = 0.1;
  double stab_eps = 1e-4;
  int refresh_period = 20;
  double refresh_eps = 1e-3;
  double denom_eps = 1e-4;
  bool normalize = true;
};

inline double dot(const double* a, const double* b, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
inline double norm(const double* a, int n) { return std::sqrt(dot(a, a, n)); }

/// One VLA head, docs/maths.md §2 step by step.
struct Vla {
  int dk, dv;
  Params p;
  std::vector<double> A, S, z;
  std::int64_t t = 0;

  Vla(int dk_, int dv_, Params p_ = {}) : dk(dk_), dv(dv_), p(p_), A(dk_ * dk_, 0.0), S(dv_ * dk_, 0.0), z(dk_, 0.0) {
    for (int i = 0; i < dk; ++i) A[i * dk + i] = 1.0 / p.lambda0;  // A = (1/λ0)·I, S = 0, z = 0, t = 0
  }

  /// The A used by step 4 at the last step is the current A (step 5 does not change it).
  void step(const double* q, const double* k, const double* v, const double* u, double* o) {
    // 1. û = u / ‖u‖ / √dk (a zero u leaves A as it is)
    const double nu = norm(u, dk);
    if (nu > 0) {
      std::vector<double> uh(dk), w(dk, 0.0);
      for (int i = 0; i < dk; ++i) uh[i] = u[i] / nu / std::sqrt(double(dk));
      // 2. w = A û; δ = max(1 + ûᵀw, ε_stab); A ← A − w wᵀ / δ
      for (int i = 0; i < dk; ++i)
        for (int j = 0; j < dk; ++j) w[i] += A[i * dk + j] * uh[j];
      const double delta = std::max(1.0 + dot(uh.data(), w.data(), dk), p.stab_eps);
      for (int i = 0; i < dk; ++i)
        for (int j = 0; j < dk; ++j) A[i * dk + j] -= w[i] * w[j] / delta;
    }
    // 3. refresh on the step count before this step
    if (p.refresh_period > 0 && (t + 1) % p.refresh_period == 0)
      for (int i = 0; i < dk; ++i) A[i * dk + i] += p.refresh_eps;
    // 4. k̂ = k/‖k‖; α = A k̂; α̂ = α/‖α‖ (a zero k or α writes nothing)
    const double nk = norm(k, dk);
    if (nk > 0) {
      std::vector<double> kh(dk), al(dk, 0.0), e(dv, 0.0);
      for (int i = 0; i < dk; ++i) kh[i] = k[i] / nk;
      for (int i = 0; i < dk; ++i)
        for (int j = 0; j < dk; ++j) al[i] += A[i * dk + j] * kh[j];
      const double na = norm(al.data(), dk);
      if (na > 0) {
        for (int i = 0; i < dk; ++i) al[i] /= na;
        // 5. e = v − S k̂; S ← S + e α̂ᵀ
        for (int r = 0; r < dv; ++r) e[r] = v[r] - dot(&S[r * dk], kh.data(), dk);
        for (int r = 0; r < dv; ++r)
          for (int j = 0; j < dk; ++j) S[r * dk + j] += e[r] * al[j];
      }
    }
    // 6. z ← z + k; o = S q / max(zᵀq, ε_den)
    for (int i = 0; i < dk; ++i) z[i] += k[i];
    const double den = p.normalize ? std::max(dot(z.data(), q, dk), p.denom_eps) : 1.0;
    for (int r = 0; r < dv; ++r) o[r] = dot(&S[r * dk], q, dk) / den;
    // 7.
    ++t;
  }
};

/// Linear attention (docs/maths.md §7): S ← S + v kᵀ; z ← z + k; o = S q / max(zᵀq, ε_den).
struct LinearAttention {
  int dk, dv;
  Params p;
  std::vector<double> S, z;
  LinearAttention(int dk_, int dv_, Params p_ = {}) : dk(dk_), dv(dv_), p(p_), S(dv_ * dk_, 0.0), z(dk_, 0.0) {}
  void step(const double* q, const double* k, const double* v, double* o) {
    for (int r = 0; r < dv; ++r)
      for (int j = 0; j < dk; ++j) S[r * dk + j] += v[r] * k[j];
    for (int i = 0; i < dk; ++i) z[i] += k[i];
    const double den = p.normalize ? std::max(dot(z.data(), q, dk), p.denom_eps) : 1.0;
    for (int r = 0; r < dv; ++r) o[r] = dot(&S[r * dk], q, dk) / den;
  }
};

/// DeltaNet (docs/maths.md §7): k̂ = k/‖k‖; S ← S + β (v − S k̂) k̂ᵀ; o = S q. A zero key writes nothing.
struct DeltaNet {
  int dk, dv;
  std::vector<double> S;
  DeltaNet(int dk_, int dv_) : dk(dk_), dv(dv_), S(dv_ * dk_, 0.0) {}
  void step(const double* q, const double* k, const double* v, double beta, double* o) {
    const double nk = norm(k, dk);
    if (nk > 0) {
      std::vector<double> kh(dk), e(dv);
      for (int i = 0; i < dk; ++i) kh[i] = k[i] / nk;
      for (int r = 0; r < dv; ++r) e[r] = beta * (v[r] - dot(&S[r * dk], kh.data(), dk));
      for (int r = 0; r < dv; ++r)
        for (int j = 0; j < dk; ++j) S[r * dk + j] += e[r] * kh[j];
    }
    for (int r = 0; r < dv; ++r) o[r] = dot(&S[r * dk], q, dk);
  }
};

}  // namespace ref
