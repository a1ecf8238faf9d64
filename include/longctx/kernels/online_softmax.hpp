// Online softmax (Milakov & Gimelshein; FlashAttention): a row's running max m
// and sum l of exp(logit - m) over the keys seen so far, the rescale when m
// grows, the merge of two partial results through their log-sum-exp, and
// probabilities recovered from logits and the LSE without a second pass.
#pragma once

#include <cmath>
#include <limits>

#include "../simd/math.hpp"
#include "../tensor/extents.hpp"

LONGCTX_NAMESPACE_BEGIN

inline constexpr float neg_inf = -std::numeric_limits<float>::infinity();

struct softmax_state {
  float m = neg_inf;  // running max of the logits seen (-inf: none visible yet)
  float l = 0.0f;     // sum of exp(logit - m)

  // log-sum-exp of everything seen; -inf for a fully masked row. Written as
  // l == 0 (not l > 0) so a NaN from non-finite input propagates, never hides.
  float lse() const noexcept { return l == 0.0f ? neg_inf : m + std::log(l); }
  // Factor for the accumulated output at the end: 1/l, or 0 for an empty row
  // (fully masked rows give output 0, never 0/0); NaN stays NaN.
  float inv_l() const noexcept { return l == 0.0f ? 0.0f : 1.0f / l; }
};

namespace detail {
template <arch_tag Arch, bool FindNegInf>
inline float softmax_block(softmax_state& st, float* s, index_t n_padded,
                           bool* saw_neg_inf) noexcept {
  using V = vec<float, Arch>;
  constexpr index_t W = V::width;
  // Logits saturate at FLT_MAX (a finite |q k| beyond float's range would
  // be +inf, and inf - inf NaN); min(big, x) keeps NaN (both operand orders
  // of every backend's min return x when x is NaN, as this one is written).
  const V big = V::broadcast(std::numeric_limits<float>::max());
  V mv = V::broadcast(neg_inf), lo = V::zero();
  for (index_t j = 0; j < n_padded; j += W) {
    const V x = min(big, V::load(s + j));
    x.store(s + j);
    mv = max(mv, x);
    if constexpr (FindNegInf)
      lo = min(lo, x);  // -inf stays unless a later NaN in its lane replaces it
  }
  if constexpr (FindNegInf)
    *saw_neg_inf = !(reduce_max(V::zero() - lo) <= std::numeric_limits<float>::max());
  const float m_new = std::max(st.m, reduce_max(mv));
  if (m_new == neg_inf) {  // all masked so far (or NaN, which x86 max drops)
    bool nan = false;
    for (index_t j = 0; j < n_padded; ++j) nan |= s[j] != s[j];
    if (nan) {  // non-finite input: poison the row rather than return a silent 0
      st.m = st.l = std::numeric_limits<float>::quiet_NaN();
      return st.l;
    }
    for (index_t j = 0; j < n_padded; j += W) V::zero().store(s + j);
    return 1.0f;
  }
  // exp(s - m) as 2^((s - m) log2 e): s - m is exact when s is near m (the
  // weights that matter) and rounded once otherwise, as exp's argument was;
  // one more rounding by log2 e, then exp2_weight (simd/math.hpp), about
  // half the work of exp: the softmax was 12% (fp32) and 19% (bf16 engine)
  // of a causal d = 128 prefill.
  const V mn = V::broadcast(m_new), log2e = V::broadcast(1.44269504088896341f);
  V sum = V::zero();
  for (index_t j = 0; j < n_padded; j += W) {
    const V p = exp2_weight((V::load(s + j) - mn) * log2e);
    p.store(s + j);
    sum = sum + p;
  }
  const float alpha = exp_scalar(st.m - m_new);  // exp(-inf) = 0 on the first block
  st.l = st.l * alpha + reduce_add(sum);
  st.m = m_new;
  return alpha;
}
}  // namespace detail

// Fold a block of logits (already scaled, masked entries -inf) into `st`:
// p[j] = exp(s[j] - m_new) (0 or a normal float: exp2_weight) is written over s, and the factor the row's output
// accumulator must be multiplied by is returned (exp(m_old - m_new), 1 when
// nothing is visible yet). s must hold a multiple of W floats (padding -inf).
template <arch_tag Arch>
inline float softmax_block(softmax_state& st, float* s, index_t n_padded) noexcept {
  return detail::softmax_block<Arch, false>(st, s, n_padded, nullptr);
}

// softmax_block for a block no mask touched, with exact_row.hpp's test for
// a dot product that overflowed to -inf folded into the max pass (one min
// per vector instead of has_neg_inf's pass: the softmax bookkeeping shares
// Intel AVX-512's two vector ports with the FMAs). Sets saw_neg_inf when s
// held a -inf, and may set it, or not, when s also held a NaN: a NaN logit
// of an unmasked block makes the row's state NaN, which needs_exact_row
// flags either way. Results otherwise bit for bit softmax_block's. A block
// the mask touched needs has_neg_inf before the mask writes its -inf.
template <arch_tag Arch>
inline float softmax_block_unmasked(softmax_state& st, float* s, index_t n_padded,
                                    bool& saw_neg_inf) noexcept {
  return detail::softmax_block<Arch, true>(st, s, n_padded, &saw_neg_inf);
}

// Merge partial result b into a: outputs (d_v floats, unnormalised, i.e.
// sum_j exp(s_j - m) v_j) and states. Order-dependent in rounding only; the
// kernels always merge in a fixed order.
template <arch_tag Arch>
inline void merge_partial(softmax_state& a, float* oa, const softmax_state& b, const float* ob,
                          index_t d_v) noexcept {
  using V = vec<float, Arch>;
  if (b.l == 0.0f) return;
  const float m = std::max(a.m, b.m);
  const float fa = a.l == 0.0f ? 0.0f : exp_scalar(a.m - m);
  const float fb = exp_scalar(b.m - m);
  constexpr index_t W = V::width;
  const V va = V::broadcast(fa), vb = V::broadcast(fb);
  index_t j = 0;
  for (; j + W <= d_v; j += W) fma(V::load(ob + j), vb, V::load(oa + j) * va).store(oa + j);
  if (j < d_v) {
    const int t = static_cast<int>(d_v - j);
    fma(V::load_partial(ob + j, t), vb, V::load_partial(oa + j, t) * va).store_partial(oa + j, t);
  }
  a.l = a.l * fa + b.l * fb;
  a.m = m;
}

/// Softmax probabilities of one query row from its scaled logits and its LSE
/// (decode()'s `logits` and `lse`, or row_logits): p[j] = exp(logit[j] -
/// lse). One pass, vectorised, O(n); 0 for a fully masked row (lse = -inf).
/// `p` may be `logits` (in place).
/// \param logits the row's n logits
/// \param lse the row's log-sum-exp
/// \param p n probabilities out
/// \param n the key count
template <arch_tag Arch = default_arch>
inline void probabilities_from_logits(const float* logits, float lse, float* p, index_t n) noexcept {
  using V = vec<float, Arch>;
  constexpr index_t W = V::width;
  if (lse == neg_inf) {
    for (index_t j = 0; j < n; ++j) p[j] = 0.0f;
    return;
  }
  const V l = V::broadcast(lse), big = V::broadcast(std::numeric_limits<float>::max());  // saturated as in softmax_block
  index_t j = 0;
  for (; j + W <= n; j += W) exp(min(big, V::load(logits + j)) - l).store(p + j);
  if (j < n) {
    const int t = static_cast<int>(n - j);
    exp(min(big, V::load_partial(logits + j, t)) - l).store_partial(p + j, t);
  }
}

LONGCTX_NAMESPACE_END
