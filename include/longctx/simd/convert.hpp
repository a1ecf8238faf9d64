// Conversion loads and stores between K/V storage types and vec<float, Arch>
// (DESIGN.md section 2): float_io<T, Arch>::load(p) / load_partial(p, n)
// read W (or the first n) values of T as one float vector, the rest 0;
// store(p, x) / store_partial(p, x, n) round the lanes to T. Native where
// the ISA has it:
//   bf16  a 16-bit widen and a shift left by 16 (load); integer round to
//         nearest even (store) on AVX2, AVX-512 and NEON (not AVX512_BF16's
//         vcvtneps2bf16, which flushes subnormals);
//   f16   F16C vcvtph2ps / vcvtps2ph on x86 (AVX-512 with 16 lanes), NEON
//         fcvtl / fcvtn; the exact scalar path without F16C;
//   q8    the integers only (the row scale is the caller's): loads
//         sign-extend and convert (vpmovsxbd + vcvtdq2ps on x86, sxtl +
//         scvtf on NEON); stores take lanes already rounded to integers in
//         [-127, 127] and narrow them (vcvtps2dq + packs / vpmovsdb, fcvtns
//         + sqxtn);
// and the scalar path (tensor/storage_types.hpp) everywhere else. Every
// path gives the scalar conversions' bits (tests/simd/convert.cpp checks all
// 65,536 patterns per type and backend).
#pragma once

#include <cstdint>
#include <cstring>

#include "../tensor/storage_types.hpp"
#include "vec.hpp"

LONGCTX_NAMESPACE_BEGIN

// Any storage type T with T::from_float and to_float, any backend: through
// a float buffer of one vector (the scalar backend's path, and the
// fallback).
template <class T, arch_tag Arch>
struct float_io {
  using V = vec<float, Arch>;
  static constexpr int W = V::width;
  static V load(const T* p) noexcept { return load_partial(p, W); }
  static V load_partial(const T* p, int n) noexcept {
    float b[W] = {};
    for (int i = 0; i < n; ++i) b[i] = p[i].to_float();
    return V::load(b);
  }
  static void store(T* p, V x) noexcept { store_partial(p, x, W); }
  static void store_partial(T* p, V x, int n) noexcept {
    float b[W];
    x.store(b);
    for (int i = 0; i < n; ++i) p[i] = T::from_float(b[i]);
  }
};

template <arch_tag Arch>
struct float_io<float, Arch> {
  using V = vec<float, Arch>;
  static V load(const float* p) noexcept { return V::load(p); }
  static V load_partial(const float* p, int n) noexcept { return V::load_partial(p, n); }
  static void store(float* p, V x) noexcept { x.store(p); }
  static void store_partial(float* p, V x, int n) noexcept { x.store_partial(p, n); }
};

// q8: the integer values (the row scale is the caller's: kernels/kv_storage.hpp,
// which quantises a row as a whole). Stores take lanes that already hold
// integers in [-127, 127].
template <arch_tag Arch>
struct float_io<q8, Arch> {
  using V = vec<float, Arch>;
  static constexpr int W = V::width;
  static V load(const q8* p) noexcept { return load_partial(p, W); }
  static V load_partial(const q8* p, int n) noexcept {
    float b[W] = {};
    for (int i = 0; i < n; ++i) b[i] = float(p[i].v);
    return V::load(b);
  }
  static void store(q8* p, V x) noexcept { store_partial(p, x, W); }
  static void store_partial(q8* p, V x, int n) noexcept {
    float b[W];
    x.store(b);
    for (int i = 0; i < n; ++i) p[i].v = std::int8_t(b[i]);
  }
};

namespace detail {
// load_partial / store_partial through a stack copy of one vector, for
// backends without masked 16-bit loads: IO provides load and store.
template <class IO, class T, class V, int W>
struct partial_by_copy {
  static V load_partial(const T* p, int n) noexcept {
    T b[W] = {};
    std::memcpy(static_cast<void*>(b), p, sizeof(T) * std::size_t(n));
    return IO::load(b);
  }
  static void store_partial(T* p, V x, int n) noexcept {
    T b[W];
    IO::store(b, x);
    std::memcpy(static_cast<void*>(p), b, sizeof(T) * std::size_t(n));
  }
};
}  // namespace detail

