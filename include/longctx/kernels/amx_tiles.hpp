// The AMX tile unit as the AMX engine (amx_engine.hpp) uses it: eight tile
// registers, all configured as 16 rows x 64 bytes (16 fp32 or 32 bf16 per
// row), loaded and stored with a byte stride, and tdpbf16ps: C (16 x 16
// fp32) += A (16 x 32 bf16) B (16 pair rows x 16 columns of bf16 pairs).
//   amx_unit<true>   the hardware (LONGCTX_HAS_AMX: -mamx-tile -mamx-bf16),
//                    after the OS has granted the tile-data permission
//                    (request_amx_permission, once per process);
//   amx_unit<false>  the same operations in software, register by register,
//                    on any CPU: it runs the AMX engine's layouts, loops and
//                    tails where no AMX exists, so tests check them against
//                    the double oracle everywhere (products in float, two
//                    FMAs per pair, as the hardware rounds to within an ulp).
// And the run-time facts: whether the CPU has AMX-BF16 and AVX512_BF16.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "../error.hpp"
#include "../tensor/extents.hpp"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif
#if LONGCTX_HAS_AMX
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#endif

LONGCTX_NAMESPACE_BEGIN

/// Whether the running CPU reports AMX-TILE and AMX-BF16 (CPUID leaf 7),
/// whatever the compile flags. False off x86-64.
inline bool cpu_has_amx_bf16() noexcept {
#if defined(__x86_64__) || defined(_M_X64)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return (d >> 22 & 1u) && (d >> 24 & 1u);
#else
  return false;
#endif
}

/// Whether the running CPU reports AVX512_BF16 (CPUID leaf 7, sub-leaf 1)
/// and AVX-512 F, whatever the compile flags. False off x86-64.
inline bool cpu_has_avx512_bf16() noexcept {
#if defined(__x86_64__) || defined(_M_X64)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b >> 16 & 1u)) return false;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
  return a >> 5 & 1u;
#else
  return false;
#endif
}

namespace detail {

// Tile configuration (palette 1): every tile 16 rows of 64 bytes.
struct alignas(64) amx_config {
  std::uint8_t palette = 1, start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  std::uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};
static_assert(sizeof(amx_config) == 64);

}  // namespace detail

/// Asks Linux, once per process and thread-safely, for permission to use
/// AMX tile data (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)),
/// after checking that the CPU has AMX-BF16.
/// \throws unsupported naming the cause (no AMX on this CPU, or the errno
///   of a refused request) and the way out (compute_precision::f32)
inline void request_amx_permission() {
#if LONGCTX_HAS_AMX
  static const std::string failure = []() -> std::string {
    if (!cpu_has_amx_bf16())
      return "this CPU has no AMX-BF16 (the code was compiled for one: -mamx-tile -mamx-bf16)";
    constexpr long req_xcomp_perm = 0x1023, xfeature_xtiledata = 18;
    if (syscall(SYS_arch_prctl, req_xcomp_perm, xfeature_xtiledata) != 0)
      return detail::concat("the OS refused the AMX tile-data permission (arch_prctl ARCH_REQ_XCOMP_PERM: errno ",
                            errno, ", ", std::strerror(errno), "; Linux 5.16 or later grants it)");
    return {};
  }();
  if (!failure.empty())
    throw unsupported("longctx: the AMX engine cannot run: " + failure +
                      "; compute with compute_precision::f32, or build without -mamx-tile");
#endif
}

template <bool Hardware>
struct amx_unit;

