// Scalar backend: width 1, always compiled; the reference path for the others.
#pragma once

#include <cmath>
#include <cstring>

#include "vec.hpp"

LONGCTX_NAMESPACE_BEGIN

template <>
struct vec<float, scalar> {
  using arch_type = scalar;
  using value_type = float;
  using mask_type = bool;
  static constexpr int width = 1;
  float v;

  static vec load(const float* p) noexcept { return {*p}; }
  static vec load_partial(const float* p, int n) noexcept { return {n > 0 ? *p : 0.0f}; }
  void store(float* p) const noexcept { *p = v; }
  void store_partial(float* p, int n) const noexcept {
    if (n > 0) *p = v;
  }
  static vec broadcast(float x) noexcept { return {x}; }
  static vec zero() noexcept { return {0.0f}; }

  friend vec operator+(vec a, vec b) noexcept { return {a.v + b.v}; }
  friend vec operator-(vec a, vec b) noexcept { return {a.v - b.v}; }
  friend vec operator*(vec a, vec b) noexcept { return {a.v * b.v}; }
  friend vec operator/(vec a, vec b) noexcept { return {a.v / b.v}; }
  friend vec operator-(vec a) noexcept { return {-a.v}; }
  // std::fma is a library call without hardware FMA; the scalar path is the
  // reference, so it must fuse exactly like the SIMD backends do.
  friend vec fma(vec a, vec b, vec c) noexcept { return {std::fma(a.v, b.v, c.v)}; }
  friend vec fnma(vec a, vec b, vec c) noexcept { return {std::fma(-a.v, b.v, c.v)}; }
  friend vec max(vec a, vec b) noexcept { return {a.v > b.v ? a.v : b.v}; }
  friend vec min(vec a, vec b) noexcept { return {a.v < b.v ? a.v : b.v}; }
  friend float reduce_add(vec a) noexcept { return a.v; }
  friend float reduce_max(vec a) noexcept { return a.v; }
  friend vec round_nearest(vec a) noexcept { return {std::nearbyint(a.v)}; }
  friend vec round_down(vec a) noexcept { return {std::floor(a.v)}; }
  // n integral in [-126, 127]; NaN (exp's reduction of a NaN input, whose
  // polynomial is NaN anyway) gives 1, not an undefined float-to-int cast.
  friend vec pow2i(vec n) noexcept {
    const auto bits = static_cast<unsigned>(static_cast<int>(n.v == n.v ? n.v : 0.0f) + 127) << 23;
    float r;
    std::memcpy(&r, &bits, sizeof r);
    return {r};
  }
  friend mask_type cmp_lt(vec a, vec b) noexcept { return a.v < b.v; }
  friend vec select(mask_type m, vec a, vec b) noexcept { return {m ? a.v : b.v}; }
};

LONGCTX_NAMESPACE_END
