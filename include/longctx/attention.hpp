// Checked entry points of exact attention (layer 5): every argument is
// validated (shapes, strides, null data, scale, mask) before the unchecked
// kernels of kernels/attention.hpp run. Shapes, masks and the numerical
// contract are documented there.
#pragma once

#include <algorithm>
#include <cmath>

#include "kernels/attention.hpp"
#include "kernels/scale.hpp"  // default_scale(d)

LONGCTX_NAMESPACE_BEGIN

namespace detail {

template <class KV, class Mask>
attention_shape check_attention(const char* where, const tensor4_view<const float>& q,
                                const tensor4_view<const KV>& k, const tensor4_view<const KV>& v,
                                const tensor4_view<float>& o, float scale, const Mask& mask,
                                const lse_view& lse) {
  const attention_shape a{q.extent(0), q.extent(1), k.extent(1), q.extent(2),
                         k.extent(2), q.extent(3), v.extent(3), 0};
  const auto shapes = [&] {
    return concat("q ", shape_of(q), ", k ", shape_of(k), ", v ", shape_of(v), ", o ",
                  shape_of(o));
  };
  require(k.extent(0) == a.b && v.extent(0) == a.b && o.extent(0) == a.b, where, "k/v/o",
          "batch sizes differ: ", shapes);
  require(a.d > 0, where, "q", "head dim d must be > 0: ", shapes);
  require(k.extent(3) == a.d, where, "k", "head dim ", k.extent(3), " != q head dim ", a.d, ": ", shapes);
  require(a.d_v > 0, where, "v", "value dim d_v must be > 0: ", shapes);
  require(a.h_kv > 0 || a.h == 0, where, "k", "no KV heads: ", shapes);
  require(a.h_kv == 0 || a.h % a.h_kv == 0, where, "k", "query heads ", a.h,
          " not a multiple of KV heads ", a.h_kv, ": ", shapes);
  require(v.extent(1) == a.h_kv && v.extent(2) == a.n_kv, where, "v",
          "(h_kv, n_kv) must match k's: ", shapes);
  require(o.extent(1) == a.h && o.extent(2) == a.n_q && o.extent(3) == a.d_v, where, "o",
          "must be (b, h, n_q, d_v): ", shapes);
  require(std::isfinite(scale), where, "scale", "must be finite, got ", scale);
  require_views(where, "q", q, "k", k, "v", v, "o", o);
  // The scratch the kernels size from these extents (packed K^T and V per
  // KV head, decode's partial rows per query head), bounded in double: views
  // with zero strides may declare any extents over a small buffer, and a
  // size that overflowed would be a heap overflow, not an error.
  const double scratch = double(a.b) * double(std::max(a.h, a.h_kv)) * (double(a.n_kv) + 64.0) *
                         (double(a.d) + double(a.d_v) + 32.0) * 4.0;
  require(scratch <= 0x1p47, where, "k", "the call would need about ", scratch,
          " bytes of scratch (more than 2^47): ", shapes);
  require_disjoint(where, "o", o, "q", q, "k", k, "v", v);
  if (lse.data()) {
    require(lse.extent(0) == a.b && lse.extent(1) == a.h && lse.extent(2) == a.n_q, where, "lse",
            "must be (b, h, n_q) = (", a.b, ", ", a.h, ", ", a.n_q, "), got ", shape_of(lse));
    require_data(lse, where, "lse");
    require_disjoint(where, "lse", lse, "q", q, "k", k, "v", v, "o", o);
  }
  require_mask(mask, where);
  attention_shape r = a;
  r.group = a.h_kv > 0 ? a.h / a.h_kv : 1;
  return r;
}

}  // namespace detail

// Tiled prefill. `scale` is explicit (usually default_scale(d)). `rows`, if
// given, receives the scaled, masked logits of query rows [first, first + w)
// in rows.logits (b, h, w, n_kv) (see row_logits).
/// Exact multi-head softmax attention, O = softmax(scale Q K^T + mask) V,
/// by the tiled prefill kernel (FlashAttention-2 order: online softmax over
/// 48-query x 128-key tiles, fully masked tiles skipped).
///
/// Shapes (logical axes; any strides with a contiguous last axis, so the
/// (b, h, n, d) and (b, n, h, d) layouts both work without copies): q (b,
/// h, n_q, d), k (b, h_kv, n_kv, d), v (b, h_kv, n_kv, d_v), o (b, h, n_q,
/// d_v); GQA/MQA: h % h_kv == 0, query head i reads KV head i / (h / h_kv).
/// A fully masked row gives o = 0 and lse = -inf; a NaN in the inputs gives
/// NaN in the rows it reaches; rows of extreme magnitude are recomputed
/// exactly (kernels/exact_row.hpp). Results are bit-identical for any
/// executor and thread count.
///
/// Checked before anything runs: equal batch sizes, d, d_v > 0, k's head
/// dim, h % h_kv, v and o against q and k, a finite scale, the mask's
/// parameters, every view's contiguous last axis and data (addressable, not
/// null unless empty), o, lse and logits disjoint from the inputs, and the
/// scratch the call would need (at most 2^47 bytes).
///
/// Cost: O(b h n_q n_kv (d + d_v)) for no_mask, the visible pairs only for
/// the causal family; K^T (and V unless float rows can be read in place)
/// are packed once per KV head into the calling thread's scratch, about b
/// h_kv n_kv (d + d_v) floats, kept for the next call.
///
/// Thread safety: reentrant; calls on different threads may share inputs
/// but not outputs, and each needs its own thread_pool (or any executor
/// that allows concurrent use).
/// \tparam Arch the SIMD backend (default_arch)
/// \tparam KV the K/V storage type (float, bf16, f16, q8); not deduced:
///   attention<default_arch, bf16>(...)
/// \param q (b, h, n_q, d) queries
/// \param k (b, h_kv, n_kv, d) keys
/// \param v (b, h_kv, n_kv, d_v) values
/// \param o (b, h, n_q, d_v) output, disjoint from every input
/// \param scale the logit scale, finite (usually default_scale(d))
/// \param mask a mask descriptor (no_mask, causal, sliding_window, ...)
/// \param lse (b, h, n_q) log-sum-exp out; default: not requested
/// \param exec the executor (serial by default)
/// \param rows row_logits: the logits of query rows [first, first + w) out;
///   default: not requested
/// \param compute the products' arithmetic: f32 (default) or bf16 (the
///   AMX or AVX512_BF16 engine where compiled, kernels/compute.hpp; bf16
///   operands, fp32 accumulation and softmax; active_engine() names the
///   engine that runs)
/// \throws invalid_argument naming the argument and the shapes
/// \throws unsupported when bf16 selects the AMX engine and the CPU or OS
///   cannot run it
template <arch_tag Arch = default_arch, kv_storage KV = float, mask_descriptor Mask = no_mask,
          executor Exec = serial_executor>
