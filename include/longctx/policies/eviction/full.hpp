// Keep everything: the unbounded reference the bounded rules are compared
// with (every row is protected, so nothing leaves whatever the budget).
#pragma once

#include "../eviction_rule.hpp"

LONGCTX_NAMESPACE_BEGIN

/// Keeps every row (every row is protected, whatever the budget): the rule
/// of `dense`, the unbounded baseline.
struct full_rule {
  static constexpr const char* name = "full";
  static constexpr index_t row_stats = 0;
  static constexpr bool scored = false;
  static constexpr bool unbounded = true;

  bool is_protected(const eviction_context&, index_t, index_t) const noexcept { return true; }
  float priority(const eviction_context&, index_t, index_t, const float*) const noexcept { return 0.0f; }
};

LONGCTX_NAMESPACE_END