#if LONGCTX_HAS_AVX2
namespace detail {
// Round-to-nearest-even of 8 floats (as int32 bits) to bf16 bits in the low
// halves: u + 0x7fff + lsb, then >> 16; NaNs quieted.
inline __m256i bf16_round_avx2(__m256 x) noexcept {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                         _mm256_set1_epi32(0x7f800000));
  const __m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(r, q, nan);
}
// 8 int32 lanes (each < 2^16) to 8 uint16.
inline __m128i narrow_u16_avx2(__m256i r) noexcept {
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08));
}
}  // namespace detail

template <>
struct float_io<bf16, avx2> : detail::partial_by_copy<float_io<bf16, avx2>, bf16, vec<float, avx2>, 8> {
  using V = vec<float, avx2>;
  static V load(const bf16* p) noexcept {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return {_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))};
  }
  static void store(bf16* p, V x) noexcept {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), detail::narrow_u16_avx2(detail::bf16_round_avx2(x.v)));
  }
};

#if LONGCTX_HAS_F16C
template <>
struct float_io<f16, avx2> : detail::partial_by_copy<float_io<f16, avx2>, f16, vec<float, avx2>, 8> {
  using V = vec<float, avx2>;
  static V load(const f16* p) noexcept { return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))}; }
  static void store(f16* p, V x) noexcept {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
};
#endif

template <>
struct float_io<q8, avx2> {
  using V = vec<float, avx2>;
  static V load(const q8* p) noexcept {
    return {_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))))};
  }
  static V load_partial(const q8* p, int n) noexcept {
    q8 b[8] = {};
    std::memcpy(static_cast<void*>(b), p, std::size_t(n));
    return load(b);
  }
  static __m128i narrow(V x) noexcept {  // 8 int8 in the low 8 bytes
    const __m256i i = _mm256_cvtps_epi32(x.v);
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    return _mm_packs_epi16(w, w);
  }
  static void store(q8* p, V x) noexcept { _mm_storel_epi64(reinterpret_cast<__m128i*>(p), narrow(x)); }
  static void store_partial(q8* p, V x, int n) noexcept {
    alignas(16) q8 b[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(b), narrow(x));
    std::memcpy(static_cast<void*>(p), b, std::size_t(n));
  }
};
#endif  // LONGCTX_HAS_AVX2

#if LONGCTX_HAS_AVX512
template <>
struct float_io<bf16, avx512> {
  using V = vec<float, avx512>;
  static V widen(__m256i h) noexcept { return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))}; }
  static V load(const bf16* p) noexcept { return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static V load_partial(const bf16* p, int n) noexcept { return widen(_mm256_maskz_loadu_epi16(V::lane_mask(n), p)); }
  static __m256i narrow(V x) noexcept {
    const __m512i u = _mm512_castps_si512(x.v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
    const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                  _mm512_set1_epi32(0x7f800000));
    const __m512i q = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, r, q));
  }
  static void store(bf16* p, V x) noexcept { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), narrow(x)); }
  static void store_partial(bf16* p, V x, int n) noexcept { _mm256_mask_storeu_epi16(p, V::lane_mask(n), narrow(x)); }
};

template <>
struct float_io<f16, avx512> {
  using V = vec<float, avx512>;
  static V load(const f16* p) noexcept { return {_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))}; }
  static V load_partial(const f16* p, int n) noexcept {
    return {_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(V::lane_mask(n), p))};
  }
  static __m256i narrow(V x) noexcept { return _mm512_cvtps_ph(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static void store(f16* p, V x) noexcept { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), narrow(x)); }
  static void store_partial(f16* p, V x, int n) noexcept { _mm256_mask_storeu_epi16(p, V::lane_mask(n), narrow(x)); }
};
template <>
struct float_io<q8, avx512> {
  using V = vec<float, avx512>;
  static V load(const q8* p) noexcept {
    return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))))};
  }
  static V load_partial(const q8* p, int n) noexcept {
    return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(V::lane_mask(n), p)))};
  }
  static void store(q8* p, V x) noexcept {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(x.v)));
  }
  static void store_partial(q8* p, V x, int n) noexcept {
    _mm512_mask_cvtsepi32_storeu_epi8(p, V::lane_mask(n), _mm512_cvtps_epi32(x.v));
  }
};
#endif  // LONGCTX_HAS_AVX512

