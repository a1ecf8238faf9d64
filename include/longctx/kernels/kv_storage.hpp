// K/V storage element types as the kernels see them: float, bf16, f16 and
// q8 (tensor/storage_types.hpp). Kernels read K and V only through these
// traits and simd/convert.hpp's float_io, never by testing the type:
//   name              short name (benchmark labels, snapshot kinds);
//   to_float(x)       exact widening of one element (q8: the integer, unscaled);
//   row_prefix        elements stored before each row (q8: its 4-byte scale);
//   row_scale(row)    the factor of a row's elements (1 but for q8), read
//                     from the prefix of the row whose first value is `row`;
//   store_row<Arch>(x, row, n) / load_row<Arch>(row, x, n): one row of n
//                     floats to storage (round to nearest even; q8 also
//                     writes the scale) and back (exact, times the scale);
//   gemm_operand      rows are already the micro-kernel's float operands, so
//                     prefill may read V in place instead of packing it;
//   row_valid(row, n) whether a row of n elements (with its prefix) is one
//                     store_row can write: how restore() checks untrusted
//                     rows (every float, bf16, f16 row is; q8: see there).
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstring>
#include <limits>
#include <vector>

#include "../config.hpp"
#include "../simd/convert.hpp"
#include "../tensor/extents.hpp"
#include "../tensor/storage_types.hpp"

LONGCTX_NAMESPACE_BEGIN

/// How the kernels read and write K/V rows of storage type `T`: name,
/// to_float, row_prefix, row_scale, store_row, load_row, gemm_operand,
/// row_valid (the header comment of kernels/kv_storage.hpp lists them).
/// Specialised for float, bf16, f16 and q8; specialise it for a new
/// storage type (the kv_storage concept says what it must provide).
template <class T>
struct kv_storage_traits;  // specialise for a new storage type

// Rows of elements converted one by one (float, bf16, f16): no prefix,
// scale 1.
template <class T>
struct kv_storage_elementwise {
  static constexpr index_t row_prefix = 0;
  static constexpr float row_scale(const T*) noexcept { return 1.0f; }
  static constexpr bool row_valid(const T*, index_t) noexcept { return true; }  // NaN included: user data
  template <arch_tag Arch>
  static void store_row(const float* x, T* row, index_t n) noexcept {
    from_float_row<Arch>(x, row, n);
  }
  template <arch_tag Arch>
  static void load_row(const T* row, float* x, index_t n) noexcept {
    to_float_row<Arch>(row, x, n);
  }
};

template <>
struct kv_storage_traits<float> : kv_storage_elementwise<float> {
  static constexpr const char* name = "f32";
  static constexpr bool gemm_operand = true;
  static float to_float(float x) noexcept { return x; }
};

template <class T>
struct kv_storage_traits_16 : kv_storage_elementwise<T> {
  static constexpr bool gemm_operand = false;
  static float to_float(T x) noexcept { return x.to_float(); }
};
template <>
struct kv_storage_traits<bf16> : kv_storage_traits_16<bf16> {
  static constexpr const char* name = "bf16";
};
template <>
struct kv_storage_traits<f16> : kv_storage_traits_16<f16> {
  static constexpr const char* name = "f16";
};