#if LONGCTX_HAS_AMX
namespace detail {
// GCC's and clang's tile intrinsics are macros that paste the tile number
// into the instruction text: it must be a literal, not a template
// argument, so each tile the engine uses gets its own specialisation.
template <int T>
void tile_load(const void*, index_t) noexcept;
template <int T>
void tile_zero() noexcept;
template <int T>
void tile_store(void*, index_t) noexcept;
template <int C, int A, int B>
void tile_dp() noexcept;
#define LONGCTX_AMX_TILE(N)                                                                             \
  template <>                                                                                        \
  inline void tile_load<N>(const void* p, index_t stride) noexcept { _tile_loadd(N, p, stride); }    \
  template <>                                                                                        \
  inline void tile_zero<N>() noexcept { _tile_zero(N); }                                             \
  template <>                                                                                        \
  inline void tile_store<N>(void* p, index_t stride) noexcept { _tile_stored(N, p, stride); }
LONGCTX_AMX_TILE(0)
LONGCTX_AMX_TILE(1)
LONGCTX_AMX_TILE(2)
LONGCTX_AMX_TILE(3)
LONGCTX_AMX_TILE(4)
LONGCTX_AMX_TILE(5)
LONGCTX_AMX_TILE(6)
LONGCTX_AMX_TILE(7)
#undef LONGCTX_AMX_TILE
#define LONGCTX_AMX_DP(C, A, B) \
  template <>                 \
  inline void tile_dp<C, A, B>() noexcept { _tile_dpbf16ps(C, A, B); }
LONGCTX_AMX_DP(0, 4, 6)
LONGCTX_AMX_DP(1, 4, 7)
LONGCTX_AMX_DP(2, 5, 6)
LONGCTX_AMX_DP(3, 5, 7)
#undef LONGCTX_AMX_DP
}  // namespace detail

template <>
struct amx_unit<true> {
  static constexpr const char* name = "amx-bf16";
  static void prepare() { request_amx_permission(); }
  static void configure() noexcept {
    static const detail::amx_config cfg{};
    _tile_loadconfig(&cfg);
  }
  static void release() noexcept { _tile_release(); }
  template <int T>
  static void load(const void* p, index_t stride) noexcept {
    detail::tile_load<T>(p, stride);
  }
  template <int T>
  static void zero() noexcept {
    detail::tile_zero<T>();
  }
  template <int T>
  static void store(void* p, index_t stride) noexcept {
    detail::tile_store<T>(p, stride);
  }
  template <int C, int A, int B>
  static void dp() noexcept {
    detail::tile_dp<C, A, B>();
  }
};
#endif

template <>
struct amx_unit<false> {
  static constexpr const char* name = "amx-bf16-emulated";
  static void prepare() {}
  static void configure() noexcept {}
  static void release() noexcept {}
  template <int T>
  static void load(const void* p, index_t stride) noexcept {
    for (int r = 0; r < 16; ++r) std::memcpy(regs().t[T][r], static_cast<const char*>(p) + r * stride, 64);
  }
  template <int T>
  static void zero() noexcept {
    std::memset(regs().t[T], 0, sizeof regs().t[T]);
  }
  template <int T>
  static void store(void* p, index_t stride) noexcept {
    for (int r = 0; r < 16; ++r) std::memcpy(static_cast<char*>(p) + r * stride, regs().t[T][r], 64);
  }
  template <int C, int A, int B>
  static void dp() noexcept {
    auto& t = regs().t;
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 16; ++n) {
        float c = f32(t[C][m], n);
        for (int k = 0; k < 16; ++k) {
          c = std::fma(bf(t[A][m], 2 * k), bf(t[B][k], 2 * n), c);
          c = std::fma(bf(t[A][m], 2 * k + 1), bf(t[B][k], 2 * n + 1), c);
        }
        std::memcpy(t[C][m] + 4 * n, &c, 4);
      }
  }

 private:
  struct file {
    unsigned char t[8][16][64];
  };
  static file& regs() noexcept {
    thread_local file f{};
    return f;
  }
  static float f32(const unsigned char* row, int i) noexcept {
    float x;
    std::memcpy(&x, row + 4 * i, 4);
    return x;
  }
  static float bf(const unsigned char* row, int i) noexcept {  // bf16 element i, subnormals as zero (DAZ)
    std::uint16_t h;
    std::memcpy(&h, row + 2 * i, 2);
    if ((h & 0x7f80u) == 0) h &= 0x8000u;
    const std::uint32_t u = std::uint32_t(h) << 16;
    float x;
    std::memcpy(&x, &u, 4);
    return x;
  }
};

LONGCTX_NAMESPACE_END