void attention(tensor4_view<const float> q, std::type_identity_t<tensor4_view<const KV>> k,
               std::type_identity_t<tensor4_view<const KV>> v, tensor4_view<float> o, float scale,
               const Mask& mask = {}, lse_view lse = {}, Exec&& exec = {}, row_logits rows = {},
               compute_precision compute = compute_precision::f32) {
  const auto a = detail::check_attention("attention", q, k, v, o, scale, mask, lse);
  const tensor4_view<float>& lg = rows.logits;
  // Anything but the default {0, {}} is a request, and checked as one (a
  // first without a view is a mistake, not a no-op).
  if (lg.data() || !lg.empty() || rows.first != 0) {
    const index_t w = lg.extent(2);
    require(lg.extent(0) == a.b && lg.extent(1) == a.h && lg.extent(3) == a.n_kv, "attention",
            "logits", "must be (b, h, w, n_kv) = (", a.b, ", ", a.h, ", w, ", a.n_kv, "), got ",
            shape_of(lg));
    // Written so that first + w cannot overflow.
    require(rows.first >= 0 && w <= a.n_q && rows.first <= a.n_q - w, "attention", "logits",
            "rows [first, first + w) = [", rows.first, ", ", rows.first, " + ", w,
            ") must lie within the n_q = ", a.n_q, " query rows");
    require_views("attention", "logits", lg);
    require_disjoint("attention", "logits", lg, "q", q, "k", k, "v", v, "o", o);
  }
  require_compute_precision("attention", compute);
  prefill_attention<Arch, KV>(q, k, v, o, scale, mask, lse, exec, rows, compute);
}

// Split-KV decode for a few query rows (typically n_q = 1) per head over a
// long cache. Same contract as attention(); results agree with it to
// rounding. `logits`, if given, receives the scaled, masked logits
// (b, h, n_q, n_kv).
/// Split-KV (flash-decoding) attention for a few query rows, typically n_q
/// = 1, per head over a long cache: the keys are cut into chunks whose size
/// depends on n_kv only, each task streams one chunk of K and V once for all
/// query rows of a KV group, and the partial results merge through their
/// LSE in chunk order. Same shapes, checks, masks and numerical contract as
/// attention(); results agree with it to rounding. Cost: O(b h n_q n_kv (d
/// + d_v)), K and V read once per KV head; scratch: the partials, b h n_q
/// (d_v + 2) floats per chunk. Thread safety as attention().
/// \tparam Arch the SIMD backend (default_arch)
/// \tparam KV the K/V storage type (float, bf16, f16, q8); not deduced
/// \param q (b, h, n_q, d) queries
/// \param k (b, h_kv, n_kv, d) keys
/// \param v (b, h_kv, n_kv, d_v) values
/// \param o (b, h, n_q, d_v) output, disjoint from every input
/// \param scale the logit scale, finite
/// \param mask a mask descriptor
/// \param lse (b, h, n_q) log-sum-exp out; default: not requested
/// \param exec the executor (serial by default)
/// \param logits (b, h, n_q, n_kv) scaled, masked logits out (-inf where
///   masked), contiguous last axis; with lse, probabilities_from_logits()
///   gives each row's softmax; default: not requested
/// \throws invalid_argument naming the argument and the shapes
template <arch_tag Arch = default_arch, kv_storage KV = float, mask_descriptor Mask = no_mask,
          executor Exec = serial_executor>
void decode(tensor4_view<const float> q, std::type_identity_t<tensor4_view<const KV>> k,
            std::type_identity_t<tensor4_view<const KV>> v, tensor4_view<float> o, float scale,
            const Mask& mask = {}, lse_view lse = {}, Exec&& exec = {}, tensor4_view<float> logits = {}) {
  const auto a = detail::check_attention("decode", q, k, v, o, scale, mask, lse);
  if (logits.data()) {
    require(logits.extent(0) == a.b && logits.extent(1) == a.h && logits.extent(2) == a.n_q &&
                logits.extent(3) == a.n_kv,
            "decode", "logits", "must be (b, h, n_q, n_kv) = (", a.b, ", ", a.h, ", ", a.n_q, ", ", a.n_kv,
            "), got ", shape_of(logits));
    require_unit_inner_stride(logits, "decode", "logits");
    require_data(logits, "decode", "logits");
    require_disjoint("decode", "logits", logits, "q", q, "k", k, "v", v, "o", o);
  }
  decode_attention<Arch, KV>(q, k, v, o, scale, mask, lse, exec, logits);
}

LONGCTX_NAMESPACE_END
