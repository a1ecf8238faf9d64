// Which GEMM engine a kernel uses: fp32 always, unless the caller asks for
// bf16 compute (compute_precision::bf16, never implied by the storage type:
// bf16 compute rounds Q and the softmax weights P to bf16 as well, a
// precision change the caller chooses). Then the best 16-bit engine the
// compile flags provide for the backend, if it beats fp32 there:
//   AMX-BF16 (LONGCTX_HAS_AMX)            amx_engine<avx512, true>;
//   else AVX512_BF16 where vdpbf16ps beats the fp32 FMA
//     (LONGCTX_HAS_AVX512_BF16 && LONGCTX_BF16_DOT_PAYS)  bf16_dot_engine;
//   else none: fp32, bit for bit the f32 results (active_engine says so).
// The ranking is a traits fact of the targeted cores, not a CPU-model test
// in kernel code (config.hpp): every Intel CPU with AVX512_BF16 since
// Sapphire Rapids has AMX and runs vdpbf16ps below the fp32 FMA rate, so
// where its flags lack AMX bf16 computes in f32; AMD's (Zen 4, Zen 5) have
// no AMX and run vdpbf16ps at twice the fp32 rate. The engines the ranking
// passes over stay compiled, tested and benchmarked (bf16_dot_engine is
// usable by name through the *_with<Engine> kernels).
#pragma once

#include <cstdint>

#include "amx_engine.hpp"
#include "../error.hpp"
#include "bf16_dot_engine.hpp"
#include "gemm_engine.hpp"

LONGCTX_NAMESPACE_BEGIN

/// The arithmetic of the attention products (Q K^T and P V). f32: fp32
/// operands (bf16, f16 and int8 K/V widened exactly). bf16: bf16 operands,
/// fp32 accumulation and softmax, on the AMX or AVX512_BF16 engine
/// (kernels/compute.hpp); Q (times the scale) and P are rounded to bf16,
/// and so are f32 K/V (bf16 K/V are used as stored). bf16 permits rounding
/// for speed: where no 16-bit engine is compiled for the backend, or the
/// only one runs below fp32 on the targeted CPU (LONGCTX_BF16_DOT_PAYS),
/// bf16 computes in f32, bit for bit (active_engine() says which).
enum class compute_precision : std::uint8_t {
  f32,   ///< fp32 products (the default)
  bf16,  ///< bf16 operands, fp32 accumulation
};

namespace detail {
template <arch_tag Arch>
struct bf16_engine_of {
  using type = void;
};
#if LONGCTX_HAS_AMX
template <>
struct bf16_engine_of<avx512> {
  using type = amx_engine<avx512, true>;
};
#elif LONGCTX_HAS_AVX512_BF16 && LONGCTX_BF16_DOT_PAYS
template <>
struct bf16_engine_of<avx512> {
  using type = bf16_dot_engine;
};
#endif
}  // namespace detail

/// The 16-bit engine compute_precision::bf16 selects on backend Arch
/// (void: none compiled).
template <arch_tag Arch>
using bf16_engine_for = typename detail::bf16_engine_of<Arch>::type;

/// Whether backend Arch has a 16-bit engine in this build.
template <arch_tag Arch>
inline constexpr bool has_bf16_engine = !std::is_void_v<bf16_engine_for<Arch>>;

/// Throws invalid_argument naming `where` and "compute" unless compute is
/// one of the enumerators (a value cast from an integer may not be).
inline void require_compute_precision(const char* where, compute_precision compute) {
  require(compute == compute_precision::f32 || compute == compute_precision::bf16, where, "compute",
          "unknown compute_precision ", int(compute));
}

/// Throws now, before anything changes, when `compute` selects an engine
/// that cannot run on this machine (AMX without the CPU or the OS
/// permission); a no-op otherwise. Policies call it before they touch a
/// state, so a refused engine never leaves one half-updated.
/// \throws unsupported naming the cause
template <arch_tag Arch = default_arch>
void require_engine(compute_precision compute) {
  if constexpr (has_bf16_engine<Arch>)
    if (compute == compute_precision::bf16) bf16_engine_for<Arch>::prepare();
}

/// The engine a kernel on backend Arch runs for `compute`: "f32",
/// "avx512-bf16" or "amx-bf16" (benchmark labels, examples, logs).
template <arch_tag Arch = default_arch>
constexpr const char* active_engine(compute_precision compute) noexcept {
  if constexpr (has_bf16_engine<Arch>)
    if (compute == compute_precision::bf16) return bf16_engine_for<Arch>::name;
  return f32_engine<Arch>::name;
}

LONGCTX_NAMESPACE_END
