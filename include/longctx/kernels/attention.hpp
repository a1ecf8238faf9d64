// Exact multi-head softmax attention, O = softmax(scale Q K^T + mask) V:
//   attention(): tiled prefill, tasks = (batch, head, block of query rows);
//   decode():    split-KV for a few query rows over a long cache, tasks =
//                (batch, KV head, key chunk), merged through the LSE.
// Shapes (logical axes; any strides with a contiguous last axis, so both the
// (b, h, n, d) and (b, n, h, d) memory layouts work without copies):
//   q (b, h, n_q, d), k (b, h_kv, n_kv, d), v (b, h_kv, n_kv, d_v),
//   o (b, h, n_q, d_v), lse (b, h, n_q) optional; decode: logits (b, h, n_q, n_kv)
//   optional; prefill: row_logits (b, h, w, n_kv) of rows [first, first + w) optional.
// GQA/MQA: h % h_kv == 0, query head i reads KV head i / (h / h_kv).
// Fully masked rows give o = 0 and lse = -inf. Results are bit-identical for
// any executor and thread count.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../runtime/executor.hpp"
#include "../runtime/scratch.hpp"
#include "compute.hpp"
#include "split_kv_decode.hpp"
#include "tiled_attention.hpp"

LONGCTX_NAMESPACE_BEGIN

/// The optional log-sum-exp output of attention() and decode(), (b, h,
/// n_q): lse = log sum_j exp(scale q.k_j) over the visible keys, -inf for a
/// fully masked row. A default (null) view: not requested. Any strides (the
/// last axis included).
using lse_view = strided_view<float, dextents<index_t, 3>>;  // (b, h, n_q)

/// Prefill's optional pre-softmax logits of query rows [first, first + w),
/// such as SnapKV's observation window (the last w prompt rows) or TOVA's last
/// prompt row, so a policy never recomputes Q K^T. logits(bi, hi, r, j) is
/// row first + r's logit scale q.k for key j, bit-identical to the float the
/// kernel's online softmax consumed (the same rounding as its weights: with
/// the LSE, probabilities_from_logits() gives the row's softmax without a
/// second pass over K), and -inf wherever the mask hides key j. Null data:
/// not requested, and the kernel's results and speed are those without it.
/// Only the query blocks holding rows of [first, first + w) write logits:
/// b h w n_kv floats, no extra pass.
struct row_logits {
  index_t first = 0;  ///< the first query row whose logits are written
  tensor4_view<float> logits{};  ///< (b, h, w, n_kv), unit inner stride; null: none
};

namespace detail {

// Logical sizes of one attention call (after the boundary checks).
struct attention_shape {
  index_t b, h, h_kv, n_q, n_kv, d, d_v, group;
};

template <class KV>
attention_shape shape_of_call(const tensor4_view<const float>& q, const tensor4_view<const KV>& k,
                              const tensor4_view<const KV>& v) noexcept {
  const index_t h_kv = k.extent(1);
  return {q.extent(0), q.extent(1), h_kv, q.extent(2), k.extent(2), q.extent(3), v.extent(3),
          h_kv > 0 ? q.extent(1) / h_kv : 1};
}

// True when prefill can read V (b, h_kv, n_kv, d_v) in place: float storage,
// d_v whole vectors, and every row starting on a vector boundary.
template <arch_tag Arch, class KV>
bool readable_in_place(const tensor4_view<const KV>& v) noexcept {
  if constexpr (!kv_storage_traits<KV>::gemm_operand) {
    return false;
  } else {
    constexpr index_t W = Arch::width;
    const auto address = reinterpret_cast<std::uintptr_t>(v.data());
    return v.extent(3) % W == 0 && address % (W * sizeof(float)) == 0 && v.stride(0) % W == 0 &&
           v.stride(1) % W == 0 && v.stride(2) % W == 0;
  }
}

// Calls f.template operator()<D, DV>() with static head dims for the common
// sizes, so the inner loops have compile-time trip counts.
template <class F>
void dispatch_head_dims(index_t d, index_t d_v, F&& f) {
  if (d == 64 && d_v == 64) return f.template operator()<64, 64>();
  if (d == 128 && d_v == 128) return f.template operator()<128, 128>();
  return f.template operator()<dynamic_extent, dynamic_extent>();
}

}  // namespace detail

