// AVX-512 (F/BW/DQ/VL) backend: 16 floats per __m512, tails by mask registers.
#pragma once

#include <immintrin.h>

#include "vec.hpp"

LONGCTX_NAMESPACE_BEGIN

template <>
struct vec<float, avx512> {
  using arch_type = avx512;
  using value_type = float;
  using mask_type = __mmask16;
  static constexpr int width = 16;
  __m512 v;

  static vec load(const float* p) noexcept { return {_mm512_loadu_ps(p)}; }
  static __mmask16 lane_mask(int n) noexcept {
    return static_cast<__mmask16>((1u << static_cast<unsigned>(n)) - 1u);
  }
  static vec load_partial(const float* p, int n) noexcept {
    return {_mm512_maskz_loadu_ps(lane_mask(n), p)};
  }
  void store(float* p) const noexcept { _mm512_storeu_ps(p, v); }
  void store_partial(float* p, int n) const noexcept { _mm512_mask_storeu_ps(p, lane_mask(n), v); }
  static vec broadcast(float x) noexcept { return {_mm512_set1_ps(x)}; }
  static vec zero() noexcept { return {_mm512_setzero_ps()}; }

  friend vec operator+(vec a, vec b) noexcept { return {_mm512_add_ps(a.v, b.v)}; }
  friend vec operator-(vec a, vec b) noexcept { return {_mm512_sub_ps(a.v, b.v)}; }
  friend vec operator*(vec a, vec b) noexcept { return {_mm512_mul_ps(a.v, b.v)}; }
  friend vec operator/(vec a, vec b) noexcept { return {_mm512_div_ps(a.v, b.v)}; }
  friend vec operator-(vec a) noexcept {
    return {_mm512_castsi512_ps(
        _mm512_xor_si512(_mm512_castps_si512(a.v), _mm512_set1_epi32(static_cast<int>(0x80000000u))))};
  }
  friend vec fma(vec a, vec b, vec c) noexcept { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
  friend vec fnma(vec a, vec b, vec c) noexcept { return {_mm512_fnmadd_ps(a.v, b.v, c.v)}; }
  friend vec max(vec a, vec b) noexcept { return {_mm512_max_ps(a.v, b.v)}; }
  friend vec min(vec a, vec b) noexcept { return {_mm512_min_ps(a.v, b.v)}; }
  friend float reduce_add(vec a) noexcept {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(a.v), _mm512_extractf32x8_ps(a.v, 1));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  friend float reduce_max(vec a) noexcept {
    __m256 h = _mm256_max_ps(_mm512_castps512_ps256(a.v), _mm512_extractf32x8_ps(a.v, 1));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  friend vec round_nearest(vec a) noexcept {
    return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
  }
  friend vec round_down(vec a) noexcept {
    return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)};
  }
  friend vec pow2i(vec n) noexcept {
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127));
    return {_mm512_castsi512_ps(_mm512_slli_epi32(e, 23))};
  }
  friend mask_type cmp_lt(vec a, vec b) noexcept { return _mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ); }
  friend vec select(mask_type m, vec a, vec b) noexcept { return {_mm512_mask_blend_ps(m, b.v, a.v)}; }
};

LONGCTX_NAMESPACE_END
