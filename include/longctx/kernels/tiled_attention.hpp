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
#include "gemm_engine.hpp"
#include "micro_gemm.hpp"
#include "tiling.hpp"
#include "online_softmax.hpp"
#include "../runtime/scratch.hpp"
#include "../tensor/view.hpp"

LONGCTX_NAMESPACE_BEGIN

// Floats of scratch tiled_attention_block<E> needs: S, the accumulator,
// the rescale factors, and the engine's own (packed Q, bf16 P).
template <gemm_engine E>
constexpr index_t tiled_attention_scratch(index_t d, index_t d_v) noexcept {
  constexpr index_t BQ = E::block_q, BKV = E::block_kv;
  const index_t q_floats = round_up(BQ * E::q_ld(d) * index_t(sizeof(typename E::operand)), cache_line) / 4;
  return q_floats + BQ * BKV + BQ * E::acc_ld(d_v) + round_up(BQ, 16) + E::scratch_floats(d, d_v);
}

// K^T packed per key tile in the engine's layout (f32: tile t is a (d,
// block_kv) row-major block holding keys [t block_kv, (t + 1) block_kv) as
// columns, zero-padded). Packed once per KV head and call, then read by
// every query block (and every query head of a GQA group): the transpose is
// paid once, not once per query block.
template <gemm_engine E>
constexpr index_t packed_kt_elems(index_t n_kv, index_t d) noexcept {
  return (n_kv + E::block_kv - 1) / E::block_kv * E::kt_tile(d);
}

// V packed likewise, when it cannot be read in place (see attention()):
// tile t at t v_tile(d_v), in the engine's layout (f32: (n_kv rounded up to
// block_kv, d_v rounded up to W) row-major, zero-padded, converted to float).
template <gemm_engine E>
constexpr index_t packed_v_elems(index_t n_kv, index_t d_v) noexcept {
  return (n_kv + E::block_kv - 1) / E::block_kv * E::v_tile(d_v);
}

// Packs key tile `tile` of k (n_kv, d) into kt_tiles (see packed_kt_elems).
template <gemm_engine E, class KV, std::size_t D>
void pack_kt_tile(matrix_view<const KV, D> k, index_t tile, typename E::operand* kt_tiles) noexcept {
  const index_t d = k.extent(1), j0 = tile * E::block_kv, nk = std::min(E::block_kv, k.extent(0) - j0);
  E::template pack_k<KV>(k.data() + j0 * k.stride(0), k.stride(0), d, nk, kt_tiles + tile * E::kt_tile(d));
}

// Packs value tile `tile` of v (n_kv, d_v) into v_tiles (see packed_v_elems).
template <gemm_engine E, class KV, std::size_t DV>
void pack_v_tile(matrix_view<const KV, DV> v, index_t tile, typename E::operand* v_tiles) noexcept {
  const index_t d_v = v.extent(1), j0 = tile * E::block_kv, nk = std::min(E::block_kv, v.extent(0) - j0);
  E::template pack_v<KV>(v.data() + j0 * v.stride(0), v.stride(0), d_v, nk, v_tiles + tile * E::v_tile(d_v));
}

