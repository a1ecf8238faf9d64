// What a bounded cache asks of an eviction rule (DESIGN.md section 5): a
// small struct with its own parameters and, in the cache's per-row
// statistics, its own state. The cache calls it with an eviction_context
// and does the rest (attention, scores, moving rows). A rule has
//   name, row_stats (floats per row it owns), scored (needs attention
//   probabilities), is_protected(ctx, lane, slot) and
//   priority(ctx, lane, slot, scores): rows leave lowest priority first,
//   ties oldest first;
// and, where it needs them, the optional hooks (detected with requires):
//   check(budget, keep_current, where) and add_to(fingerprint) for its
//     parameters;
//   stats_per_row(): the floats per row when they depend on the
//     parameters (row_stats is then the count in the default setting);
//   observed_rows(c): the last rows of a c-token prefill segment whose
//     aggregated probabilities it needs (the kernel emits their logits;
//     none without the hook), and accumulate(ctx, lane, i, c, p, nv,
//     scores): row i of c, p over nv keys, into its statistics or the
//     selection scores;
//   finish_scores(ctx, lane, scores) after a prefill segment's rows;
//   victim<Arch>(ctx, lane, scores) -> slot, a faster search than the
//     generic argmin.
#pragma once

#include <concepts>

#include "kv_cache.hpp"

LONGCTX_NAMESPACE_BEGIN

/// TOVA may drop the token it has just decoded (paper, default); `kept`
/// always keeps it and drops the lowest-scored older row instead (needs
/// budget >= 1; with sinks, budget > sinks).
LONGCTX_UNTAGGED_BEGIN
enum class current_token { evictable, kept };
LONGCTX_UNTAGGED_END

/// What a rule is called with: the cache (positions, statistics), the
/// budget and whether the newest token is kept.
struct eviction_context {
  kv_rows& cache;  ///< the rows, their positions and the rule's statistics
  index_t budget;  ///< rows kept per KV head
  bool keep_current;  ///< current_token::kept
  /// \return the newest token's absolute position
  index_t newest() const noexcept { return cache.next_position() - 1; }
};

/// An eviction rule of a bounded_cache: an aggregate with its parameters,
/// `name` (at most 8 characters: it goes into the 16-byte snapshot kind
/// "kv:<name>/<storage>", checked at compile time), `row_stats`, `scored`,
/// is_protected(ctx, lane, slot) and priority(ctx, lane, slot, scores):
/// rows leave lowest priority first, ties oldest first, protected rows only
/// when no other row can. Optional hooks are listed at the top of policies/eviction_rule.hpp.
/// tova_rule, window_rule, sinks_rule, h2o_rule, snapkv_rule and full_rule
/// are the library's; a new rule is one header.
template <class R>
concept eviction_rule =
    std::is_aggregate_v<R> &&
    requires(const R& r, const eviction_context& c, index_t i, const float* p) {
      { R::name } -> std::convertible_to<const char*>;
      { R::row_stats } -> std::convertible_to<index_t>;
      { R::scored } -> std::convertible_to<bool>;
      { r.is_protected(c, i, i) } -> std::same_as<bool>;
      { r.priority(c, i, i, p) } -> std::same_as<float>;
    };

// The statistics floats per row a rule instance owns.
template <eviction_rule R>
index_t stats_per_row(const R& r) noexcept {
  if constexpr (requires { r.stats_per_row(); })
    return r.stats_per_row();
  else
    return R::row_stats;
}

LONGCTX_NAMESPACE_END
