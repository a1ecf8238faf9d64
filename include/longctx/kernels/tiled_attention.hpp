// Tiled softmax attention for one head and one block of query rows
// (FlashAttention-2 order): for each key tile, S = (scale Q) K^T by the
// micro-kernel against packed K^T, mask, online softmax, O = alpha O + P V
// against packed V. Masked-out tiles are skipped, partial tiles masked
// exactly per element.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

#include "exact_row.hpp"
#include "kv_storage.hpp"
#include "pack.hpp"
#include "mask.hpp"
#include "micro_gemm.hpp"
#include "tiling.hpp"
#include "online_softmax.hpp"
#include "../tensor/view.hpp"

LONGCTX_NAMESPACE_BEGIN

// Floats of scratch tiled_attention_block needs.
template <arch_tag Arch>
constexpr index_t tiled_attention_scratch(index_t d, index_t d_v) noexcept {
  constexpr index_t BQ = attention_blocking<Arch>::block_q, BKV = attention_blocking<Arch>::block_kv;
  const index_t dvp = round_up(d_v, Arch::width);
  return BQ * d + BQ * BKV + BQ * dvp + BQ;
}

// K^T packed per key tile: tile t is a (d, block_kv) row-major block holding
// keys [t block_kv, (t + 1) block_kv) as columns, zero-padded. Packed once per
// KV head and call, then read by every query block (and every query head of a
// GQA group): the transpose is paid once, not once per query block.
template <arch_tag Arch>
constexpr index_t packed_kt_floats(index_t n_kv, index_t d) noexcept {
  constexpr index_t BKV = attention_blocking<Arch>::block_kv;
  return (n_kv + BKV - 1) / BKV * d * BKV;
}

// V packed likewise, when it cannot be read in place (see attention()):
// (n_kv rounded up to block_kv, d_v rounded up to W) row-major, zero-padded,
// converted to float, in aligned memory.
template <arch_tag Arch>
constexpr index_t packed_v_floats(index_t n_kv, index_t d_v) noexcept {
  constexpr index_t BKV = attention_blocking<Arch>::block_kv;
  return (n_kv + BKV - 1) / BKV * BKV * round_up(d_v, Arch::width);
}

// Packs key tile `tile` of k (n_kv, d) into kt_tiles (see packed_kt_floats).
template <arch_tag Arch, class KV, std::size_t D>
void pack_kt_tile(matrix_view<const KV, D> k, index_t tile, float* kt_tiles) noexcept {
  constexpr index_t BKV = attention_blocking<Arch>::block_kv;
  const index_t d = k.extent(1), j0 = tile * BKV, nk = std::min(BKV, k.extent(0) - j0);
  detail::pack_kt(k.data() + j0 * k.stride(0), k.stride(0), d, nk, BKV, kt_tiles + tile * d * BKV, BKV);
}

// Packs value tile `tile` of v (n_kv, d_v) into v_tiles (see packed_v_floats).
template <arch_tag Arch, class KV, std::size_t DV>
void pack_v_tile(matrix_view<const KV, DV> v, index_t tile, float* v_tiles) noexcept {
  constexpr index_t BKV = attention_blocking<Arch>::block_kv;
  const index_t d_v = v.extent(1), dvp = round_up(d_v, Arch::width);
  const index_t j0 = tile * BKV, nk = std::min(BKV, v.extent(0) - j0);
  detail::pack_v<Arch>(v.data() + j0 * v.stride(0), v.stride(0), d_v, dvp, nk, BKV, v_tiles + j0 * dvp);
}

