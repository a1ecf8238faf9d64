// BLAS-1 over contiguous float arrays, written once against vec<float, Arch>:
// dot, axpy, scale, sum, max. Four independent accumulators hide FMA latency;
// tails use partial loads, so any n >= 0 works and nothing is read past n.
#pragma once

#include <cstddef>
#include <limits>

#include "convert.hpp"
#include "vec.hpp"

LONGCTX_NAMESPACE_BEGIN

// sum_i a[i] * b[i]; b may be any storage type (converted in registers).
template <arch_tag Arch = default_arch, class TB = float>
inline float dot(const float* a, const TB* b, std::ptrdiff_t n) noexcept {
  using V = vec<float, Arch>;
  using B = float_io<TB, Arch>;
  constexpr std::ptrdiff_t W = V::width;
  V s0 = V::zero(), s1 = V::zero(), s2 = V::zero(), s3 = V::zero();
  // Bounds precomputed (not i + W <= n): GCC 12 otherwise warns of a bogus
  // overflow when n is a known constant.
  const std::ptrdiff_t n4 = n / (4 * W) * (4 * W), n1 = n / W * W;
  std::ptrdiff_t i = 0;
  for (; i < n4; i += 4 * W) {
    s0 = fma(V::load(a + i), B::load(b + i), s0);
    s1 = fma(V::load(a + i + W), B::load(b + i + W), s1);
    s2 = fma(V::load(a + i + 2 * W), B::load(b + i + 2 * W), s2);
    s3 = fma(V::load(a + i + 3 * W), B::load(b + i + 3 * W), s3);
  }
  for (; i < n1; i += W) s0 = fma(V::load(a + i), B::load(b + i), s0);
  if (i < n) {
    const int t = static_cast<int>(n - i);
    s1 = fma(V::load_partial(a + i, t), B::load_partial(b + i, t), s1);
  }
  return reduce_add((s0 + s1) + (s2 + s3));
}

// Hints the cache lines of x[0, n) into cache ahead of use (a no-op where the
// compiler has no prefetch builtin). Decode uses it to keep more DRAM reads
// in flight than the hardware prefetcher starts on its own.
template <class T>
inline void prefetch(const T* x, std::ptrdiff_t n) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  constexpr std::ptrdiff_t line = 64 / sizeof(T);
  for (std::ptrdiff_t i = 0; i < n; i += line) __builtin_prefetch(x + i);
#else
  static_cast<void>(x);
  static_cast<void>(n);
#endif
}

// out[r] = sum_i a[i] * b[r * ldb + i] for r in [0, R): R dots against one
// vector, sharing its loads (decode's Q K^T; b's rows in any storage type,
// converted in registers). Two accumulators per row keep 2R FMA chains in
// flight.
template <int R, arch_tag Arch = default_arch, class TB = float>
inline void dot_rows(const float* a, const TB* b, std::ptrdiff_t ldb, std::ptrdiff_t n, float* out) noexcept {
  using V = vec<float, Arch>;
  using B = float_io<TB, Arch>;
  constexpr std::ptrdiff_t W = V::width;
  V s0[R], s1[R];
  LONGCTX_UNROLL for (int r = 0; r < R; ++r) s0[r] = s1[r] = V::zero();
  const std::ptrdiff_t n2 = n / (2 * W) * (2 * W), n1 = n / W * W;
  std::ptrdiff_t i = 0;
  for (; i < n2; i += 2 * W) {
    const V x0 = V::load(a + i), x1 = V::load(a + i + W);
    LONGCTX_UNROLL for (int r = 0; r < R; ++r) {
      s0[r] = fma(x0, B::load(b + r * ldb + i), s0[r]);
      s1[r] = fma(x1, B::load(b + r * ldb + i + W), s1[r]);
    }
  }
  if (i < n1) {
    const V x0 = V::load(a + i);
    LONGCTX_UNROLL for (int r = 0; r < R; ++r) s0[r] = fma(x0, B::load(b + r * ldb + i), s0[r]);
    i += W;
  }
  if (i < n) {
    const int t = static_cast<int>(n - i);
    const V x1 = V::load_partial(a + i, t);
    LONGCTX_UNROLL for (int r = 0; r < R; ++r) s1[r] = fma(x1, B::load_partial(b + r * ldb + i, t), s1[r]);
  }
  LONGCTX_UNROLL for (int r = 0; r < R; ++r) out[r] = reduce_add(s0[r] + s1[r]);
}

// y[i] += alpha * x[i]
template <arch_tag Arch = default_arch>
inline void axpy(float alpha, const float* x, float* y, std::ptrdiff_t n) noexcept {
  using V = vec<float, Arch>;
  constexpr std::ptrdiff_t W = V::width;
  const V a = V::broadcast(alpha);
  const std::ptrdiff_t n1 = n / W * W;
  std::ptrdiff_t i = 0;
  for (; i < n1; i += W) fma(a, V::load(x + i), V::load(y + i)).store(y + i);
  if (i < n) {
    const int t = static_cast<int>(n - i);
    fma(a, V::load_partial(x + i, t), V::load_partial(y + i, t)).store_partial(y + i, t);
  }
}

// x[i] *= alpha
template <arch_tag Arch = default_arch>
inline void scale(float alpha, float* x, std::ptrdiff_t n) noexcept {
  using V = vec<float, Arch>;
  constexpr std::ptrdiff_t W = V::width;
  const V a = V::broadcast(alpha);
  const std::ptrdiff_t n1 = n / W * W;
  std::ptrdiff_t i = 0;
  for (; i < n1; i += W) (a * V::load(x + i)).store(x + i);
  if (i < n) {
    const int t = static_cast<int>(n - i);
    (a * V::load_partial(x + i, t)).store_partial(x + i, t);
  }
}

// sum_i x[i]
template <arch_tag Arch = default_arch>
inline float sum(const float* x, std::ptrdiff_t n) noexcept {
  using V = vec<float, Arch>;
  constexpr std::ptrdiff_t W = V::width;
  V s0 = V::zero(), s1 = V::zero();
  const std::ptrdiff_t n2 = n / (2 * W) * (2 * W), n1 = n / W * W;
  std::ptrdiff_t i = 0;
  for (; i < n2; i += 2 * W) {
    s0 = s0 + V::load(x + i);
    s1 = s1 + V::load(x + i + W);
  }
  for (; i < n1; i += W) s0 = s0 + V::load(x + i);
  if (i < n) s1 = s1 + V::load_partial(x + i, static_cast<int>(n - i));
  return reduce_add(s0 + s1);
}

// max_i x[i]; -inf for n == 0. Whether a NaN element is returned depends on
// the backend (x86 max keeps one operand): softmax does not rely on it, since
// a NaN logit makes its exp, and so the row sum, NaN anyway.
template <arch_tag Arch = default_arch>
inline float max_value(const float* x, std::ptrdiff_t n) noexcept {
  using V = vec<float, Arch>;
  constexpr std::ptrdiff_t W = V::width;
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  V m = V::broadcast(ninf);
  const std::ptrdiff_t n1 = n / W * W;
  std::ptrdiff_t i = 0;
  for (; i < n1; i += W) m = max(m, V::load(x + i));
  float r = reduce_max(m);
  for (; i < n; ++i) r = r > x[i] ? r : x[i];
  return r;
}

LONGCTX_NAMESPACE_END
