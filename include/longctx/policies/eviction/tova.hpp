// TOVA (arXiv 2401.06104): the row with the lowest attention of the newest
// query (aggregated over heads, see score_aggregation) leaves. Prefill ranks
// by the last prompt row's probabilities (official code).
#pragma once

#include <algorithm>

#include "../../kernels/topk.hpp"
#include "../eviction_rule.hpp"

LONGCTX_NAMESPACE_BEGIN

/// TOVA: each step the row with the lowest attention probability of the
/// newest query (aggregated over heads by score_aggregation) leaves, ties
/// the oldest; it may be the newest token itself (current_token::evictable,
/// the paper). A prefill keeps the top budget rows by the last prompt row's
/// probabilities. No parameters, no row statistics.
struct tova_rule {
  static constexpr const char* name = "tova";
  static constexpr index_t row_stats = 0;
  static constexpr bool scored = true;

  index_t observed_rows(index_t) const noexcept { return 1; }
  void accumulate(const eviction_context&, index_t, index_t i, index_t c, const float* p, index_t nv,
                  float* scores) const noexcept {
    if (i == c - 1) std::copy_n(p, nv, scores);
  }
  bool is_protected(const eviction_context& c, index_t lane, index_t slot) const noexcept {
    return c.keep_current && c.cache.positions(lane)[slot] == c.newest();
  }
  float priority(const eviction_context&, index_t, index_t slot, const float* scores) const noexcept {
    return scores[slot];
  }
  // The newest row is the last slot (appended just now): the vectorised
  // argmin over the others, ties to the older position.
  template <arch_tag Arch>
  index_t victim(const eviction_context& c, index_t lane, const float* scores) const noexcept {
    const kv_rows& k = c.cache;
    const bool slots = k.options().layout == kv_layout::slots;
    return argmin<Arch>(scores, c.keep_current ? k.size() - 1 : k.size(), slots ? k.positions(lane) : nullptr);
  }
};

LONGCTX_NAMESPACE_END