template <>
struct kv_storage_traits<q8> {
  static constexpr const char* name = "int8";
  static constexpr bool gemm_operand = false;
  static constexpr index_t row_prefix = 4;
  static float to_float(q8 x) noexcept { return float(x.v); }
  static float row_scale(const q8* row) noexcept {
    float s;
    std::memcpy(&s, row - row_prefix, sizeof s);
    return s;
  }
  // scale = max|x| / 127, values round(x / scale) (ties to even) clamped
  // to [-127, 127]; a row whose scale is 0 (all zero, or too small for a
  // float scale) stores zeros, and a non-finite value makes the scale NaN,
  // so the whole row reads as NaN (never a silent finite). Vectorised; every
  // backend gives the same bits (tests/kernels/storage.cpp).
  template <arch_tag Arch>
  static void store_row(const float* x, q8* row, index_t n) noexcept {
    using V = vec<float, Arch>;
    using IO = float_io<q8, Arch>;
    constexpr index_t W = V::width;
    V amax = V::zero(), bad = V::zero();  // bad: sum of x - x, NaN iff a value is not finite
    const auto scan = [&](V a) { bad = bad + (a - a), amax = max(amax, max(a, -a)); };
    index_t i = 0;
    for (; i + W <= n; i += W) scan(V::load(x + i));
    if (i < n) scan(V::load_partial(x + i, int(n - i)));
    const float m = reduce_max(amax) + 0.0f;  // + 0: a zero row's max may be -0 (vmaxps order)
    const bool finite = reduce_add(bad) == 0.0f;
    float scale = !finite ? std::numeric_limits<float>::quiet_NaN() : m / 127.0f;
    // m near FLT_MAX: m / 127 may round up so that 127 scale is inf (fuzz
    // finding policies-q8-flt-max); one ulp down keeps every value finite.
    if (finite && !(scale * 127.0f <= std::numeric_limits<float>::max())) scale = std::nextafter(scale, 0.0f);
    std::memcpy(static_cast<void*>(row - row_prefix), &scale, sizeof scale);
    const bool zeros = !finite || !(scale > 0.0f);
    const V s = V::broadcast(zeros ? 1.0f : scale), lo = V::broadcast(-127.0f), hi = V::broadcast(127.0f);
    const auto quantise = [&](V a) { return zeros ? V::zero() : min(max(round_nearest(a / s), lo), hi); };
    for (i = 0; i + W <= n; i += W) IO::store(row + i, quantise(V::load(x + i)));
    if (i < n) IO::store_partial(row + i, quantise(V::load_partial(x + i, int(n - i))), int(n - i));
  }
  // What store_row writes: a scale that is NaN (a non-finite row) or in
  // [0, FLT_MAX / 127] (127 scale finite, so every scaled value is), values in
  // [-127, 127], all zero when the scale is 0 or NaN.
  static bool row_valid(const q8* row, index_t n) noexcept {
    const float s = row_scale(row);
    const bool zeros = !(s > 0.0f);
    if (!(std::isnan(s) || (s >= 0.0f && s * 127.0f <= std::numeric_limits<float>::max()))) return false;
    for (index_t i = 0; i < n; ++i)
      if (row[i].v < -127 || (zeros && row[i].v != 0)) return false;
    return true;
  }
  template <arch_tag Arch>
  static void load_row(const q8* row, float* x, index_t n) noexcept {
    to_float_row<Arch>(row, x, n);
    const float s = row_scale(row);
    for (index_t i = 0; i < n; ++i) x[i] *= s;
  }
};

/// A K/V storage type: one whose kv_storage_traits are complete. float,
/// bf16, f16 and q8 are; every kernel, cache and Infini-attention takes one
/// as its `KV` parameter. Q, outputs and accumulated states stay float.
template <class T>
concept kv_storage = requires(T x, const T* row, T* out, const float* f, float* g, index_t n) {
  { kv_storage_traits<T>::to_float(x) } -> std::same_as<float>;
  { kv_storage_traits<T>::row_scale(row) } -> std::same_as<float>;
  { kv_storage_traits<T>::row_prefix } -> std::convertible_to<index_t>;
  kv_storage_traits<T>::template store_row<scalar>(f, out, n);
  kv_storage_traits<T>::template load_row<scalar>(row, g, n);
  { kv_storage_traits<T>::name } -> std::convertible_to<const char*>;
  { kv_storage_traits<T>::gemm_operand } -> std::convertible_to<bool>;
  { kv_storage_traits<T>::row_valid(row, n) } -> std::same_as<bool>;
};

/// An owning buffer of `rows` rows of n values of KV, each with its prefix
/// (q8: the row's scale): row r's values start at row(r) = buf.data() + r
/// stride() + prefix. Fill rows with kv_storage_traits<KV>::store_row, then
/// view them as K or V: a tensor4_view pointing at row(0) whose token
/// stride is stride() (examples/07_kv_storage.cpp).
template <kv_storage KV>
struct stored_rows {
  static constexpr index_t prefix = kv_storage_traits<KV>::row_prefix;  ///< elements before each row
  index_t n = 0;  ///< values per row
  std::vector<KV> buf;  ///< rows x stride() elements
  /// No rows.
  stored_rows() = default;
  /// Zero-filled rows.
  /// \param rows the row count
  /// \param n_ values per row
  stored_rows(index_t rows, index_t n_) : n(n_), buf(std::size_t(rows * (n_ + prefix))) {}
  /// \return elements from one row's values to the next's: n + prefix
  index_t stride() const noexcept { return n + prefix; }
  /// \param r the row
  /// \return its first value (past its prefix)
  KV* row(index_t r) noexcept { return buf.data() + r * stride() + prefix; }
  /// \param r the row
  /// \return its first value (past its prefix)
  const KV* row(index_t r) const noexcept { return buf.data() + r * stride() + prefix; }
};

LONGCTX_NAMESPACE_END
