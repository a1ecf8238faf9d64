// The exact-row fallback behind the value contract (README, Safety: finite
// inputs give finite, correct outputs). The fast kernels compute logits and
// the weighted sum of V in float, which fails on inputs of extreme
// magnitude in three ways, none of which ordinary inputs come near:
//   - a logit scale q.k beyond FLT_MAX saturates (softmax_block), so keys
//     that overflow tie although one of them should win;
//   - a dot product that overflows with mixed signs is inf - inf = NaN, and
//     a row whose every logit overflows below -FLT_MAX looks fully masked;
//   - the unnormalised sum of weighted V rows passes FLT_MAX although the
//     average (the output) fits.
// The kernels flag such a row from its softmax state and output at the end
// (needs_exact_row: a few compares per row) and the caller recomputes only
// that row here, in double: |q.k| <= d FLT_MAX^2 fits a double, so logits,
// softmax and the weighted average are exact to double rounding, then
// rounded once. A row whose inputs hold NaN or inf is flagged too and comes
// out NaN here as well (never a silent finite). Cost: two passes over the
// row's visible keys (three when d_v > 64), only for flagged rows.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

#include "kv_storage.hpp"
#include "online_softmax.hpp"
#include "../simd/vec.hpp"
#include "../tensor/view.hpp"

LONGCTX_NAMESPACE_BEGIN

// Whether n floats are all finite: x - x is 0 for a finite x and NaN for an
// infinity or a NaN, and a sum holding one NaN is NaN in any order. One
// vector pass, no early exit, four independent sums (the chunk kernels test
// rows of d_v = 1536 this way, once per row).
template <arch_tag Arch>
inline bool row_finite(const float* x, index_t n) noexcept {
  using V = vec<float, Arch>;
  constexpr index_t W = Arch::width;
  V a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
  const auto z = [](V v) { return v - v; };
  index_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    a0 = a0 + z(V::load(x + i)), a1 = a1 + z(V::load(x + i + W));
    a2 = a2 + z(V::load(x + i + 2 * W)), a3 = a3 + z(V::load(x + i + 3 * W));
  }
  for (; i + W <= n; i += W) a0 = a0 + z(V::load(x + i));
  if (i < n) a1 = a1 + z(V::load_partial(x + i, int(n - i)));
  return reduce_add((a0 + a1) + (a2 + a3)) == 0.0f;
}

// Whether a finished row (state st, output o of d_v floats) must be
// recomputed by exact_attention_row: a saturated or NaN running max, no
// visible key counted (every logit below -FLT_MAX, or a truly masked row,
// which the recomputation finds and leaves as it is), or an output that is
// not finite.

template <arch_tag Arch>
inline bool needs_exact_row(const softmax_state& st, const float* o, index_t d_v) noexcept {
  return !(st.m < std::numeric_limits<float>::max()) || st.l == 0.0f || !row_finite<Arch>(o, d_v);
}

// Whether n computed logits (before the mask writes its -inf) hold a -inf:
// a dot product that overflowed below -FLT_MAX (or an infinite input). Such
// a key would read as masked, although its exact logit may be the row's
// largest (mixed signs: the float sum met the overflowed term first); the
// caller poisons the row's state (poison_row) so it is recomputed. A
// compare, a select and a max per vector of logits, about 1/d of the Q K^T
// work. Compare and select, not a max over -s: a NaN logit beside the -inf
// (a mixed-sign overflow, inf - inf, on a key the mask then hides) would
// make max drop the running value, and the -inf would go unseen (fuzz).
template <arch_tag Arch>
inline bool has_neg_inf(const float* s, index_t n) noexcept {
  using V = vec<float, Arch>;
  constexpr index_t W = V::width;
  const V lowest = V::broadcast(std::numeric_limits<float>::lowest()), one = V::broadcast(1.0f);
  V hit = V::zero();  // 1 in each lane that saw a -inf; never NaN
  index_t j = 0;
  for (; j + W <= n; j += W) hit = max(hit, select(cmp_lt(V::load(s + j), lowest), one, V::zero()));
  if (j < n) hit = max(hit, select(cmp_lt(V::load_partial(s + j, int(n - j)), lowest), one, V::zero()));
  return reduce_max(hit) == 1.0f;
}
// Marks a row for exact_attention_row: a NaN state stays NaN through every
// later block and merge, and needs_exact_row flags it.
inline void poison_row(softmax_state& st) noexcept { st.m = st.l = std::numeric_limits<float>::quiet_NaN(); }

