// The AMX-BF16 engine: Q K^T and P V on the tile unit (amx_tiles.hpp),
// bf16 operands, fp32 accumulation in tiles, the online softmax in vector
// code between the two products (the common kernel, tiled_attention.hpp).
// Blocking: 64 query rows x 512-key panels (PyTorch's CPU flash attention
// and the published AMX kernels start from 512-key panels; the per-panel
// softmax bookkeeping is paid once per 512 keys instead of once per 128).
// Each product is swept in 32 x 32 macro-tiles: four C tiles (tmm0-3), two
// A tiles (tmm4-5), two B tiles (tmm6-7), 16-row and 16-column tails by
// the 1 x 2, 2 x 1 and 1 x 1 forms. Layouts (bf16_pack.hpp): Q and P
// row-major bf16, d padded to a multiple of 32; K^T and V in VNNI pairs,
// V's columns padded to 32. P V lands in an fp32 buffer and is added to
// the accumulator with the rescale in one vector pass.
// amx_engine<avx512, true> runs on the hardware (LONGCTX_HAS_AMX);
// amx_engine<Arch, false> runs the same code on the emulated unit, on any
// backend (tests).
#pragma once

#include <algorithm>
#include <cstdint>

#include "amx_tiles.hpp"
#include "bf16_pack.hpp"
#include "gemm_engine.hpp"

LONGCTX_NAMESPACE_BEGIN

namespace detail {

// C (R*16 x C*16 fp32, stride ldc bytes) = A (R*16 rows, stride lda bytes)
// B (C*16 columns of pairs, stride ldb bytes) over ksteps steps of 32 bf16:
// A advances 64 bytes a step, B 16 pair rows.
template <class U, int R, int C>
inline void amx_macro(index_t ksteps, const bf16* a, index_t lda, const bf16* b, index_t ldb, float* c,
                      index_t ldc) noexcept {
  U::template zero<0>();
  if constexpr (C == 2) U::template zero<1>();
  if constexpr (R == 2) U::template zero<2>();
  if constexpr (R == 2 && C == 2) U::template zero<3>();
  const char* ab = reinterpret_cast<const char*>(a);
  const char* bb = reinterpret_cast<const char*>(b);
  for (index_t s = 0; s < ksteps; ++s) {
    U::template load<4>(ab + s * 64, lda);
    if constexpr (R == 2) U::template load<5>(ab + 16 * lda + s * 64, lda);
    U::template load<6>(bb + s * 16 * ldb, ldb);
    if constexpr (C == 2) U::template load<7>(bb + s * 16 * ldb + 64, ldb);
    U::template dp<0, 4, 6>();
    if constexpr (C == 2) U::template dp<1, 4, 7>();
    if constexpr (R == 2) U::template dp<2, 5, 6>();
    if constexpr (R == 2 && C == 2) U::template dp<3, 5, 7>();
  }
  char* cb = reinterpret_cast<char*>(c);
  U::template store<0>(cb, ldc);
  if constexpr (C == 2) U::template store<1>(cb + 64, ldc);
  if constexpr (R == 2) U::template store<2>(cb + 16 * ldc, ldc);
  if constexpr (R == 2 && C == 2) U::template store<3>(cb + 16 * ldc + 64, ldc);
}

// C (rows x cols fp32, both multiples of 16; stride ldc floats) = A B, as
// amx_macro, swept in 32 x 32 macro-tiles. Strides of A and B in bf16.
template <class U>
inline void amx_gemm(index_t rows, index_t cols, index_t ksteps, const bf16* a, index_t lda, const bf16* b,
                     index_t ldb, float* c, index_t ldc) noexcept {
  const index_t la = 2 * lda, lb = 2 * ldb, lc = 4 * ldc;
  for (index_t i = 0; i < rows; i += 32) {
    const bool two_r = rows - i >= 32;
    for (index_t j = 0; j < cols; j += 32) {
      const bool two_c = cols - j >= 32;
      const bf16* ai = a + i * lda;
      const bf16* bj = b + 2 * j;  // column j: word j of every pair row
      float* cij = c + i * ldc + j;
      if (two_r && two_c)
        amx_macro<U, 2, 2>(ksteps, ai, la, bj, lb, cij, lc);
      else if (two_r)
        amx_macro<U, 2, 1>(ksteps, ai, la, bj, lb, cij, lc);
      else if (two_c)
        amx_macro<U, 1, 2>(ksteps, ai, la, bj, lb, cij, lc);
      else
        amx_macro<U, 1, 1>(ksteps, ai, la, bj, lb, cij, lc);
    }
  }
}

}  // namespace detail