// Tiled prefill by GEMM engine E, unchecked: the caller (attention() in
// longctx/attention.hpp, or a policy after its own checks) guarantees the
// contract above, and for `rows`: 0 <= first, first + w <= n_q, logits (b,
// h, w, n_kv) with a unit inner stride. Only the query blocks that hold rows
// of [first, first + w) write logits; the others pay one null test.
template <gemm_engine E, kv_storage KV, mask_descriptor Mask, executor Exec>
void prefill_attention_with(tensor4_view<const float> q, tensor4_view<const KV> k, tensor4_view<const KV> v,
                            tensor4_view<float> o, float scale, const Mask& mask, lse_view lse, Exec&& exec,
                            row_logits rows = {}) {
  using Arch = typename E::arch;
  using T = typename E::operand;
  const auto a = detail::shape_of_call(q, k, v);
  if (a.b * a.h * a.n_q == 0) return;
  constexpr index_t BQ = E::block_q, BKV = E::block_kv;
  const index_t q_blocks = (a.n_q + BQ - 1) / BQ;
  const auto bound = mask.bind(a.n_q, a.n_kv);
  const index_t kv_tiles = (a.n_kv + BKV - 1) / BKV;
  E::prepare();  // throws where the engine cannot run here (AMX: no OS permission)
  // K^T packed once per KV head and call, in parallel, then read by every
  // query block of every query head of the group. V likewise, unless the
  // micro-kernel can read it in place: float rows of whole vectors at
  // vector-aligned addresses (split rows cost up to 20% here). The scratch
  // (per calling thread, kept for the next call) is as large as K, or K + V.
  const bool direct_v = E::reads_v_in_place && detail::readable_in_place<Arch>(v);
  const index_t kt_head = packed_kt_elems<E>(a.n_kv, a.d);
  const index_t v_head = direct_v ? 0 : packed_v_elems<E>(a.n_kv, a.d_v);
  T* kt = detail::thread_scratch<detail::caller_tag, T>(a.b * a.h_kv * (kt_head + v_head));
  T* vp = kt + a.b * a.h_kv * kt_head;
  const index_t ldv = direct_v ? v.stride(2) : E::v_ld(a.d_v);
  const index_t v_tile_stride = direct_v ? BKV * v.stride(2) : E::v_tile(a.d_v);
  detail::dispatch_head_dims(a.d, a.d_v, [&]<std::size_t D, std::size_t DV>() {
    exec.parallel_for(a.b * a.h_kv * kv_tiles, [&](index_t task) {
      const index_t bk = task / kv_tiles, bi = bk / a.h_kv, hk = bk % a.h_kv;
      pack_kt_tile<E, KV>(matrix_view<const KV, D>(k.head(bi, hk)), task % kv_tiles, kt + bk * kt_head);
      if (!direct_v)
        pack_v_tile<E, KV>(matrix_view<const KV, DV>(v.head(bi, hk)), task % kv_tiles, vp + bk * v_head);
    });
    exec.parallel_for(a.b * a.h * q_blocks, [&](index_t task) {
      const index_t blk = task % q_blocks, bh = task / q_blocks;
      const index_t bi = bh / a.h, hi = bh % a.h, hk = hi / a.group;
      float* lse_row = lse.data() ? &lse(bi, hi, 0) : nullptr;
      const index_t i0 = blk * BQ, i1 = std::min(a.n_q, i0 + BQ);
      if (a.n_kv == 0) {  // nothing to attend to: every row is fully masked
        for (index_t i = i0; i < i1; ++i) {
          for (index_t c = 0; c < a.d_v; ++c) o(bi, hi, i, c) = 0.0f;
          if (lse_row) lse_row[i * lse.stride(2)] = neg_inf;
        }
        return;
      }
      const index_t bk = bi * a.h_kv + hk;
      const T* v_rows = vp + bk * v_head;
      if constexpr (E::reads_v_in_place && kv_storage_traits<KV>::gemm_operand)
        if (direct_v) v_rows = &v(bi, hk, 0, 0);
      const matrix_view<float> lg =
          rows.logits.data() ? matrix_view<float>(rows.logits.head(bi, hi)) : matrix_view<float>{};
      std::uint64_t flagged = tiled_attention_block<E>(
          matrix_view<const float, D>(q.head(bi, hi)), kt + bk * kt_head, v_rows, v_tile_stride, ldv, a.n_kv,
          matrix_view<float, DV>(o.head(bi, hi)), lse_row, lse.data() ? lse.stride(2) : 0, scale, bound, i0, i1,
          detail::thread_scratch<detail::task_tag>(tiled_attention_scratch<E>(a.d, a.d_v)), lg, rows.first);
      for (; flagged; flagged &= flagged - 1) {  // rows of extreme magnitude (exact_row.hpp)
        const index_t i = i0 + std::countr_zero(flagged);
        const bool has_logits = lg.data() && i >= rows.first && i < rows.first + lg.extent(0);
        exact_attention_row(&q(bi, hi, i, 0), matrix_view<const KV, D>(k.head(bi, hk)),
                            matrix_view<const KV, DV>(v.head(bi, hk)), scale, bound, i, &o(bi, hi, i, 0),
                            lse_row ? lse_row + i * lse.stride(2) : nullptr,
                            has_logits ? lg.data() + (i - rows.first) * lg.stride(0) : nullptr);
      }
    });
  });
}