// Rows [i0, i1) (at most block_q) of one head, by engine E. q (n_q, d), kt:
// the head's packed K^T (pack_kt_tile, n_kv keys), vp: its V, tile t at vp +
// t v_tile_stride with row stride ldv, either packed (pack_v_tile: v_tile,
// v_ld) or, for an engine that reads_v_in_place, the caller's float rows
// when they are whole, aligned vectors; o (n_q, d_v); lse: n_q
// floats with stride lse_stride, or null. Inner strides must be 1 (checked
// by the caller). scratch: tiled_attention_scratch floats.
// logits (w, n_kv), if its data is not null: row r receives query row
// logits_first + r's scaled, masked logits, for the rows of [i0, i1) it
// holds: the very floats the online softmax consumed (S after the mask,
// before exp), -inf for keys of skipped tiles and outside keys_for_rows.
// Returns the rows (bit r: row i0 + r) that needs_exact_row flags: the
// caller recomputes them with exact_attention_row (exact_row.hpp).
template <gemm_engine E, class BoundMask, std::size_t D, std::size_t DV>
std::uint64_t tiled_attention_block(matrix_view<const float, D> q, const typename E::operand* kt,
                                    const typename E::operand* vp, index_t v_tile_stride, index_t ldv, index_t n_kv,
                           matrix_view<float, DV> o, float* lse,
                           index_t lse_stride, float scale, const BoundMask& mask, index_t i0,
                           index_t i1, float* scratch, matrix_view<float> logits = {},
                           index_t logits_first = 0) noexcept {
  using Arch = typename E::arch;
  using V = vec<float, Arch>;
  using T = typename E::operand;
  constexpr index_t W = V::width;
  constexpr index_t BQ = E::block_q, BKV = E::block_kv;
  const index_t d = q.extent(1), d_v = o.extent(1);
  const index_t dvp = E::acc_ld(d_v);
  const index_t nb = i1 - i0;
  LONGCTX_ASSERT(nb > 0 && nb <= BQ);
  static_assert(BQ <= 64, "the flagged rows are returned as a 64-bit mask");
  T* qs = reinterpret_cast<T*>(scratch);
  float* s = scratch + round_up(BQ * E::q_ld(d) * index_t(sizeof(T)), cache_line) / 4;
  float* acc = s + BQ * BKV;
  float* alpha = acc + BQ * dvp;
  float* engine_scratch = alpha + round_up(BQ, 16);
  std::array<softmax_state, BQ> st{};

  E::begin();  // the engine's per-task state (AMX: the tile configuration)
  for (index_t r = 0; r < nb; ++r) E::load_q(q.data() + (i0 + r) * q.stride(0), d, scale, qs + r * E::q_ld(d));
  std::fill(qs + nb * E::q_ld(d), qs + BQ * E::q_ld(d), T{});  // rows a tile engine reads past nb
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

    E::qk(nb, nk, d, qs, kt + (j0 / BKV) * E::kt_tile(d), s);
    // Rows with a -inf logit before the mask (exact_row.hpp): found by a
    // pass before the mask writes its -inf, or, in a tile no mask touches
    // (most of them), by softmax_block_unmasked's max pass.
    std::uint64_t overflowed = 0;
    const bool masked = kind == tile_kind::partial || nk < nkp;
    if (masked)
      for (index_t r = 0; r < nb; ++r) {
        if (has_neg_inf<Arch>(s + r * BKV, nk)) overflowed |= std::uint64_t(1) << r;
        detail::mask_row(mask, i0 + r, j0, nk, nkp, kind == tile_kind::partial, s + r * BKV);
      }
    if (lg) {  // S is final: softmax_block reads exactly these floats, then writes P over them
      hide(j0);
      for (index_t r = l0; r < l1; ++r)
        std::memcpy(lg + (r - l0) * ldl + j0, s + r * BKV, sizeof(float) * std::size_t(nk));
      written = j1;
    }
    for (index_t r = 0; r < nb; ++r) {
      bool neg = false;
      if (masked)
        alpha[r] = softmax_block<Arch>(st[std::size_t(r)], s + r * BKV, nkp);
      else
        alpha[r] = softmax_block_unmasked<Arch>(st[std::size_t(r)], s + r * BKV, nkp, neg);
      if (neg || (overflowed >> r & 1)) poison_row(st[std::size_t(r)]);
    }
    E::pv(nb, nk, d_v, s, vp + (j0 / BKV) * v_tile_stride, ldv, acc, alpha, engine_scratch);
  }
  if (lg) hide(n_kv);  // skipped tiles at the end, and keys past keys_for_rows
  E::end();

  std::uint64_t flagged = 0;
  for (index_t r = 0; r < nb; ++r) {
    const V inv = V::broadcast(st[std::size_t(r)].inv_l());
    float* orow = o.data() + (i0 + r) * o.stride(0);
    const float* arow = acc + r * dvp;
    index_t c = 0;
    for (; c + W <= d_v; c += W) (V::load(arow + c) * inv).store(orow + c);
    if (c < d_v) (V::load(arow + c) * inv).store_partial(orow + c, int(d_v - c));
    if (lse) lse[(i0 + r) * lse_stride] = st[std::size_t(r)].lse();
    if (needs_exact_row<Arch>(st[std::size_t(r)], orow, d_v)) flagged |= std::uint64_t(1) << r;
  }
  return flagged;
}

LONGCTX_NAMESPACE_END
