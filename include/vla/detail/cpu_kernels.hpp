// vla/detail/cpu_kernels.hpp — the fused matrix–vector passes of the CPU step.
//
// Why not plain Eigen products: one VLA step is four passes over dk² state (docs/maths.md §2 counts six
// matrix–vector products). Two of them only read (A û with A k̂; S k̂ with S q) and are fused here
// into one pass that keeps both accumulators in registers (row blocks of compile-time height), so
// each matrix element is loaded once for two FMAs; the other two are rank-1 updates, load + store
// bound. Separate Eigen calls would read every matrix twice as often. Column-major, any size:
// row blocks of 64/32/16/8, then a scalar remainder. Plain loops, so the compiler vectorises for
// whatever ISA the caller compiles for (build with -march=native, and on AVX-512 machines with GCC,
// -mprefer-vector-width=512, for the bench's figures).
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#if defined(__CUDACC__)
#define VLA_UNROLL  // nvcc's host pass warns on GCC's pragma (#1675); CPU speed from .cu files is secondary
#elif defined(__GNUC__) && !defined(__clang__)
#define VLA_UNROLL _Pragma("GCC unroll 16")
#elif defined(__clang__)
#define VLA_UNROLL _Pragma("unroll")
#else
#define VLA_UNROLL
#endif

// Each sweep block is compiled on its own (not inlined into its caller): inlined, GCC 12 rewrote some
// of them into scalar code (8× slower) depending on the caller.
#if defined(__GNUC__) || defined(__clang__)
#define VLA_KERNEL_NOINLINE __attribute__((noinline))
#else
#define VLA_KERNEL_NOINLINE inline
#endif