#if LONGCTX_HAS_NEON
template <>
struct float_io<bf16, neon> : detail::partial_by_copy<float_io<bf16, neon>, bf16, vec<float, neon>, 4> {
  using V = vec<float, neon>;
  static V load(const bf16* p) noexcept {
    return {vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(reinterpret_cast<const std::uint16_t*>(p)), 16))};
  }
  static void store(bf16* p, V x) noexcept {
    const uint32x4_t u = vreinterpretq_u32_f32(x.v);
    const uint32x4_t lsb = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
    const uint32x4_t r = vshrq_n_u32(vaddq_u32(vaddq_u32(u, vdupq_n_u32(0x7fff)), lsb), 16);
    const uint32x4_t nan = vcgtq_u32(vandq_u32(u, vdupq_n_u32(0x7fffffff)), vdupq_n_u32(0x7f800000));
    const uint32x4_t q = vorrq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(0x40));
    vst1_u16(reinterpret_cast<std::uint16_t*>(p), vmovn_u32(vbslq_u32(nan, q, r)));
  }
};

template <>
struct float_io<f16, neon> : detail::partial_by_copy<float_io<f16, neon>, f16, vec<float, neon>, 4> {
  using V = vec<float, neon>;
  static V load(const f16* p) noexcept {
    return {vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const std::uint16_t*>(p))))};
  }
  static void store(f16* p, V x) noexcept {
    vst1_u16(reinterpret_cast<std::uint16_t*>(p), vreinterpret_u16_f16(vcvt_f16_f32(x.v)));
  }
};

template <>
struct float_io<q8, neon> {
  using V = vec<float, neon>;
  static V load(const q8* p) noexcept {
    std::int8_t b[8] = {};
    std::memcpy(b, p, 4);
    return {vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(vld1_s8(b)))))};
  }
  static V load_partial(const q8* p, int n) noexcept {
    std::int8_t b[8] = {};
    std::memcpy(b, p, std::size_t(n));
    return {vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(vld1_s8(b)))))};
  }
  static void store(q8* p, V x) noexcept { store_partial(p, x, 4); }
  static void store_partial(q8* p, V x, int n) noexcept {
    const int16x4_t w = vqmovn_s32(vcvtnq_s32_f32(x.v));
    std::int8_t b[8];
    vst1_s8(b, vqmovn_s16(vcombine_s16(w, w)));
    std::memcpy(static_cast<void*>(p), b, std::size_t(n));
  }
};
#endif  // LONGCTX_HAS_NEON

// n values of T (any storage type) to floats and back, vector by vector.
template <arch_tag Arch, class T>
inline void to_float_row(const T* src, float* dst, std::ptrdiff_t n) noexcept {
  using IO = float_io<T, Arch>;
  constexpr std::ptrdiff_t W = Arch::width;
  std::ptrdiff_t i = 0;
  for (; i + W <= n; i += W) IO::load(src + i).store(dst + i);
  if (i < n) IO::load_partial(src + i, int(n - i)).store_partial(dst + i, int(n - i));
}
template <arch_tag Arch, class T>
inline void from_float_row(const float* src, T* dst, std::ptrdiff_t n) noexcept {
  using V = vec<float, Arch>;
  using IO = float_io<T, Arch>;
  constexpr std::ptrdiff_t W = Arch::width;
  std::ptrdiff_t i = 0;
  for (; i + W <= n; i += W) IO::store(dst + i, V::load(src + i));
  if (i < n) IO::store_partial(dst + i, V::load_partial(src + i, int(n - i)), int(n - i));
}

LONGCTX_NAMESPACE_END