// Rows [i0, i1) (at most block_q) of one head. q (n_q, d), kt: the head's
// packed K^T (pack_kt_tile, n_kv keys), vp: its V with row stride ldv, either
// packed (pack_v_tile, ldv = d_v rounded up to W) or the caller's float rows
// when they are whole, aligned vectors; o (n_q, d_v); lse: n_q
// floats with stride lse_stride, or null. Inner strides must be 1 (checked
// by the caller). scratch: tiled_attention_scratch floats.
// logits (w, n_kv), if its data is not null: row r receives query row
// logits_first + r's scaled, masked logits, for the rows of [i0, i1) it
// holds: the very floats the online softmax consumed (S after the mask,
// before exp), -inf for keys of skipped tiles and outside keys_for_rows.
// Returns the rows (bit r: row i0 + r) that needs_exact_row flags: the
// caller recomputes them with exact_attention_row (exact_row.hpp).
template <arch_tag Arch, class BoundMask, std::size_t D, std::size_t DV>
std::uint64_t tiled_attention_block(matrix_view<const float, D> q, const float* kt, const float* vp, index_t ldv, index_t n_kv,
                           matrix_view<float, DV> o, float* lse,
                           index_t lse_stride, float scale, const BoundMask& mask, index_t i0,
                           index_t i1, float* scratch, matrix_view<float> logits = {},
                           index_t logits_first = 0) noexcept {
  using V = vec<float, Arch>;
  constexpr index_t W = V::width;
  constexpr index_t BQ = attention_blocking<Arch>::block_q, BKV = attention_blocking<Arch>::block_kv;
  const index_t d = q.extent(1), d_v = o.extent(1);
  const index_t dvp = round_up(d_v, W);
  const index_t nb = i1 - i0;
  LONGCTX_ASSERT(nb > 0 && nb <= BQ);
  static_assert(BQ <= 64, "the flagged rows are returned as a 64-bit mask");
  float* qs = scratch;
  float* s = qs + BQ * d;
  float* acc = s + BQ * BKV;
  float* alpha = acc + BQ * dvp;
  std::array<softmax_state, BQ> st{};

  const V vscale = V::broadcast(scale);
  for (index_t r = 0; r < nb; ++r) {
    const float* qr = q.data() + (i0 + r) * q.stride(0);
    float* dst = qs + r * d;
    index_t p = 0;
    for (; p + W <= d; p += W) (V::load(qr + p) * vscale).store(dst + p);
    if (p < d) (V::load_partial(qr + p, int(d - p)) * vscale).store_partial(dst + p, int(d - p));
  }
  std::memset(acc, 0, sizeof(float) * std::size_t(nb * dvp));

  // Logit rows [l0, l1) of this block (relative to i0): lg is null when
  // none was asked for here, and then the tile loop pays one test per tile.
  const index_t l0 = std::clamp<index_t>(logits_first - i0, 0, nb);
  const index_t l1 = std::clamp<index_t>(logits_first + logits.extent(0) - i0, l0, nb);
  const index_t ldl = logits.stride(0);
  float* const lg =
      logits.data() && l0 < l1 ? logits.data() + (i0 + l0 - logits_first) * ldl : nullptr;
  index_t written = 0;  // logit columns [0, written) are done for rows [l0, l1)
  const auto hide = [&](index_t j_end) {  // keys [written, j_end) the block never computed
    for (index_t r = l0; r < l1; ++r)
      std::fill(lg + (r - l0) * ldl + written, lg + (r - l0) * ldl + j_end, neg_inf);
  };

  const key_interval keys = mask.keys_for_rows(i0, i1);
  LONGCTX_ASSERT(keys.hi <= n_kv);
  const index_t start = (keys.prefix > 0 ? 0 : keys.lo) / BKV * BKV;
  for (index_t j0 = start; j0 < keys.hi; j0 += BKV) {
    const index_t j1 = std::min(j0 + BKV, keys.hi);
    const tile_kind kind = mask.classify(i0, i1, j0, j1);
    if (kind == tile_kind::empty) continue;
    const index_t nk = j1 - j0, nkp = round_up(nk, W);

    block_gemm<Arch, false>(nb, nkp, d, qs, d, kt + (j0 / BKV) * d * BKV, BKV, s, BKV);
    std::uint64_t overflowed = 0;  // rows with a -inf logit before the mask (exact_row.hpp)
    for (index_t r = 0; r < nb; ++r)
      if (has_neg_inf<Arch>(s + r * BKV, nk)) overflowed |= std::uint64_t(1) << r;
    if (kind == tile_kind::partial || nk < nkp)
      for (index_t r = 0; r < nb; ++r)
        detail::mask_row(mask, i0 + r, j0, nk, nkp, kind == tile_kind::partial, s + r * BKV);
    if (lg) {  // S is final: softmax_block reads exactly these floats, then writes P over them
      hide(j0);
      for (index_t r = l0; r < l1; ++r)
        std::memcpy(lg + (r - l0) * ldl + j0, s + r * BKV, sizeof(float) * std::size_t(nk));
      written = j1;
    }
    for (index_t r = 0; r < nb; ++r) {
      alpha[r] = softmax_block<Arch>(st[std::size_t(r)], s + r * BKV, nkp);
      if (overflowed >> r & 1) poison_row(st[std::size_t(r)]);
    }
    // P's padding columns are 0: k = nk reads no padding row.
    block_gemm<Arch, true>(nb, dvp, nk, s, BKV, vp + j0 * ldv, ldv, acc, dvp, alpha);
  }
  if (lg) hide(n_kv);  // skipped tiles at the end, and keys past keys_for_rows

  std::uint64_t flagged = 0;
  for (index_t r = 0; r < nb; ++r) {
    const V inv = V::broadcast(st[std::size_t(r)].inv_l());
    float* orow = o.data() + (i0 + r) * o.stride(0);
    const float* arow = acc + r * dvp;
    index_t c = 0;
    for (; c + W <= d_v; c += W) (V::load(arow + c) * inv).store(orow + c);
    if (c < d_v) (V::load(arow + c) * inv).store_partial(orow + c, int(d_v - c));
    if (lse) lse[(i0 + r) * lse_stride] = st[std::size_t(r)].lse();
    if (needs_exact_row(st[std::size_t(r)], orow, d_v)) flagged |= std::uint64_t(1) << r;
  }
  return flagged;
}

LONGCTX_NAMESPACE_END
