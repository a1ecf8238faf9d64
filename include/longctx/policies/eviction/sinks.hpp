// Attention sinks + window (StreamingLLM, arXiv 2309.17453): the first
// `sinks` positions never leave; otherwise the oldest row does.
#pragma once

#include <algorithm>

#include "../eviction_rule.hpp"

LONGCTX_NAMESPACE_BEGIN

/// Attention sinks + window (StreamingLLM): the first `sinks` positions
/// never leave (at most budget of them), otherwise the oldest row does, so
/// the cache holds the sinks and the most recent budget - sinks positions
/// (sinks_cache). No scores are computed. Pair it with
/// position_mode::cache_relative for StreamingLLM's positions.
struct sinks_rule {
  index_t sinks = 4;  ///< protected first positions, >= 0 (StreamingLLM keeps 4)

  static constexpr const char* name = "sinks";
  static constexpr index_t row_stats = 0;
  static constexpr bool scored = false;

  void check(index_t budget, bool keep_current, const char* where) const {
    require(sinks >= 0, where, "rule.sinks", "must be >= 0, got ", sinks);
    require(!(keep_current && sinks >= budget), where, "current", "current_token::kept with sinks ", sinks,
            " >= budget ", budget, " leaves no evictable row");
  }
  void add_to(config_fingerprint& f) const { f.add(sinks); }
  bool is_protected(const eviction_context& c, index_t lane, index_t slot) const noexcept {
    return c.cache.positions(lane)[slot] < std::min(sinks, c.budget);
  }
  float priority(const eviction_context&, index_t, index_t, const float*) const noexcept { return 0.0f; }
};

LONGCTX_NAMESPACE_END
