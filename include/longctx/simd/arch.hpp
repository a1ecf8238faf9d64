// Architecture tags (empty structs with constexpr facts), the compiled set and
// the default. Which backends exist is decided by the compiler flags only.
#pragma once

#include <tuple>

#include "../config.hpp"

LONGCTX_NAMESPACE_BEGIN

/// The scalar backend: always compiled, the reference path (width 1).
struct scalar {
  static constexpr const char* name = "scalar";
  static constexpr int width = 1;  // floats per register
  static constexpr int alignment = 4;
};
/// AVX2 + FMA: 8 floats per register; compiled when the flags enable both
/// (f16 conversions also need F16C, else they take the exact scalar path).
struct avx2 {
  static constexpr const char* name = "avx2";
  static constexpr int width = 8;
  static constexpr int alignment = 32;
};
/// AVX-512 F/BW/DQ/VL + FMA: 16 floats per register, tails by mask registers.
struct avx512 {
  static constexpr const char* name = "avx512";
  static constexpr int width = 16;
  static constexpr int alignment = 64;
};
/// NEON on aarch64: 4 floats per register.
struct neon {
  static constexpr const char* name = "neon";
  static constexpr int width = 4;
  static constexpr int alignment = 16;
};

/// An architecture tag: an empty struct with constexpr `name`, `width`
/// (floats per register) and `alignment` (bytes). Every kernel and every
/// policy's forward() takes one as its first template parameter.
template <class A>
concept arch_tag = requires {
  { A::name } -> std::convertible_to<const char*>;
  { A::width } -> std::convertible_to<int>;
  { A::alignment } -> std::convertible_to<int>;
};

// Every backend the flags allow, scalar first: tests instantiate each.
/// Every backend the compile flags allow, as a std::tuple of tags, scalar
/// first: the tests instantiate each.
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

/// The backend every entry point and policy uses by default: the one forced
/// by LONGCTX_FORCE_ARCH, else the best the compile flags enable (avx512,
/// avx2, neon, then scalar). On x86-64 a scalar default that was not forced
/// prints a compile-time note (LONGCTX_REQUIRE_SIMD makes it an error).
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
// Scalar by default on a CPU family that has vector units means the compile
// flags enable none the library uses: the slowest backend, chosen silently,
// unless this says so. A note, not a warning (GCC; clang files #pragma
// message under -W#pragma-messages). Choose scalar knowingly with
// LONGCTX_FORCE_ARCH=scalar; define LONGCTX_REQUIRE_SIMD to make this an error.
#if defined(__x86_64__) || defined(_M_X64)
#if defined(LONGCTX_REQUIRE_SIMD)
#error "longctx: LONGCTX_REQUIRE_SIMD is set but the compile flags enable no AVX2+FMA: compile with -march=native (or -mavx2 -mfma -mf16c; CMake: link longctx::native)"
#else
#pragma message("longctx: the compile flags enable no AVX2+FMA, so the scalar backend (the slowest) is the default; compile with -march=native or -mavx2 -mfma -mf16c (CMake: link longctx::native), or define LONGCTX_FORCE_ARCH=scalar to choose it knowingly")
#endif
#endif
#endif

LONGCTX_NAMESPACE_END