namespace detail {
// Element c of a stored row, exactly, as a double (q8: times the row scale).
template <kv_storage KV>
inline double stored(const KV* row, index_t c) noexcept {
  return double(kv_storage_traits<KV>::to_float(row[c])) * double(kv_storage_traits<KV>::row_scale(row));
}
}  // namespace detail

// Row i of one head, exactly: q (d floats, unscaled), k (n_kv, d), v
// (n_kv, d_v) in storage KV, mask bound to the call. Writes o (d_v floats),
// *lse if lse is not null, and, if logits is not null, the row's visible
// logits (scale q.k rounded to float, saturated at +-FLT_MAX as the fast
// kernels write them; masked entries are left as the kernel wrote them,
// -inf). A fully masked row gets output 0 and lse -inf, as in the kernels.
// q_factor (d floats, or null): query channel c is q[c] q_factor[c], taken
// in double (per-channel key scales, whose float product may overflow).
template <kv_storage KV, std::size_t D, std::size_t DV, class BoundMask>
void exact_attention_row(const float* q, matrix_view<const KV, D> k, matrix_view<const KV, DV> v, float scale,
                         const BoundMask& mask, index_t i, float* o, float* lse, float* logits,
                         const float* q_factor = nullptr) noexcept {
  const index_t d = k.extent(1), d_v = v.extent(1);
  const index_t hi = std::min(k.extent(0), mask.keys_for_rows(i, i + 1).hi);
  const auto logit = [&](index_t j) {
    const KV* kr = k.data() + j * k.stride(0);
    double s = 0.0;
    for (index_t c = 0; c < d; ++c) s += double(q[c]) * (q_factor ? double(q_factor[c]) : 1.0) * detail::stored(kr, c);
    return s * double(scale);
  };
  constexpr double big = std::numeric_limits<float>::max();
  // Pass 1: the maximum (NaN wins: a NaN logit makes the row NaN).
  double m = -std::numeric_limits<double>::infinity();
  bool any = false, nan = false;
  for (index_t j = 0; j < hi; ++j) {
    if (!mask.visible(i, j)) continue;
    const double s = logit(j);
    any = true;
    nan |= s != s;
    m = std::max(m, s);
    if (logits) logits[j] = float(std::clamp(s, -big, big));  // NaN stays NaN
  }
  if (!any) {
    std::fill(o, o + d_v, 0.0f);
    if (lse) *lse = neg_inf;
    return;
  }
  if (nan || !std::isfinite(m)) {  // non-finite input reached this row
    std::fill(o, o + d_v, std::numeric_limits<float>::quiet_NaN());
    if (lse) *lse = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  // Pass 2 (per block of up to 64 columns): l and the weighted sum of V.
  constexpr index_t cols = 64;
  double acc[cols];
  double l = 0.0;
  for (index_t c0 = 0; c0 < std::max<index_t>(d_v, 1); c0 += cols) {
    const index_t w = std::min(cols, d_v - c0);
    std::fill(acc, acc + cols, 0.0);
    double lc = 0.0;
    for (index_t j = 0; j < hi; ++j) {
      if (!mask.visible(i, j)) continue;
      const double p = std::exp(logit(j) - m);
      lc += p;
      const KV* vr = v.data() + j * v.stride(0);
      for (index_t c = 0; c < w; ++c) acc[c] += p * detail::stored(vr, c0 + c);
    }
    for (index_t c = 0; c < w; ++c) o[c0 + c] = float(acc[c] / lc);
    l = lc;
  }
  if (lse) *lse = float(std::clamp(m + std::log(l), -big, big));
}

LONGCTX_NAMESPACE_END
