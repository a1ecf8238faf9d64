// Split-KV decode (flash-decoding) for a few query rows over a long cache:
// the keys are cut into fixed-size chunks (a function of n_kv only, so the
// result does not depend on the thread count); each chunk streams its K and V
// once for all query rows of one KV group and leaves an unnormalised partial
// output plus its softmax state; partials are merged in chunk order.
#pragma once

#include <algorithm>
#include <cstring>

#include "../simd/blas1.hpp"
#include "exact_row.hpp"
#include "mask.hpp"
#include "micro_gemm.hpp"
#include "online_softmax.hpp"
#include "pack.hpp"
#include "tiling.hpp"
#include "../tensor/view.hpp"

LONGCTX_NAMESPACE_BEGIN

// Keys per chunk (decode_tiling): at least min_chunk, at most max_chunks
// chunks per KV head; a multiple of block_kv.
template <arch_tag Arch>
constexpr index_t decode_chunk_size(index_t n_kv) noexcept {
  constexpr index_t BKV = attention_blocking<Arch>::block_kv, C = decode_tiling::max_chunks;
  return std::max<index_t>(round_up(decode_tiling::min_chunk, BKV), round_up((n_kv + C - 1) / C, BKV));
}

// Floats of scratch decode_chunk needs for `rows` query rows.
template <arch_tag Arch>
constexpr index_t decode_chunk_scratch(index_t rows, index_t d_v) noexcept {
  constexpr index_t BKV = attention_blocking<Arch>::block_kv;
  return rows * BKV + BKV * round_up(d_v, Arch::width) + rows;
}

// One chunk [c0, c1) of keys for `rows` query rows. q_rows[r]: row r's query
// (d floats, unscaled), q_pos[r]: its index for the mask. Accumulates into
// acc (rows, dvp) and st[rows], which start zero / empty. logits_rows[r], if
// not null, receives row r's scaled, masked logits for keys [c0, c1) at
// logits_rows[r][j].
template <arch_tag Arch, class KV, class BoundMask, std::size_t D, std::size_t DV>
void decode_chunk(const float* const* q_rows, const index_t* q_pos, index_t rows,
                  matrix_view<const KV, D> k, matrix_view<const KV, DV> v, float scale,
                  const BoundMask& mask, index_t c0, index_t c1, float* acc, softmax_state* st,
                  float* const* logits_rows, float* scratch) noexcept {
  constexpr index_t W = Arch::width, BKV = attention_blocking<Arch>::block_kv;
  const index_t d = k.extent(1), d_v = v.extent(1), dvp = round_up(d_v, W);
  float* s = scratch;
  float* vp = s + rows * BKV;
  float* alpha = vp + BKV * dvp;
  // The factor of key row j (1 but for row-scaled storage).
  const auto key_scale = [&](index_t j) { return kv_storage_traits<KV>::row_scale(k.data() + j * k.stride(0)); };
  for (index_t j0 = c0; j0 < c1; j0 += BKV) {
    const index_t nk = std::min(BKV, c1 - j0), nkp = round_up(nk, W);
    bool any = false;
    for (index_t r = 0; r < rows; ++r) any |= mask.classify(q_pos[r], q_pos[r] + 1, j0, j0 + nk) != tile_kind::empty;
    if (!any) {
      if (logits_rows)
        for (index_t r = 0; r < rows; ++r)
          if (logits_rows[r]) std::fill(logits_rows[r] + j0, logits_rows[r] + j0 + nk, neg_inf);
      continue;
    }
    for (index_t r = 0; r < rows; ++r) {
      float* sr = s + r * BKV;
      const tile_kind kind = mask.classify(q_pos[r], q_pos[r] + 1, j0, j0 + nk);
      bool overflowed = false;
      if (kind == tile_kind::empty) {
        for (index_t jj = 0; jj < nkp; ++jj) sr[jj] = neg_inf;
      } else {
        // R keys per dot_rows call (q's loads shared), K read in its storage
        // type and converted in registers. Prefetch: K rows `ahead` keys on,
        // and this tile's V rows for the P V product that follows. Measured
        // 0-7% at n_kv = 32K, 2 threads (fp32), within the host's bandwidth
        // noise; distances 8-128 were indistinguishable.
        constexpr int R = 4;
        constexpr index_t ahead = 16;
        index_t jj = 0;
        for (; jj + R <= nk; jj += R) {
          if (r == 0)  // the group's other rows read the same keys
            for (index_t u = jj; u < jj + R; ++u) {
              if (j0 + u + ahead < c1) prefetch(k.data() + (j0 + u + ahead) * k.stride(0), d);
              prefetch(v.data() + (j0 + u) * v.stride(0), d_v);
            }
          dot_rows<R, Arch>(q_rows[r], k.data() + (j0 + jj) * k.stride(0), k.stride(0), d, sr + jj);
          LONGCTX_UNROLL for (int u = 0; u < R; ++u) sr[jj + u] *= scale * key_scale(j0 + jj + u);
        }
        for (; jj < nk; ++jj)
          sr[jj] = scale * key_scale(j0 + jj) * dot<Arch>(q_rows[r], k.data() + (j0 + jj) * k.stride(0), d);
        overflowed = has_neg_inf<Arch>(sr, nk);  // before the mask's -inf (exact_row.hpp)
        detail::mask_row(mask, q_pos[r], j0, nk, nkp, kind == tile_kind::partial, sr);
      }
      if (logits_rows && logits_rows[r]) std::memcpy(logits_rows[r] + j0, sr, sizeof(float) * std::size_t(nk));
      alpha[r] = softmax_block<Arch>(st[r], sr, nkp);
      if (overflowed) poison_row(st[r]);
    }
    // Row-scaled V (q8): P's column j times row j's scale, after the
    // softmax state took the unscaled P; V is then read as its integers.
    constexpr bool row_scaled = kv_storage_traits<KV>::row_prefix > 0;
    if constexpr (row_scaled) {
      float vscale[BKV];
      for (index_t jj = 0; jj < nk; ++jj) vscale[jj] = kv_storage_traits<KV>::row_scale(v.data() + (j0 + jj) * v.stride(0));
      for (index_t r = 0; r < rows; ++r)
        for (index_t jj = 0; jj < nk; ++jj) s[r * BKV + jj] *= vscale[jj];
    }
    // V read in place, converted in registers, when its rows are whole
    // vectors; a d_v tail is packed (zero-padded) into scratch.
    if (d_v % W == 0) {
      block_gemm<Arch, true>(rows, dvp, nk, s, BKV, v.data() + j0 * v.stride(0), v.stride(0), acc, dvp, alpha);
      continue;
    }
    detail::pack_v<Arch, !row_scaled>(v.data() + j0 * v.stride(0), v.stride(0), d_v, dvp, nk, nkp, vp);
    block_gemm<Arch, true>(rows, dvp, nkp, s, BKV, vp, dvp, acc, dvp, alpha);
  }
}

LONGCTX_NAMESPACE_END