/// The AMX-BF16 engine (kernels/gemm_engine.hpp). Hardware: the tile unit
/// (needs LONGCTX_HAS_AMX and a CPU and OS that grant it: prepare() throws
/// `unsupported` otherwise); else the emulated unit, for tests.
template <arch_tag Arch, bool Hardware>
struct amx_engine {
  using arch = Arch;
  using operand = bf16;
  using unit = amx_unit<Hardware>;
  static constexpr const char* name = unit::name;
  static constexpr index_t block_q = 64;
  static constexpr index_t block_kv = 512;
  static constexpr bool reads_v_in_place = false;

  static constexpr index_t q_ld(index_t d) noexcept { return round_up(d, 32); }
  static constexpr index_t kt_tile(index_t d) noexcept { return q_ld(d) * block_kv; }
  static constexpr index_t v_ld(index_t d_v) noexcept { return round_up(d_v, 32); }
  static constexpr index_t v_tile(index_t d_v) noexcept { return block_kv * v_ld(d_v); }
  static constexpr index_t acc_ld(index_t d_v) noexcept { return round_up(d_v, 32); }
  // bf16 P (block_q x block_kv), then P V in fp32 (block_q x acc_ld).
  static constexpr index_t scratch_floats(index_t, index_t d_v) noexcept {
    return block_q * block_kv / 2 + block_q * acc_ld(d_v);
  }

  static void prepare() { unit::prepare(); }
  static void begin() noexcept { unit::configure(); }
  static void end() noexcept { unit::release(); }

  template <class KV>
  static void pack_k(const KV* k, index_t ldk, index_t d, index_t nk, bf16* tile) noexcept {
    detail::pack_kt_vnni<Arch>(k, ldk, d, q_ld(d), nk, block_kv, tile);
  }
  template <class KV>
  static void pack_v(const KV* v, index_t ldv, index_t d_v, index_t nk, bf16* tile) noexcept {
    detail::pack_v_vnni<Arch>(v, ldv, d_v, v_ld(d_v), nk, block_kv, tile);
  }
  static void load_q(const float* q, index_t d, float scale, bf16* dst) noexcept {
    detail::scaled_row_to_bf16<Arch>(q, d, scale, q_ld(d), dst);
  }
  // Rows past nb (to the next 16) are zero (tiled_attention_block): their
  // products land in S rows nobody reads.
  static void qk(index_t nb, index_t nk, index_t d, const bf16* q, const bf16* kt, float* s) noexcept {
    detail::amx_gemm<unit>(round_up(nb, 16), round_up(nk, 16), q_ld(d) / 32, q, q_ld(d), kt, 2 * block_kv, s, block_kv);
  }
  static void pv(index_t nb, index_t nk, index_t d_v, float* p, const bf16* v, index_t, float* acc,
                 const float* alpha, float* scratch) noexcept {
    using V = vec<float, Arch>;
    constexpr index_t W = Arch::width;
    bf16* p16 = reinterpret_cast<bf16*>(scratch);
    float* prod = scratch + block_q * block_kv / 2;
    const index_t kp = round_up(nk, 32), nbp = round_up(nb, 16), ld = acc_ld(d_v);
    detail::probabilities_to_bf16<Arch>(p, block_kv, nb, nbp, nk, kp, p16, block_kv);
    detail::amx_gemm<unit>(nbp, ld, kp / 32, p16, block_kv, v, 2 * v_ld(d_v), prod, ld);
    for (index_t r = 0; r < nb; ++r) {
      float* ar = acc + r * ld;
      const float* pr = prod + r * ld;
      if (!alpha) {
        std::copy(pr, pr + ld, ar);
        continue;
      }
      const V a = V::broadcast(alpha[r]);
      for (index_t c = 0; c < ld; c += W) fma(V::load(ar + c), a, V::load(pr + c)).store(ar + c);
    }
  }
};

LONGCTX_NAMESPACE_END
