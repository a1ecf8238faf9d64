// K/V storage element types as the kernels see them: float, bf16 and f16
// (tensor/storage_types.hpp). Kernels read K and V only through these traits
// and simd/convert.hpp's float_io, never by testing the type:
//   name           short name (benchmark labels, snapshot kinds);
//   to_float(x)    exact widening;
//   from_float(x)  round to nearest even (what a cache stores);
//   gemm_operand   rows are already the micro-kernel's float operands, so
//                  prefill may read V in place instead of packing it.
#pragma once

#include <concepts>

#include "../config.hpp"
#include "../tensor/storage_types.hpp"

LONGCTX_NAMESPACE_BEGIN

template <class T>
struct kv_storage_traits;  // specialise for a new storage type

template <>
struct kv_storage_traits<float> {
  static constexpr const char* name = "f32";
  static constexpr bool gemm_operand = true;
  static float to_float(float x) noexcept { return x; }
  static float from_float(float x) noexcept { return x; }
};

template <class T>
struct kv_storage_traits_16 {
  static constexpr bool gemm_operand = false;
  static float to_float(T x) noexcept { return x.to_float(); }
  static T from_float(float x) noexcept { return T::from_float(x); }
};
template <>
struct kv_storage_traits<bf16> : kv_storage_traits_16<bf16> {
  static constexpr const char* name = "bf16";
};
template <>
struct kv_storage_traits<f16> : kv_storage_traits_16<f16> {
  static constexpr const char* name = "f16";
};

template <class T>
concept kv_storage = requires(T x, float f) {
  { kv_storage_traits<T>::to_float(x) } -> std::same_as<float>;
  { kv_storage_traits<T>::from_float(f) } -> std::same_as<T>;
  { kv_storage_traits<T>::name } -> std::convertible_to<const char*>;
  { kv_storage_traits<T>::gemm_operand } -> std::convertible_to<bool>;
};

LONGCTX_NAMESPACE_END
