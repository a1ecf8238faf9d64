// AVX2 + FMA backend: 8 floats per __m256.
#pragma once

#include <immintrin.h>

#include "vec.hpp"

LONGCTX_NAMESPACE_BEGIN

template <>
struct vec<float, avx2> {
  using arch_type = avx2;
  using value_type = float;
  using mask_type = __m256;
  static constexpr int width = 8;
  __m256 v;

  static vec load(const float* p) noexcept { return {_mm256_loadu_ps(p)}; }
  static __m256i lane_mask(int n) noexcept {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static vec load_partial(const float* p, int n) noexcept {
    return {_mm256_maskload_ps(p, lane_mask(n))};
  }
  void store(float* p) const noexcept { _mm256_storeu_ps(p, v); }
  void store_partial(float* p, int n) const noexcept { _mm256_maskstore_ps(p, lane_mask(n), v); }
  static vec broadcast(float x) noexcept { return {_mm256_set1_ps(x)}; }
  static vec zero() noexcept { return {_mm256_setzero_ps()}; }

  friend vec operator+(vec a, vec b) noexcept { return {_mm256_add_ps(a.v, b.v)}; }
  friend vec operator-(vec a, vec b) noexcept { return {_mm256_sub_ps(a.v, b.v)}; }
  friend vec operator*(vec a, vec b) noexcept { return {_mm256_mul_ps(a.v, b.v)}; }
  friend vec operator/(vec a, vec b) noexcept { return {_mm256_div_ps(a.v, b.v)}; }
  friend vec operator-(vec a) noexcept { return {_mm256_xor_ps(a.v, _mm256_set1_ps(-0.0f))}; }
  friend vec fma(vec a, vec b, vec c) noexcept { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
  friend vec fnma(vec a, vec b, vec c) noexcept { return {_mm256_fnmadd_ps(a.v, b.v, c.v)}; }
  friend vec max(vec a, vec b) noexcept { return {_mm256_max_ps(a.v, b.v)}; }
  friend vec min(vec a, vec b) noexcept { return {_mm256_min_ps(a.v, b.v)}; }
  friend float reduce_add(vec a) noexcept {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  friend float reduce_max(vec a) noexcept {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  friend vec round_nearest(vec a) noexcept {
    return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
  }
  friend vec round_down(vec a) noexcept {
    return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)};
  }
  friend vec pow2i(vec n) noexcept {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127));
    return {_mm256_castsi256_ps(_mm256_slli_epi32(e, 23))};
  }
  friend mask_type cmp_lt(vec a, vec b) noexcept { return _mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ); }
  friend vec select(mask_type m, vec a, vec b) noexcept { return {_mm256_blendv_ps(b.v, a.v, m)}; }
};

LONGCTX_NAMESPACE_END
