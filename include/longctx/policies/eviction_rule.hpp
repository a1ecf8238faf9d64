// What a bounded cache asks of an eviction rule (DESIGN.md section 5): a
// small struct with its own parameters and, in the cache's per-row
// statistics, its own state. The cache calls it with an eviction_context
// and does the rest (attention, scores, moving rows). A rule:
//   name, row_stats (floats per row it owns), scored (needs attention
//   probabilities), check(budget, keep_current, where), add_to(fingerprint),
//   observed_rows(c): the last rows of a c-token prefill segment whose
//     aggregated probabilities it needs (the kernel emits their logits),
//   accumulate(ctx, lane, i, c, p, nv, scores): row i of c, p over nv keys,
//   is_protected(ctx, lane, slot), priority(ctx, lane, slot, scores): rows
//     leave lowest priority first, ties oldest first;
// optional hooks: finish_scores(ctx, lane, scores) after a prefill
// segment's rows; victim(ctx, lane, scores) -> slot, when it has a faster
// search than the generic argmin.
#pragma once

#include <concepts>

#include "kv_cache.hpp"
#include "snapshot.hpp"

LONGCTX_NAMESPACE_BEGIN

// TOVA may drop the token it has just decoded (paper, default); `kept`
// always keeps it and drops the lowest-scored older row instead.
enum class current_token { evictable, kept };

struct eviction_context {
  kv_cache& cache;
  index_t budget;
  bool keep_current;
  index_t newest() const noexcept { return cache.next_position() - 1; }
};

template <class R>
concept eviction_rule =
    std::is_aggregate_v<R> &&
    requires(const R& r, const eviction_context& c, index_t i, const float* p, float* scores, config_fingerprint& f) {
      { R::name } -> std::convertible_to<const char*>;
      { R::row_stats } -> std::convertible_to<index_t>;
      { R::scored } -> std::convertible_to<bool>;
      r.check(i, true, "where");
      r.add_to(f);
      { r.observed_rows(i) } -> std::convertible_to<index_t>;
      r.accumulate(c, i, i, i, p, i, scores);
      { r.is_protected(c, i, i) } -> std::same_as<bool>;
      { r.priority(c, i, i, p) } -> std::same_as<float>;
    };

LONGCTX_NAMESPACE_END
