// Architecture tags (empty structs with constexpr facts), the compiled set and
// the default. Which backends exist is decided by the compiler flags only.
#pragma once

#include <tuple>

#include "../config.hpp"

LONGCTX_NAMESPACE_BEGIN

struct scalar {
  static constexpr const char* name = "scalar";
  static constexpr int width = 1;  // floats per register
  static constexpr int alignment = 4;
};
struct avx2 {
  static constexpr const char* name = "avx2";
  static constexpr int width = 8;
  static constexpr int alignment = 32;
};
struct avx512 {
  static constexpr const char* name = "avx512";
  static constexpr int width = 16;
  static constexpr int alignment = 64;
};
struct neon {
  static constexpr const char* name = "neon";
  static constexpr int width = 4;
  static constexpr int alignment = 16;
};

template <class A>
concept arch_tag = requires {
  { A::name } -> std::convertible_to<const char*>;
  { A::width } -> std::convertible_to<int>;
  { A::alignment } -> std::convertible_to<int>;
};

// Every backend the flags allow, scalar first: tests instantiate each.
using compiled_archs = decltype(std::tuple_cat(std::tuple<scalar>{}
#if LONGCTX_HAS_AVX2
                                               , std::tuple<avx2>{}
#endif
#if LONGCTX_HAS_AVX512
                                               , std::tuple<avx512>{}
#endif
#if LONGCTX_HAS_NEON
                                               , std::tuple<neon>{}
#endif
                                               ));

#if LONGCTX_FORCED_ARCH_ID == 1
using default_arch = scalar;
#elif LONGCTX_FORCED_ARCH_ID == 2
using default_arch = avx2;
#elif LONGCTX_FORCED_ARCH_ID == 3
using default_arch = avx512;
#elif LONGCTX_FORCED_ARCH_ID == 4
using default_arch = neon;
#elif LONGCTX_HAS_AVX512
using default_arch = avx512;
#elif LONGCTX_HAS_AVX2
using default_arch = avx2;
#elif LONGCTX_HAS_NEON
using default_arch = neon;
#else
using default_arch = scalar;
#endif

LONGCTX_NAMESPACE_END
