// K/V storage element types (PAPERS.md section 5): bf16 (bfloat16, 8
// exponent bits) and f16 (IEEE 754 binary16, 5 exponent bits), plain 2-byte
// values usable in user code and in views (tensor4_view<const bf16>); and
// q8, int8 with a per-row scale (below).
// Conversions: to float exact; from float round to nearest, ties to even,
// f16 with its subnormals (no flush to zero) and overflow to infinity.
// NaNs stay NaN with their sign and the top payload bits; f16 loads and
// both stores set the quiet bit, as the hardware converters do (vcvtph2ps,
// vcvtps2ph, fcvt), while a bf16 load is a plain shift. Scalar and vector
// conversions (simd/convert.hpp) agree bit for bit.
#pragma once

#include <bit>
#include <cstdint>

#include "../config.hpp"

LONGCTX_TYPES_BEGIN

/// bfloat16: the top 16 bits of an IEEE float (8 exponent bits, 7
/// mantissa bits), a plain 2-byte value for K/V storage and user buffers.
/// No arithmetic; convert with from_float() / to_float(). == compares bits.
struct bf16 {
  std::uint16_t bits = 0;  ///< the raw bits

  /// \param b the raw bits
  /// \return the value with those bits
  LONGCTX_INLINE static constexpr bf16 from_bits(std::uint16_t b) noexcept { return bf16{b}; }
  /// Rounds to nearest, ties to even; values above about 3.396e38 round to
  /// infinity; a NaN stays NaN (quiet bit set, sign and top payload bits kept).
  /// \param x any float
  /// \return the nearest bf16
  LONGCTX_INLINE static constexpr bf16 from_float(float x) noexcept {
    const std::uint32_t u = std::bit_cast<std::uint32_t>(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{std::uint16_t((u >> 16) | 0x0040u)};
    return bf16{std::uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
  }
  /// \return the value as a float, exactly (a shift; NaN bits unchanged)
  LONGCTX_INLINE constexpr float to_float() const noexcept { return std::bit_cast<float>(std::uint32_t(bits) << 16); }
  /// \return to_float()
  LONGCTX_INLINE explicit constexpr operator float() const noexcept { return to_float(); }
  friend constexpr bool operator==(bf16, bf16) noexcept = default;  // bitwise
};

/// IEEE 754 binary16 (5 exponent bits, 10 mantissa bits, subnormals), a
/// plain 2-byte value for K/V storage and user buffers. No arithmetic;
/// convert with from_float() / to_float(). == compares bits.
struct f16 {
  std::uint16_t bits = 0;  ///< the raw bits

  /// \param b the raw bits
  /// \return the value with those bits
  LONGCTX_INLINE static constexpr f16 from_bits(std::uint16_t b) noexcept { return f16{b}; }
  /// Rounds to nearest, ties to even, with subnormals (no flush to zero);
  /// 65520 and above in magnitude become infinity; a NaN stays NaN (quiet
  /// bit set, sign and top payload bits kept).
  /// \param x any float
  /// \return the nearest f16
  LONGCTX_INLINE static constexpr f16 from_float(float x) noexcept {
    const std::uint32_t u = std::bit_cast<std::uint32_t>(x);
    const std::uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return f16{std::uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu))};  // NaN, quiet
    if (a >= 0x477ff000u) return f16{std::uint16_t(sign | 0x7c00u)};  // >= 65520 (and inf): inf
    if (a >= 0x38800000u) {  // normal: rebias the exponent by 127 - 15, round 13 mantissa bits
      const std::uint32_t r = a - 0x38000000u;
      return f16{std::uint16_t(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13))};
    }
    // Below 2^-14: in [0.5, 0.5 + 2^-14) the float ulp is 2^-24, the f16
    // subnormal step, so one float addition rounds (ties to even) exactly.
    const float s = std::bit_cast<float>(a) + 0.5f;
    return f16{std::uint16_t(sign | (std::bit_cast<std::uint32_t>(s) - 0x3f000000u))};
  }
  /// \return the value as a float, exactly (a NaN gets its quiet bit set)
  LONGCTX_INLINE constexpr float to_float() const noexcept {
    const std::uint32_t sign = std::uint32_t(bits & 0x8000u) << 16, e = (bits >> 10) & 0x1fu, m = bits & 0x3ffu;
    if (e == 0x1fu) return std::bit_cast<float>(sign | 0x7f800000u | ((m ? m | 0x200u : 0u) << 13));
    if (e != 0) return std::bit_cast<float>(sign | ((e + 112u) << 23) | (m << 13));
    const float sub = float(m) * std::bit_cast<float>(0x33800000u);  // m 2^-24, exact
    return std::bit_cast<float>(sign | std::bit_cast<std::uint32_t>(sub));
  }
  /// \return to_float()
  LONGCTX_INLINE explicit constexpr operator float() const noexcept { return to_float(); }
  friend constexpr bool operator==(f16, f16) noexcept = default;  // bitwise
};

/// Symmetric int8 with one fp32 scale per row (per token and KV head):
/// value = v * scale, scale = max|x| / 127 over the row, v = round(x / scale)
/// (ties to even) in [-127, 127]. A row of d values is stored as 4 bytes of
/// scale followed by the d int8 values, and a view of q8 points at the
/// values: the row's scale sits in the 4 bytes before its first value (so a
/// (b, h, n, d) view has a row stride of at least d + 4). q8 rows are made by
/// kv_storage_traits<q8>::store_row (kernels/kv_storage.hpp) or stored_rows;
/// a row with a non-finite value gets a NaN scale and reads as NaN.
struct q8 {
  std::int8_t v = 0;  ///< the integer, in [-127, 127]
  friend constexpr bool operator==(q8, q8) noexcept = default;
};

LONGCTX_TYPES_END
