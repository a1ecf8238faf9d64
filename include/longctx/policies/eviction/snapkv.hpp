// SnapKV (arXiv 2404.14469): at prefill, the last `window` prompt queries
// vote for every key with their softmax probabilities (aggregated over heads
// as the cache's score_aggregation says: mean_kv_group is the authors'
// per-head-group choice, mean_all_heads the layer mean); the votes are
// smoothed along the key axis (temporal order) by a 1-D pooling of width
// `kernel` (max pooling in the authors' code, average as an option, zero
// padded as torch's pool1d with padding kernel / 2); the window itself is
// always kept and the top budget - window other keys by pooled vote.
// The row statistic is the vote. Decoding (the paper compresses once and
// does not say): each new query adds its probabilities to the votes, the
// `window` most recent positions are protected, and the lowest vote
// outside them leaves, so the budget holds for any stream.
// Not implemented: re-selection from the last `window` decode queries every
// N steps (kvpress's decoding wrapper).
#pragma once

#include <algorithm>
#include <vector>

#include "../bounded_cache.hpp"
#include "../eviction_rule.hpp"

LONGCTX_NAMESPACE_BEGIN

LONGCTX_UNTAGGED_BEGIN
enum class snapkv_pooling { max, average };
LONGCTX_UNTAGGED_END

struct snapkv_rule {
  index_t window = 32;  // observation window: the last prompt queries that vote
  index_t kernel = 7;   // pooling width (odd), 1: no smoothing
  snapkv_pooling pooling = snapkv_pooling::max;

  static constexpr const char* name = "snapkv";
  static constexpr index_t row_stats = 1;  // the row's vote
  static constexpr bool scored = true;

  void check(index_t budget, bool, const char* where) const {
    require(window >= 1 && window <= budget, where, "rule.window",
            "the observation window must be in [1, budget = ", budget, "], got ", window);
    require(kernel >= 1 && kernel % 2 == 1, where, "rule.kernel", "the pooling width must be odd and >= 1, got ",
            kernel);
    require(pooling == snapkv_pooling::max || pooling == snapkv_pooling::average, where, "rule.pooling",
            "unknown snapkv_pooling value");
  }
  void add_to(config_fingerprint& f) const { f.add(window).add(kernel).add(pooling); }
  index_t observed_rows(index_t) const noexcept { return window; }
  void accumulate(const eviction_context& c, index_t lane, index_t, index_t, const float* p, index_t nv,
                  float*) const noexcept {
    float* v = c.cache.stats(lane);
    for (index_t j = 0; j < nv; ++j) v[j] += p[j];
  }
  // After a prefill segment: the votes pooled along the key axis.
  void finish_scores(const eviction_context& c, index_t lane, float*) const {
    if (kernel == 1) return;
    const std::vector<index_t> order = c.cache.temporal_order(lane);
    const index_t n = index_t(order.size()), half = kernel / 2;
    float* v = c.cache.stats(lane);
    std::vector<float> raw(order.size());
    for (index_t r = 0; r < n; ++r) raw[std::size_t(r)] = v[order[std::size_t(r)]];
    for (index_t r = 0; r < n; ++r) {
      const index_t lo = std::max<index_t>(0, r - half), hi = std::min<index_t>(n - 1, r + half);
      float x = pooling == snapkv_pooling::max ? raw[std::size_t(lo)] : 0.0f;
      for (index_t t = lo; t <= hi; ++t)
        x = pooling == snapkv_pooling::max ? std::max(x, raw[std::size_t(t)]) : x + raw[std::size_t(t)];
      v[order[std::size_t(r)]] = pooling == snapkv_pooling::max ? x : x / float(kernel);
    }
  }
  bool is_protected(const eviction_context& c, index_t lane, index_t slot) const noexcept {
    const index_t pos = c.cache.positions(lane)[slot], newest = c.newest();
    return pos > newest - window || (c.keep_current && pos == newest);
  }
  float priority(const eviction_context& c, index_t lane, index_t slot, const float*) const noexcept {
    return c.cache.stats(lane)[slot];
  }
};

using snapkv = bounded_cache<snapkv_rule>;
LONGCTX_ASSERT_SEQUENCE_POLICY(snapkv);

LONGCTX_NAMESPACE_END