namespace vla {
namespace detail {

using Index = std::int64_t;

/// y1 = M x1 (and y2 = M x2 when Two) for rows [0, R) of a column-major M (leading dimension ld).
template <int R, bool Two, class T>
inline void matvec_block(const T* __restrict m, Index ld, Index cols, const T* x1,
                         const T* x2, T* __restrict y1, T* __restrict y2) {
  T a1[R], a2[R];
  VLA_UNROLL for (int i = 0; i < R; ++i) a1[i] = a2[i] = T(0);
  for (Index j = 0; j < cols; ++j) {
    const T* __restrict c = m + j * ld;
    const T s1 = x1[j];
    VLA_UNROLL for (int i = 0; i < R; ++i) a1[i] += c[i] * s1;
    if (Two) {
      const T s2 = x2[j];
      VLA_UNROLL for (int i = 0; i < R; ++i) a2[i] += c[i] * s2;
    }
  }
  VLA_UNROLL for (int i = 0; i < R; ++i) y1[i] = a1[i];
  if (Two) VLA_UNROLL for (int i = 0; i < R; ++i) y2[i] = a2[i];
}

/// y1 = M x1 (and y2 = M x2 when Two) in one pass over the rows × cols column-major M.
template <bool Two, class T>
inline void matvec_pass(const T* __restrict m, Index rows, Index cols, const T* x1,
                        const T* x2, T* __restrict y1, T* __restrict y2) {
  Index r = 0;
  for (; r + 64 <= rows; r += 64) matvec_block<64, Two>(m + r, rows, cols, x1, x2, y1 + r, y2 + r);
  if (r + 32 <= rows) matvec_block<32, Two>(m + r, rows, cols, x1, x2, y1 + r, y2 + r), r += 32;
  if (r + 16 <= rows) matvec_block<16, Two>(m + r, rows, cols, x1, x2, y1 + r, y2 + r), r += 16;
  if (r + 8 <= rows) matvec_block<8, Two>(m + r, rows, cols, x1, x2, y1 + r, y2 + r), r += 8;
  for (; r < rows; ++r) {
    T a1 = 0, a2 = 0;
    for (Index j = 0; j < cols; ++j) {
      a1 += m[r + j * rows] * x1[j];
      if (Two) a2 += m[r + j * rows] * x2[j];
    }
    y1[r] = a1;
    if (Two) y2[r] = a2;
  }
}

/// y1 = M x1 and y2 = M x2, each element of M loaded once.
template <class T>
inline void dual_matvec(const T* m, Index rows, Index cols, const T* x1, const T* x2, T* y1, T* y2) {
  matvec_pass<true>(m, rows, cols, x1, x2, y1, y2);
}

/// y = M x. Not bitwise equal to dual_matvec's y1 in general (the compiler may contract and
/// schedule the two instantiations differently): paths whose results must agree bit for bit
/// (VLA's A d with and without a key) all go through dual_matvec.
template <class T>
inline void matvec(const T* m, Index rows, Index cols, const T* x, T* y) {
  matvec_pass<false, T>(m, rows, cols, x, nullptr, y, nullptr);
}

/// M += a bᵀ (rows × cols, column-major). With a = −s, b = s this is A ← A − s sᵀ, whose
/// element (i, j) is computed from the product s_i·s_j on both sides of the diagonal.
template <int R, class T>
inline void rank1_update_block(T* __restrict m, Index ld, Index cols, const T* __restrict a, const T* __restrict b) {
  T ar[R];
  VLA_UNROLL for (int i = 0; i < R; ++i) ar[i] = a[i];
  for (Index j = 0; j < cols; ++j) {
    T* __restrict c = m + j * ld;
    const T s = b[j];
    VLA_UNROLL for (int i = 0; i < R; ++i) c[i] += ar[i] * s;
  }
}

template <class T>
inline void rank1_update(T* __restrict m, Index rows, Index cols, const T* __restrict a, const T* __restrict b) {
  Index r = 0;
  for (; r + 64 <= rows; r += 64) rank1_update_block<64>(m + r, rows, cols, a + r, b);
  if (r + 32 <= rows) rank1_update_block<32>(m + r, rows, cols, a + r, b), r += 32;
  if (r + 16 <= rows) rank1_update_block<16>(m + r, rows, cols, a + r, b), r += 16;
  if (r + 8 <= rows) rank1_update_block<8>(m + r, rows, cols, a + r, b), r += 8;
  for (; r < rows; ++r)
    for (Index j = 0; j < cols; ++j) m[r + j * rows] += a[r] * b[j];
}

/// Σᵢ c[i]·y[i] over one row block of R entries, in lanes of one vector register (no reordering of
/// a serial sum is needed, so it vectorises without -ffast-math), then a fixed halving tree.
template <int R, class T>
inline T block_dot(const T* __restrict c, const T* __restrict y) {
  constexpr int L = R < int(64 / sizeof(T)) ? R : int(64 / sizeof(T));
  T acc[L];
  VLA_UNROLL for (int l = 0; l < L; ++l) acc[l] = c[l] * y[l];
  for (int i = L; i < R; i += L) VLA_UNROLL for (int l = 0; l < L; ++l) acc[l] += c[i + l] * y[i + l];
  VLA_UNROLL for (int w = L / 2; w >= 1; w /= 2) VLA_UNROLL for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

/// The backward's column sweep (docs/maths.md §9d) over rows [0, R) of a column-major M with
/// leading dimension ld: with M's values on entry,
///   ox[x][i] = Σ_j M[i, j]·xs[x][j]        (NX products M·x, written)
///   oy[y][j] += Σ_i M[i, j]·ys[y][i]       (NY products Mᵀy, added: row blocks add their parts)
/// then the rank-NU update M[i, j] += Σ_u ua[u][i]·ub[u][j].
template <int R, int NU, int NX, int NY, class T>
VLA_KERNEL_NOINLINE void sweep_block(T* __restrict m, Index ld, Index cols, const T* const* ua, const T* const* ub,
                        const T* const* xs, T* const* ox, const T* const* ys, T* const* oy) {
  // Written as matvec_block and rank1_update_block are: flat accumulator arrays, the column read in
  // place, and the update in its own loop over the columns (the block is in L1 by then). A copy of
  // the column into a local array became a memcpy and put every accumulator on the stack, and an
  // update fused into the products' loop was compiled to scalar code in some callers (5–10× slower).
  constexpr int U = NU ? NU : 1, X = NX ? NX : 1, Y = NY ? NY : 1;
  T ar[U * R], acc[X * R], yr[Y * R];
  VLA_UNROLL for (int u = 0; u < NU; ++u) VLA_UNROLL for (int i = 0; i < R; ++i) ar[u * R + i] = ua[u][i];
  VLA_UNROLL for (int x = 0; x < X * R; ++x) acc[x] = T(0);
  VLA_UNROLL for (int y = 0; y < NY; ++y) VLA_UNROLL for (int i = 0; i < R; ++i) yr[y * R + i] = ys[y][i];
  auto update = [&] {
    for (Index j = 0; j < cols; ++j) {
      T* __restrict c = m + j * ld;
      VLA_UNROLL for (int u = 0; u < NU; ++u) {
        const T b = ub[u][j];
        VLA_UNROLL for (int i = 0; i < R; ++i) c[i] += ar[u * R + i] * b;
      }
    }
  };
  if (NX || NY) {
    for (Index j = 0; j < cols; ++j) {
      const T* __restrict c = m + j * ld;
      VLA_UNROLL for (int x = 0; x < NX; ++x) {
        const T b = xs[x][j];
        VLA_UNROLL for (int i = 0; i < R; ++i) acc[x * R + i] += c[i] * b;
      }
      VLA_UNROLL for (int y = 0; y < NY; ++y) oy[y][j] += block_dot<R>(c, yr + y * R);
    }
  }
  if (NU) update();
  VLA_UNROLL for (int x = 0; x < NX; ++x) VLA_UNROLL for (int i = 0; i < R; ++i) ox[x][i] = acc[x * R + i];
}

/// sweep_block over all rows of the rows × cols column-major M (row blocks of 64/32/16/8, then one
/// row at a time): the products from M on entry, then the update. The oy outputs (cols entries each)
/// are zeroed first.
template <int NU, int NX, int NY, class T>
inline void sweep(T* m, Index rows, Index cols, std::initializer_list<const T*> ua_l,
                  std::initializer_list<const T*> ub_l, std::initializer_list<const T*> xs_l,
                  std::initializer_list<T*> ox_l, std::initializer_list<const T*> ys_l, std::initializer_list<T*> oy_l) {
  const T* ua[NU ? NU : 1] = {};
  const T* ub[NU ? NU : 1] = {};
  const T* xs[NX ? NX : 1] = {};
  T* ox[NX ? NX : 1] = {};
  const T* ys[NY ? NY : 1] = {};
  T* oy[NY ? NY : 1] = {};
  std::copy(ua_l.begin(), ua_l.end(), ua);
  std::copy(ub_l.begin(), ub_l.end(), ub);
  std::copy(xs_l.begin(), xs_l.end(), xs);
  std::copy(ox_l.begin(), ox_l.end(), ox);
  std::copy(ys_l.begin(), ys_l.end(), ys);
  std::copy(oy_l.begin(), oy_l.end(), oy);
  for (int y = 0; y < NY; ++y) std::fill(oy[y], oy[y] + cols, T(0));
  // Per row block, the update and the products as two instantiations (one with NU = 0, one with
  // NX = NY = 0): GCC 12 compiled some mixed ones (NU = 1 with NX = 2, NU = 2 with NX = NY = 1) to
  // code 8× slower than the two halves together, even with the update in its own loop.
  auto block = [&](auto rr, Index r) {
    constexpr int R = decltype(rr)::value;
    const T* uo[NU ? NU : 1];
    const T* yo[NY ? NY : 1];
    T* xo[NX ? NX : 1];
    for (int u = 0; u < NU; ++u) uo[u] = ua[u] + r;
    for (int y = 0; y < NY; ++y) yo[y] = ys[y] + r;
    for (int x = 0; x < NX; ++x) xo[x] = ox[x] + r;
    if (NX || NY) sweep_block<R, 0, NX, NY>(m + r, rows, cols, uo, ub, xs, xo, yo, oy);
    if (NU) sweep_block<R, NU, 0, 0>(m + r, rows, cols, uo, ub, xs, xo, yo, oy);
  };
  Index r = 0;
  for (; r + 64 <= rows; r += 64) block(std::integral_constant<int, 64>{}, r);
  if (r + 32 <= rows) block(std::integral_constant<int, 32>{}, r), r += 32;
  if (r + 16 <= rows) block(std::integral_constant<int, 16>{}, r), r += 16;
  if (r + 8 <= rows) block(std::integral_constant<int, 8>{}, r), r += 8;
  for (; r < rows; ++r) block(std::integral_constant<int, 1>{}, r);
}

/// aᵀb, vectorised by Eigen (a plain loop's reduction cannot be reordered without -ffast-math).
template <class T>
inline T dot(const T* a, const T* b, Index n) {
  using V = Eigen::Matrix<T, Eigen::Dynamic, 1>;
  return Eigen::Map<const V>(a, n).dot(Eigen::Map<const V>(b, n));
}

/// The delta-rule write shared by VLA and DeltaNet (docs/maths.md §4: the same S algebra, erase key k̂,
/// write direction d): with sk = S k̂ and sq = S q already computed in one dual pass,
///   e = β (v − S k̂);  S ← S + e dᵀ;  returns S_new q = S q + e (dᵀq) in sq.
/// `e` is scratch of size dv.
template <class T>
inline void delta_write(T* __restrict s, Index dv, Index dk, const T* __restrict v, const T* __restrict d,
                        const T* __restrict q, T beta, const T* __restrict sk, T* __restrict sq, T* __restrict e) {
  for (Index i = 0; i < dv; ++i) e[i] = beta * (v[i] - sk[i]);
  rank1_update(s, dv, dk, e, d);
  const T dq = dot(d, q, dk);
  for (Index i = 0; i < dv; ++i) sq[i] += e[i] * dq;
}

}  // namespace detail
}  // namespace vla
