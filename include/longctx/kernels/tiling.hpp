// Every tile constant of the kernels, in one place, each with the benchmark
// behind it, and asserted against every arch's micro-tile (so a retune that
// breaks the packing of any backend fails to compile, on every machine).
#pragma once

#include "../simd/arch.hpp"
#include "../tensor/extents.hpp"

LONGCTX_NAMESPACE_BEGIN

// x rounded up to a multiple of m (padding of packed tiles and rows).
constexpr index_t round_up(index_t x, index_t m) noexcept { return (x + m - 1) / m * m; }

// Micro-tile per arch: mr rows x nr vectors of accumulators, chosen so that
// mr*nr accumulators + nr B vectors + 1 broadcast fit the register file
// (16 ymm on AVX2, 32 zmm / q registers on AVX-512 / NEON).
template <arch_tag Arch>
struct gemm_tile_traits {
  static constexpr int mr = 4, nr = 4;  // scalar: 16 accumulators
};
template <>
struct gemm_tile_traits<avx2> {
  static constexpr int mr = 6, nr = 2;  // 12 + 2 + 1 = 15 of 16 ymm
};
template <>
struct gemm_tile_traits<avx512> {
  static constexpr int mr = 6, nr = 4;  // 24 + 4 + 1 = 29 of 32 zmm
};
template <>
struct gemm_tile_traits<neon> {
  static constexpr int mr = 6, nr = 4;  // 24 + 4 + 1 = 29 of 32 q registers
};

// Query rows per block and keys per tile. block_kv is a multiple of every
// arch's nr*W; block_q a multiple of mr. Chosen by bench/bench_attention.cpp:
// 48 x 128 was 5-10% faster than 48 x 64 at d = 128 (causal prefill, A/B in
// one window, AMD Zen 3, 2026-11-23); the operands stay in L2 at d = 128.
// AVX-512: 48 x 256, which halves the per-tile softmax bookkeeping (two
// reductions, a scalar exp and the accumulator rescale per row and tile):
// causal d = 128, n = 4096, one thread, AMD Zen 5, 2026-12-03: 197 ms at
// 128 keys, 172 ms at 256, 180 ms at 512 (the diagonal tiles' waste grows).
template <arch_tag Arch>
struct attention_blocking {
  static constexpr index_t block_q = 48;
  static constexpr index_t block_kv = 128;
};
template <>
struct attention_blocking<avx512> {
  static constexpr index_t block_q = 48;
  static constexpr index_t block_kv = 256;
};

// Query rows per block, the exact kernel's block_q (not tuned separately):
// the S tile (48 x 256 floats) stays in L1/L2 while the V panels stream.
inline constexpr index_t chunk_attention_block_q = 48;

// Split-KV decode: keys per chunk at least min_chunk (amortises the LSE
// merge) and at most max_chunks chunks per KV head (bounds the partials'
// scratch). Set by reasoning, not by a sweep: bench_attention BM_decode
// measures the result, no alternative was benchmarked.
struct decode_tiling {
  static constexpr index_t min_chunk = 512;
  static constexpr index_t max_chunks = 64;
};

namespace detail {
template <arch_tag A>
constexpr bool tiles_fit() noexcept {
  constexpr index_t mr = gemm_tile_traits<A>::mr, panel = index_t(gemm_tile_traits<A>::nr) * A::width;
  return attention_blocking<A>::block_q % mr == 0 && attention_blocking<A>::block_kv % panel == 0 &&
         chunk_attention_block_q % mr == 0 && decode_tiling::min_chunk % attention_blocking<A>::block_kv == 0;
}
}  // namespace detail

// Every arch tag, compiled or not: the constants must suit all backends.
static_assert(detail::tiles_fit<scalar>() && detail::tiles_fit<avx2>() && detail::tiles_fit<avx512>() &&
                  detail::tiles_fit<neon>(),
              "a block size is not a multiple of some arch's micro-tile (mr rows, nr * width columns)");

LONGCTX_NAMESPACE_END
