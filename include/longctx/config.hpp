// longctx configuration: version, debug assert, configuration macros.
// Layer 0: includes nothing from the library.
#pragma once

#include <cstdio>
#include <cstdlib>

#define LONGCTX_VERSION_MAJOR 0
#define LONGCTX_VERSION_MINOR 1
#define LONGCTX_VERSION_PATCH 0
#define LONGCTX_VERSION_STRING "0.1.0"

#define LONGCTX_CAT_IMPL(a, b) a##b
#define LONGCTX_CAT(a, b) LONGCTX_CAT_IMPL(a, b)
#define LONGCTX_STRINGIFY_IMPL(a) #a
#define LONGCTX_STRINGIFY(a) LONGCTX_STRINGIFY_IMPL(a)

// Internal invariants (not user input: that is checked with exceptions at the
// API boundary, see error.hpp). Active when NDEBUG is not defined or when
// LONGCTX_ENABLE_ASSERTS is; compiled out otherwise so kernels stay noexcept
// and branch-free.
#if !defined(NDEBUG) || defined(LONGCTX_ENABLE_ASSERTS)
#define LONGCTX_ASSERT(cond)                                                          \
  ((cond) ? static_cast<void>(0)                                                      \
          : ::longctx::detail::assert_fail(#cond, __FILE__, __LINE__))
#else
#define LONGCTX_ASSERT(cond) static_cast<void>(0)
#endif

// ---- Floating-point model ------------------------------------------------
// The value contract (README, Safety) rests on IEEE infinities and NaN: the
// kernels find saturated logits, poisoned rows and non-finite outputs by
// comparisons (x - x, m < FLT_MAX, ...) that -ffinite-math-only, part of
// -ffast-math, lets the compiler fold to constants, after which extreme or
// non-finite input gives silently wrong finite results. Refused, unless the
// caller defines LONGCTX_ALLOW_FINITE_MATH and so accepts that only finite
// inputs of ordinary magnitude are then supported.
#if defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__ && !defined(LONGCTX_ALLOW_FINITE_MATH)
#error                                                                                             \
    "longctx: compiled with -ffinite-math-only (implied by -ffast-math): the headers detect overflow, NaN and inf by IEEE comparisons it removes. Add -fno-finite-math-only, or define LONGCTX_ALLOW_FINITE_MATH to accept finite, ordinary inputs only"
#endif

// ---- Instruction sets ------------------------------------------------------
// ISA detection lives here (layer 0) because the ABI namespace below depends on
// it; simd/arch.hpp turns these into arch tags. Nothing else tests ISA macros.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && \
    defined(__AVX512VL__) && defined(__FMA__)
#define LONGCTX_HAS_AVX512 1
#else
#define LONGCTX_HAS_AVX512 0
#endif
#if defined(__AVX2__) && defined(__FMA__)
#define LONGCTX_HAS_AVX2 1
#else
#define LONGCTX_HAS_AVX2 0
#endif
// F16C (vcvtph2ps / vcvtps2ph): every AVX2 CPU has it; without the flag the
// f16 conversions take the exact scalar path.
#if defined(__F16C__)
#define LONGCTX_HAS_F16C 1
#else
#define LONGCTX_HAS_F16C 0
#endif
// 16-bit compute (kernels/compute.hpp): AVX512_BF16's vdpbf16ps on the
// AVX-512 backend, and AMX-BF16 tiles (which also need AVX512_BF16 for the
// conversions around them: every CPU with AMX has it). Flags only: whether
// the running CPU has them is asked at run time (cpu_has_amx_bf16()).
#if LONGCTX_HAS_AVX512 && defined(__AVX512BF16__)
#define LONGCTX_HAS_AVX512_BF16 1
#else
#define LONGCTX_HAS_AVX512_BF16 0
#endif
// Whether vdpbf16ps beats the fp32 FMA on the CPUs the flags target: a
// fact of the core, not of the ISA. AMD Zen 4 and Zen 5 run it at twice the
// fp32 rate; Intel's Sapphire and Emerald Rapids at half (87 against 177
// GFLOP/s per core measured on Emerald Rapids), and there AMX is the 16-bit
// engine, but a build whose flags lack AMX (a hypervisor that hides it from
// -march=native) would otherwise take the slower one. The flags tell the two
// apart: AVX512_FP16 is Intel's (Sapphire Rapids on), absent from every AMD
// core to Zen 5 (a later AMD core that has it would need the override).
// -DLONGCTX_BF16_DOT_PAYS=0|1 overrides (CMake: the cache variable of the
// same name).
#if !defined(LONGCTX_BF16_DOT_PAYS)
#if defined(__AVX512FP16__)
#define LONGCTX_BF16_DOT_PAYS 0
#else
#define LONGCTX_BF16_DOT_PAYS 1
#endif
#elif LONGCTX_BF16_DOT_PAYS != 0 && LONGCTX_BF16_DOT_PAYS != 1
#error "LONGCTX_BF16_DOT_PAYS must be 0 or 1"
#endif
// GCC spells the AMX macros __AMX_TILE__ / __AMX_BF16__, clang __AMXTILE__ /
// __AMXBF16__ (clang 14): either. The amx preset checks that they were seen
// (LONGCTX_EXPECT_AMX, tests/kernels/engines.cpp).
#if (defined(__AMX_TILE__) || defined(__AMXTILE__)) &&                                             \
    (defined(__AMX_BF16__) || defined(__AMXBF16__))
#define LONGCTX_AMX_FLAGS 1
#else
#define LONGCTX_AMX_FLAGS 0
#endif
#if LONGCTX_HAS_AVX512_BF16 && LONGCTX_AMX_FLAGS && defined(__linux__)
#define LONGCTX_HAS_AMX 1
#else
#define LONGCTX_HAS_AMX 0
#endif
#if defined(__ARM_NEON) && defined(__aarch64__)
#define LONGCTX_HAS_NEON 1
#else
#define LONGCTX_HAS_NEON 0
#endif

// -DLONGCTX_FORCE_ARCH=scalar|avx2|avx512|neon picks the default backend
// (CMake: -DLONGCTX_FORCE_ARCH=...). A backend the flags cannot provide is a
// hard error: silently falling back would benchmark the wrong code.
#define LONGCTX_ARCH_ID_scalar 1
#define LONGCTX_ARCH_ID_avx2 2
#define LONGCTX_ARCH_ID_avx512 3
#define LONGCTX_ARCH_ID_neon 4
#if defined(LONGCTX_FORCE_ARCH)
#define LONGCTX_FORCED_ARCH_ID LONGCTX_CAT(LONGCTX_ARCH_ID_, LONGCTX_FORCE_ARCH)
#if LONGCTX_FORCED_ARCH_ID == 1
#elif LONGCTX_FORCED_ARCH_ID == 2
#if !LONGCTX_HAS_AVX2
#error "LONGCTX_FORCE_ARCH=avx2 needs AVX2 and FMA enabled by the compiler flags (-mavx2 -mfma)"
#endif
#elif LONGCTX_FORCED_ARCH_ID == 3
#if !LONGCTX_HAS_AVX512
#error "LONGCTX_FORCE_ARCH=avx512 needs AVX-512 F/BW/DQ/VL and FMA enabled by the compiler flags"
#endif
#elif LONGCTX_FORCED_ARCH_ID == 4
#if !LONGCTX_HAS_NEON
#error "LONGCTX_FORCE_ARCH=neon needs an aarch64 target with NEON"
#endif
#else
#error "LONGCTX_FORCE_ARCH must be one of scalar, avx2, avx512, neon"
#endif
#define LONGCTX_ISA_FORCED_SUFFIX LONGCTX_CAT(_default_, LONGCTX_FORCE_ARCH)
#else
#define LONGCTX_FORCED_ARCH_ID 0
#define LONGCTX_ISA_FORCED_SUFFIX
#endif

// Every library symbol lives in an inline namespace named after the enabled
// instruction set (and the forced backend), so translation units compiled with
// different -m flags get distinct symbols: the linker cannot keep an AVX-512
// copy of an inline function for a TU that must run on an AVX2-only CPU.
#if LONGCTX_HAS_AVX512
#define LONGCTX_ISA_BASE isa_avx512
#elif LONGCTX_HAS_AVX2
#define LONGCTX_ISA_BASE isa_avx2
#elif LONGCTX_HAS_NEON
#define LONGCTX_ISA_BASE isa_neon
#else
#define LONGCTX_ISA_BASE isa_generic
#endif
#define LONGCTX_ISA_NS LONGCTX_CAT(LONGCTX_ISA_BASE, LONGCTX_ISA_FORCED_SUFFIX)

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the unused merge
// source, and -Wmaybe-uninitialized / -Wuninitialized report it at every
// site they are inlined into (GCC PR 105593, fixed in GCC 13): 800+ false
// warnings for a consumer translation unit built with AVX-512 flags. GCC
// checks diagnostic pragmas along the inlining chain, so silencing the two
// inside the library's namespace blocks keeps them out of the consumer's
// build; only for GCC < 13 with AVX-512 enabled, so GCC still checks this
// code in its other configurations and clang everywhere. The consumer's own
// code outside these blocks keeps both warnings.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13 && defined(__AVX512F__)
#define LONGCTX_DIAGNOSTICS_BEGIN                                  \
  _Pragma("GCC diagnostic push")                                   \
  _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"") \
  _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")
#define LONGCTX_DIAGNOSTICS_END _Pragma("GCC diagnostic pop")
#else
#define LONGCTX_DIAGNOSTICS_BEGIN
#define LONGCTX_DIAGNOSTICS_END
#endif

#define LONGCTX_NAMESPACE_BEGIN \
  LONGCTX_DIAGNOSTICS_BEGIN     \
  namespace longctx {           \
  inline namespace LONGCTX_ISA_NS {
#define LONGCTX_NAMESPACE_END \
  }                           \
  }                           \
  LONGCTX_DIAGNOSTICS_END

// What does not depend on the flags leaves the tagged namespace, so it is one
// type in every translation unit (a catch or a view crosses units built with
// other -m flags): enums and plain data between LONGCTX_UNTAGGED_BEGIN and
// _END inside a tagged block; whole headers of types (tensor/) between
// LONGCTX_TYPES_BEGIN and _END, with every function LONGCTX_INLINE: forced
// inline, each unit runs the instructions of its own flags and no
// out-of-line copy built with other flags is ever called.
#define LONGCTX_UNTAGGED_BEGIN }
#define LONGCTX_UNTAGGED_END inline namespace LONGCTX_ISA_NS {
#define LONGCTX_TYPES_BEGIN LONGCTX_DIAGNOSTICS_BEGIN namespace longctx {
#define LONGCTX_TYPES_END } LONGCTX_DIAGNOSTICS_END
#if defined(__GNUC__)
#define LONGCTX_INLINE [[gnu::always_inline]] inline
#else
#define LONGCTX_INLINE inline
#endif

// Full unrolling of fixed-trip register-tile loops. GCC at -O2 keeps such
// loops rolled and spills the accumulator array to memory (measured 3.5x
// slower micro-kernel); users compile headers with their own flags, so the
// kernels ask for it explicitly. Clang accepts the GCC spelling.
#define LONGCTX_UNROLL _Pragma("GCC unroll 32")

LONGCTX_NAMESPACE_BEGIN

/// The library version: LONGCTX_VERSION_MAJOR, _MINOR, _PATCH and
/// LONGCTX_VERSION_STRING ("0.1.0").
struct version_info {
  int major, minor, patch;
  const char* string;
};

/// \return the version of the headers this translation unit includes
constexpr version_info version() noexcept {
  return {LONGCTX_VERSION_MAJOR, LONGCTX_VERSION_MINOR, LONGCTX_VERSION_PATCH,
          LONGCTX_VERSION_STRING};
}

namespace detail {
[[noreturn]] inline void assert_fail(const char* cond, const char* file, int line) noexcept {
  std::fprintf(stderr, "longctx: internal assertion failed: %s (%s:%d)\n", cond, file, line);
  std::abort();
}
}  // namespace detail

LONGCTX_NAMESPACE_END
