// Argmin and top-k selection over a row of float scores (KV-cache eviction).
// Deterministic: among equal scores the row with the smallest `order` key
// (its absolute position: the oldest) is the minimum, so eviction by repeated
// argmin and one top-k keep the same set. NaN ranks below every number (a
// poisoned row is evicted first, never silently kept with a random choice).
#pragma once

#include <algorithm>
#include <limits>

#include "../simd/vec.hpp"
#include "../tensor/extents.hpp"

LONGCTX_NAMESPACE_BEGIN

namespace detail {

// (score, order) "less": NaN first, then by value, then by order.
inline bool score_less(float a, index_t oa, float b, index_t ob) noexcept {
  const bool na = a != a, nb = b != b;
  if (na != nb) return na;
  if (!na && a != b) return a < b;
  return oa < ob;
}

// Vectorised minimum of x[0, n); `finite` is false when any element is NaN or
// infinite (then the caller falls back to the exact scalar rule: min drops NaN
// lanes on x86, and x - x flags NaN and +-inf alike).
template <arch_tag Arch>
inline float min_and_check(const float* x, index_t n, bool& finite) noexcept {
  using V = vec<float, Arch>;
  constexpr index_t W = V::width;
  V m0 = V::broadcast(std::numeric_limits<float>::infinity()), m1 = m0;
  V f0 = V::zero(), f1 = V::zero();
  index_t j = 0;
  // Two independent chains hide the min latency.
  for (; j + 2 * W <= n; j += 2 * W) {
    const V a = V::load(x + j), b = V::load(x + j + W);
    m0 = min(a, m0);
    m1 = min(b, m1);
    f0 = f0 + (a - a);
    f1 = f1 + (b - b);
  }
  for (; j + W <= n; j += W) {
    const V a = V::load(x + j);
    m0 = min(a, m0);
    f0 = f0 + (a - a);
  }
  float m = reduce_max(-min(m0, m1)) * -1.0f;  // reduce_min via max of negation
  float f = reduce_add(f0 + f1);
  for (; j < n; ++j) {
    m = x[j] < m ? x[j] : m;
    f += x[j] - x[j];
  }
  finite = f == 0.0f;
  return m;
}

}  // namespace detail

// Index of the smallest x[j], j in [0, n); among equal values the smallest
// order[j] (order == nullptr: the smallest j). n must be > 0. One vectorised
// pass for the minimum, one scalar pass over the matches (cheap: a compare
// per element, the branch almost never taken).
template <arch_tag Arch = default_arch>
inline index_t argmin(const float* x, index_t n, const index_t* order = nullptr) noexcept {
  LONGCTX_ASSERT(n > 0);
  bool finite = true;
  const float m = detail::min_and_check<Arch>(x, n, finite);
  index_t best = -1;
  if (finite) {
    for (index_t j = 0; j < n; ++j) {
      if (x[j] != m) continue;
      if (!order) return j;
      if (best < 0 || order[j] < order[best]) best = j;
    }
    return best;
  }
  best = 0;  // non-finite input: the exact (NaN-first) rule, scalar
  for (index_t j = 1; j < n; ++j)
    if (detail::score_less(x[j], order ? order[j] : j, x[best], order ? order[best] : best)) best = j;
  return best;
}

// Keeps the k rows that rank highest by (score, order) (equivalently, drops
// the n - k lowest, ties dropping the smallest order first: the same rows
// repeated argmin eviction would drop for fixed scores). Writes the kept
// indices to keep[0, k) sorted by increasing order (temporal order).
// `keep` must hold n indices (the whole array is workspace; kernels do not
// allocate). Returns k clamped to [0, n]. O(n) selection + O(k log k) sort;
// runs once per prefill/segment, so it stays scalar.
inline index_t top_k(const float* x, index_t n, index_t k, index_t* keep, const index_t* order = nullptr) noexcept {
  k = std::clamp<index_t>(k, 0, n);
  for (index_t j = 0; j < n; ++j) keep[j] = j;
  const auto ord = [&](index_t j) { return order ? order[j] : j; };
  const auto greater = [&](index_t a, index_t b) { return detail::score_less(x[b], ord(b), x[a], ord(a)); };
  if (k < n) std::nth_element(keep, keep + k, keep + n, greater);
  std::sort(keep, keep + k, [&](index_t a, index_t b) { return ord(a) < ord(b); });
  return k;
}

LONGCTX_NAMESPACE_END
