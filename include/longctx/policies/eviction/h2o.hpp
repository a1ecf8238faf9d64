// H2O (arXiv 2306.14048): a recent window of positions plus heavy hitters
// ranked by the attention every past query gave the row (its sum, or the
// sum over the number of queries that saw it). Row statistics: the sum and
// the count. New rows are protected by the recent window.
#pragma once

#include <algorithm>

#include "../../simd/blas1.hpp"
#include "../eviction_rule.hpp"

LONGCTX_NAMESPACE_BEGIN

/// Ranking by the sum of past attention (paper) or that sum divided by the
/// number of queries that saw the row (older rows saw more queries).
LONGCTX_UNTAGGED_BEGIN
enum class h2o_normalisation { none, query_count };
LONGCTX_UNTAGGED_END

/// H2O: the `recent` newest positions are protected; among the others the
/// row with the least accumulated attention (the sum over every past query,
/// prompt rows included, of its probability, aggregated over heads) leaves,
/// ties the oldest. Row statistics: that sum and the query count (2 floats).
/// A prefill observes every prompt row (their logits in blocks of about 32
/// MB). make_state requires recent in [0, budget] or -1.
struct h2o_rule {
  index_t recent = -1;  ///< recent window in positions; -1: budget / 2 (H2O's even split)
  h2o_normalisation norm = h2o_normalisation::none;  ///< the ranking

  static constexpr const char* name = "h2o";
  static constexpr index_t row_stats = 2;  // accumulated attention, query count
  static constexpr bool scored = true;

  index_t recent_for(index_t budget) const noexcept { return recent < 0 ? budget / 2 : recent; }
  void check(index_t budget, bool, const char* where) const {
    require(recent >= -1 && recent_for(budget) <= budget, where, "rule.recent",
            "H2O recent window must be in [0, budget = ", budget, "] (or -1 for budget / 2), got ", recent);
    require(norm == h2o_normalisation::none || norm == h2o_normalisation::query_count, where, "rule.norm",
            "unknown h2o_normalisation value");
  }
  void add_to(config_fingerprint& f) const { f.add(recent).add(norm); }
  index_t observed_rows(index_t c) const noexcept { return c; }
  void accumulate(const eviction_context& c, index_t lane, index_t, index_t, const float* p, index_t nv,
                  float*) const noexcept {
    float* s = c.cache.stats(lane);
    for (index_t j = 0; j < nv; ++j) {
      s[2 * j] += p[j];
      s[2 * j + 1] += 1.0f;
    }
  }
  bool is_protected(const eviction_context& c, index_t lane, index_t slot) const noexcept {
    const index_t pos = c.cache.positions(lane)[slot], newest = c.newest();
    return pos > newest - recent_for(c.budget) || (c.keep_current && pos == newest);
  }
  float priority(const eviction_context& c, index_t lane, index_t slot, const float*) const noexcept {
    const float* s = c.cache.stats(lane) + 2 * slot;
    return norm == h2o_normalisation::query_count ? s[0] / std::max(s[1], 1.0f) : s[0];
  }
};

LONGCTX_NAMESPACE_END
