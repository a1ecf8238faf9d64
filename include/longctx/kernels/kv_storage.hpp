// K/V storage element types. float today; the kernels read K and V only
// through to_float / the packing step, so bf16 or f16 storage adds a
// specialisation here (and a vectorised convert) without touching kernels.
#pragma once

#include <concepts>

#include "../config.hpp"

LONGCTX_NAMESPACE_BEGIN

template <class T>
struct kv_storage_traits;  // specialise for a new storage type

template <>
struct kv_storage_traits<float> {
  static constexpr const char* name = "f32";
  static float to_float(float x) noexcept { return x; }
};

template <class T>
concept kv_storage = requires(T x) {
  { kv_storage_traits<T>::to_float(x) } -> std::same_as<float>;
};

LONGCTX_NAMESPACE_END
