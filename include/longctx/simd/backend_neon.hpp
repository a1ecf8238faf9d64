// NEON (aarch64) backend: 4 floats per float32x4_t; tails through a stack copy
// since NEON has no masked loads.
#pragma once

#include <arm_neon.h>

#include "vec.hpp"

LONGCTX_NAMESPACE_BEGIN

template <>
struct vec<float, neon> {
  using arch_type = neon;
  using value_type = float;
  using mask_type = uint32x4_t;
  static constexpr int width = 4;
  float32x4_t v;

  static vec load(const float* p) noexcept { return {vld1q_f32(p)}; }
  static vec load_partial(const float* p, int n) noexcept {
    float tmp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = 0; i < n; ++i) tmp[i] = p[i];
    return {vld1q_f32(tmp)};
  }
  void store(float* p) const noexcept { vst1q_f32(p, v); }
  void store_partial(float* p, int n) const noexcept {
    float tmp[4];
    vst1q_f32(tmp, v);
    for (int i = 0; i < n; ++i) p[i] = tmp[i];
  }
  static vec broadcast(float x) noexcept { return {vdupq_n_f32(x)}; }
  static vec zero() noexcept { return {vdupq_n_f32(0.0f)}; }

  friend vec operator+(vec a, vec b) noexcept { return {vaddq_f32(a.v, b.v)}; }
  friend vec operator-(vec a, vec b) noexcept { return {vsubq_f32(a.v, b.v)}; }
  friend vec operator*(vec a, vec b) noexcept { return {vmulq_f32(a.v, b.v)}; }
  friend vec operator/(vec a, vec b) noexcept { return {vdivq_f32(a.v, b.v)}; }
  friend vec operator-(vec a) noexcept { return {vnegq_f32(a.v)}; }
  friend vec fma(vec a, vec b, vec c) noexcept { return {vfmaq_f32(c.v, a.v, b.v)}; }
  friend vec fnma(vec a, vec b, vec c) noexcept { return {vfmsq_f32(c.v, a.v, b.v)}; }
  // NEON fmax/fmin return NaN when either lane is NaN: NaN still propagates.
  friend vec max(vec a, vec b) noexcept { return {vmaxq_f32(a.v, b.v)}; }
  friend vec min(vec a, vec b) noexcept { return {vminq_f32(a.v, b.v)}; }
  friend float reduce_add(vec a) noexcept { return vaddvq_f32(a.v); }
  friend float reduce_max(vec a) noexcept { return vmaxvq_f32(a.v); }
  friend vec round_nearest(vec a) noexcept { return {vrndnq_f32(a.v)}; }
  friend vec round_down(vec a) noexcept { return {vrndmq_f32(a.v)}; }
  friend vec pow2i(vec n) noexcept {
    const int32x4_t e = vaddq_s32(vcvtq_s32_f32(n.v), vdupq_n_s32(127));
    return {vreinterpretq_f32_s32(vshlq_n_s32(e, 23))};
  }
  friend mask_type cmp_lt(vec a, vec b) noexcept { return vcltq_f32(a.v, b.v); }
  friend vec select(mask_type m, vec a, vec b) noexcept { return {vbslq_f32(m, a.v, b.v)}; }
};

LONGCTX_NAMESPACE_END
