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

// Scalar convenience with the same numerics as the vector path.
inline float exp_scalar(float x) noexcept { return exp(vec<float, scalar>::broadcast(x)).v; }

LONGCTX_NAMESPACE_END
