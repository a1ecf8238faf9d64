// Sliding window: the oldest row leaves (positions alone decide).
#pragma once

#include "../eviction_rule.hpp"

LONGCTX_NAMESPACE_BEGIN

/// Sliding window: the oldest row leaves, so the last `budget` positions
/// stay (window_cache). No scores are computed.
struct window_rule {
  static constexpr const char* name = "window";
  static constexpr index_t row_stats = 0;
  static constexpr bool scored = false;

  bool is_protected(const eviction_context&, index_t, index_t) const noexcept { return false; }
  float priority(const eviction_context&, index_t, index_t, const float*) const noexcept { return 0.0f; }
};

LONGCTX_NAMESPACE_END