// Tiled prefill, unchecked (as prefill_attention_with), by the engine
// `compute` selects for Arch (compute.hpp: bf16_engine_for; f32 where Arch
// has no 16-bit engine).
template <arch_tag Arch, kv_storage KV, mask_descriptor Mask, executor Exec>
void prefill_attention(tensor4_view<const float> q, tensor4_view<const KV> k, tensor4_view<const KV> v,
                       tensor4_view<float> o, float scale, const Mask& mask, lse_view lse,
                       Exec&& exec, row_logits rows = {}, compute_precision compute = compute_precision::f32) {
  if constexpr (has_bf16_engine<Arch>)
    if (compute == compute_precision::bf16)
      return prefill_attention_with<bf16_engine_for<Arch>, KV>(q, k, v, o, scale, mask, lse, exec, rows);
  prefill_attention_with<f32_engine<Arch>, KV>(q, k, v, o, scale, mask, lse, exec, rows);
}

// Split-KV decode for a few query rows (typically n_q = 1) per head over a
// long cache; results agree with prefill_attention to rounding. `logits`, if
// given, receives the scaled, masked logits (b, h, n_q, n_kv): with lse,
// probabilities_from_logits() gives a row's softmax without a second pass
// over K (TOVA scores).
// Unchecked, like prefill_attention (checked: decode() in longctx/attention.hpp).
template <arch_tag Arch, kv_storage KV, mask_descriptor Mask, executor Exec>
void decode_attention(tensor4_view<const float> q, tensor4_view<const KV> k, tensor4_view<const KV> v,
                      tensor4_view<float> o, float scale, const Mask& mask, lse_view lse, Exec&& exec,
                      tensor4_view<float> logits) {
  const auto a = detail::shape_of_call(q, k, v);
  if (a.b * a.h * a.n_q == 0) return;
  if (a.n_kv == 0) {  // nothing to attend to (k and v may have null data): every row is fully masked
    for (index_t bi = 0; bi < a.b; ++bi)
      for (index_t hi = 0; hi < a.h; ++hi)
        for (index_t i = 0; i < a.n_q; ++i) {
          for (index_t c = 0; c < a.d_v; ++c) o(bi, hi, i, c) = 0.0f;
          if (lse.data()) lse(bi, hi, i) = neg_inf;
        }
    return;
  }
  const index_t rows = a.group * a.n_q;  // all query rows of one KV group share the K/V stream
  const index_t chunk = decode_chunk_size<Arch>(a.n_kv);
  const index_t n_chunks = std::max<index_t>(1, (a.n_kv + chunk - 1) / chunk);
  const index_t dvp = round_up(a.d_v, Arch::width);
  const auto bound = mask.bind(a.n_q, a.n_kv);
  // Partials: (b, h_kv, chunk) x (rows x dvp) outputs and rows states.
  const index_t n_parts = a.b * a.h_kv * n_chunks * rows;
  float* part_o = detail::thread_scratch<detail::caller_tag>(n_parts * dvp);
  softmax_state* part_st = detail::thread_scratch<detail::caller_tag, softmax_state>(n_parts);
  std::fill(part_o, part_o + n_parts * dvp, 0.0f);
  std::fill(part_st, part_st + n_parts, softmax_state{});
  // Row r of KV head (bi, hk) is query row r % n_q of head hk * group + r / n_q.
  const float** q_ptr = detail::thread_scratch<detail::caller_tag, const float*>(a.b * a.h_kv * rows);
  float** l_ptr = detail::thread_scratch<detail::caller_tag, float*>(logits.data() ? a.b * a.h_kv * rows : 0);
  index_t* q_pos = detail::thread_scratch<detail::caller_tag, index_t>(rows);
  for (index_t bk = 0; bk < a.b * a.h_kv; ++bk)
    for (index_t r = 0; r < rows; ++r) {
      const index_t bi = bk / a.h_kv, hi = (bk % a.h_kv) * a.group + r / a.n_q, i = r % a.n_q;
      q_ptr[bk * rows + r] = &q(bi, hi, i, 0);
      if (logits.data()) l_ptr[bk * rows + r] = &logits(bi, hi, i, 0);
      q_pos[r] = i;
    }
  detail::dispatch_head_dims(a.d, a.d_v, [&]<std::size_t D, std::size_t DV>() {
    exec.parallel_for(a.b * a.h_kv * n_chunks, [&](index_t task) {
      const index_t c = task % n_chunks, bk = task / n_chunks;
      const index_t bi = bk / a.h_kv, hk = bk % a.h_kv;
      const float** q_rows = q_ptr + bk * rows;
      float** l_rows = logits.data() ? l_ptr + bk * rows : nullptr;
      decode_chunk<Arch, KV>(q_rows, q_pos, rows, matrix_view<const KV, D>(k.head(bi, hk)),
                             matrix_view<const KV, DV>(v.head(bi, hk)), scale, bound, c * chunk,
                             std::min(a.n_kv, (c + 1) * chunk), part_o + task * rows * dvp,
                             part_st + task * rows, l_rows,
                             detail::thread_scratch<detail::task_tag>(decode_chunk_scratch<Arch>(rows, a.d_v)));
    });
  });
  // Merge in chunk order (deterministic), normalise, write o and lse.
  using V = vec<float, Arch>;
  for (index_t bk = 0; bk < a.b * a.h_kv; ++bk) {
    const index_t bi = bk / a.h_kv, hk = bk % a.h_kv;
    float* base_o = part_o + bk * n_chunks * rows * dvp;
    softmax_state* base_st = part_st + bk * n_chunks * rows;
    for (index_t r = 0; r < rows; ++r) {
      float* acc = base_o + r * dvp;
      softmax_state st = base_st[r];
      for (index_t c = 1; c < n_chunks; ++c)
        merge_partial<Arch>(st, acc, base_st[c * rows + r], base_o + (c * rows + r) * dvp, a.d_v);
      const index_t hi = hk * a.group + r / a.n_q, i = r % a.n_q;
      const V inv = V::broadcast(st.inv_l());
      float* orow = &o(bi, hi, i, 0);
      index_t col = 0;
      for (; col + Arch::width <= a.d_v; col += Arch::width) (V::load(acc + col) * inv).store(orow + col);
      if (col < a.d_v) (V::load(acc + col) * inv).store_partial(orow + col, int(a.d_v - col));
      if (lse.data()) lse(bi, hi, i) = st.lse();
      if (needs_exact_row<Arch>(st, orow, a.d_v))  // extreme magnitudes (exact_row.hpp)
        exact_attention_row(&q(bi, hi, i, 0), k.head(bi, hk), v.head(bi, hk), scale, bound, i, orow,
                            lse.data() ? &lse(bi, hi, i) : nullptr, logits.data() ? &logits(bi, hi, i, 0) : nullptr);
    }
  }
}

LONGCTX_NAMESPACE_END
