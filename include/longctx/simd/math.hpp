// Vectorised math written once against vec<float, Arch>.
//
// exp: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial
// (Cephes expf coefficients), then 2^n applied as 2^n1 * 2^n2 so results in the
// subnormal range round once, correctly. Accuracy, measured against double by
// tests/simd/math.cpp over [-104, 88.7] for every backend: at most 2 ulp for
// normal results (x >= -87.33); for subnormal results the absolute error is at
// most one subnormal ulp (1.4e-45). exp(x) is exactly +0 for x <= -104 and -inf,
// +inf for x >= 88.73 and +inf, NaN for NaN.
#pragma once

#include "vec.hpp"

LONGCTX_NAMESPACE_BEGIN

template <arch_tag Arch>
inline vec<float, Arch> exp(vec<float, Arch> x) noexcept {
  using V = vec<float, Arch>;
  // Below -104 the result rounds to 0; above 88.8 to +inf. max/min take the
  // input second so a NaN propagates (see the vec contract).
  x = min(V::broadcast(88.8f), max(V::broadcast(-104.0f), x));
  const V n = round_nearest(x * V::broadcast(1.44269504088896341f));
  V r = fnma(n, V::broadcast(0.693359375f), x);  // ln2 split: exact hi part
  r = fnma(n, V::broadcast(-2.12194440e-4f), r);
  V p = V::broadcast(1.9875691500e-4f);
  p = fma(p, r, V::broadcast(1.3981999507e-3f));
  p = fma(p, r, V::broadcast(8.3334519073e-3f));
  p = fma(p, r, V::broadcast(4.1665795894e-2f));
  p = fma(p, r, V::broadcast(1.6666665459e-1f));
  p = fma(p, r, V::broadcast(5.0000001201e-1f));
  p = fma(p * r, r, r + V::broadcast(1.0f));
  // n is in [-150, 128]; each half is in [-75, 64], so both powers are normal.
  const V n1 = round_nearest(n * V::broadcast(0.5f));
  return p * pow2i(n1) * pow2i(n - n1);
}

// exp2_weight: 2^x for softmax weights (x = (logit - max) log2 e <= 0), the
// cheaper base-2 form of exp: no Cody-Waite split (log2 e is one multiply
// before the call), one power of two. n = floor(x), so r = x - n is in [0, 1]
// (1 only where x - n rounds up, x just below an integer) and 2^r in [1, 2]
// (degree-6 polynomial, c0 = 1 exactly so 2^0 = 1:
// the row's largest key weighs exactly 1; fitted to 2e-9 relative in double,
// at most 2 ulp in float, tests/simd/math.cpp); x is clamped at -126.5, so
// n >= -127 and the result is 0 (n = -127, pow2i gives +0) or a normal float
// >= 2^-126: no subnormal weight ever reaches the sums or the P V product
// (the largest weight of a row is 1, so a dropped one is below 2^-126 of
// it). x > 0 is outside the domain and clamped to 0 (weight 1): softmax_block
// only passes one when a NaN logit hid from the row max, and that row's sum
// is NaN anyway, but an unclamped +inf or 1e28 would reach pow2i's
// float-to-int conversion (undefined in C++, UBSan's float-cast-overflow in
// the scalar backend). NaN propagates. floor, not round(x - 1/2): one
// vector operation fewer; the exponent is most of the softmax's work, which
// on Intel's AVX-512 cores shares the two vector ports with the FMAs.
template <arch_tag Arch>
inline vec<float, Arch> exp2_weight(vec<float, Arch> x) noexcept {
  using V = vec<float, Arch>;
  x = min(V::zero(), max(V::broadcast(-126.5f), x));
  const V n = round_down(x);
  const V r = x - n;
  V p = V::broadcast(2.161291486e-4f);
  p = fma(p, r, V::broadcast(1.246784581e-3f));
  p = fma(p, r, V::broadcast(9.675451554e-3f));
  p = fma(p, r, V::broadcast(5.548528209e-2f));
  p = fma(p, r, V::broadcast(2.402293086e-1f));
  p = fma(p, r, V::broadcast(6.931470633e-1f));
  p = fma(p, r, V::broadcast(1.0f));
  return p * pow2i(n);
}

// Scalar convenience with the same numerics as the vector path.
inline float exp_scalar(float x) noexcept { return exp(vec<float, scalar>::broadcast(x)).v; }

LONGCTX_NAMESPACE_END
