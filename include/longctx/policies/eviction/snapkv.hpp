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
// Re-selection (reselect_every = N > 0, kvpress's decoding wrapper adapted
// to a fixed budget): at every one-token step whose position p has
// (p + 1) % N == 0, each row's vote is replaced by the pooled sum of the
// probabilities the last `window` queries gave it, so later evictions follow
// what the recent queries attend to, not what the prompt voted. The rule
// then keeps a ring of `window` probabilities per row besides the vote
// (1 + window floats per row instead of 1).
#pragma once

#include <algorithm>
#include <vector>

#include "../bounded_cache.hpp"
#include "../eviction_rule.hpp"

LONGCTX_NAMESPACE_BEGIN

/// SnapKV's smoothing of the votes along the keys: max pooling (the
/// authors' code) or average pooling (zero padded, divided by `kernel`).
LONGCTX_UNTAGGED_BEGIN
enum class snapkv_pooling { max, average };
LONGCTX_UNTAGGED_END

/// SnapKV (the header comment has the whole rule): at prefill the last
/// `window` prompt queries vote for every key with their probabilities, the
/// votes are pooled along the keys, and the window plus the top budget -
/// window keys stay; while decoding each query adds its vote and the lowest
/// vote outside the `window` newest positions leaves. Row statistics: the
/// vote (1 float; 1 + window when re-selecting). make_state requires window
/// in [1, budget], an odd kernel >= 1, reselect_every >= 0.
struct snapkv_rule {
  index_t window = 32;  ///< observation window: the last prompt queries that vote
  index_t kernel = 7;   ///< pooling width (odd), 1: no smoothing
  snapkv_pooling pooling = snapkv_pooling::max;  ///< max (authors) or average
  index_t reselect_every = 0;  ///< > 0: re-select from the last `window` queries every N tokens

  static constexpr const char* name = "snapkv";
  static constexpr index_t row_stats = 1;  // the row's vote (see stats_per_row)
  static constexpr bool scored = true;
  // The vote, then (re-selecting) the ring: slot 1 + p % window holds the
  // probability query p gave the row.
  index_t stats_per_row() const noexcept { return reselect_every > 0 ? 1 + window : 1; }

  void check(index_t budget, bool, const char* where) const {
    require(window >= 1 && window <= budget, where, "rule.window",
            "the observation window must be in [1, budget = ", budget, "], got ", window);
    require(kernel >= 1 && kernel % 2 == 1, where, "rule.kernel", "the pooling width must be odd and >= 1, got ",
            kernel);
    require(pooling == snapkv_pooling::max || pooling == snapkv_pooling::average, where, "rule.pooling",
            "unknown snapkv_pooling value");
    require(reselect_every >= 0, where, "rule.reselect_every", "must be >= 0 (0: never), got ", reselect_every);
  }
  void add_to(config_fingerprint& f) const { f.add(window).add(kernel).add(pooling).add(reselect_every); }
  index_t observed_rows(index_t) const noexcept { return window; }
  // Row i of a c-row segment (query position newest - (c - 1 - i)) votes.
  void accumulate(const eviction_context& c, index_t lane, index_t i, index_t rows, const float* p, index_t nv,
                  float*) const {
    const index_t rs = stats_per_row();
    float* v = c.cache.stats(lane);
    for (index_t j = 0; j < nv; ++j) v[j * rs] += p[j];
    if (reselect_every == 0) return;
    const index_t pos = c.newest() - (rows - 1 - i), ring = 1 + pos % window;
    for (index_t j = 0; j < nv; ++j) v[j * rs + ring] = p[j];
    if (rows == 1 && (pos + 1) % reselect_every == 0) {
      for (index_t s = 0; s < c.cache.size(); ++s) {
        float sum = 0.0f;
        for (index_t t = 1; t <= window; ++t) sum += v[s * rs + t];
        v[s * rs] = sum;
      }
      pool(c, lane);
    }
  }
  // After a prefill segment: the votes pooled along the key axis.
  void finish_scores(const eviction_context& c, index_t lane, float*) const { pool(c, lane); }
  bool is_protected(const eviction_context& c, index_t lane, index_t slot) const noexcept {
    const index_t pos = c.cache.positions(lane)[slot], newest = c.newest();
    return pos > newest - window || (c.keep_current && pos == newest);
  }
  float priority(const eviction_context& c, index_t lane, index_t slot, const float*) const noexcept {
    return c.cache.stats(lane)[slot * stats_per_row()];
  }

 private:
  void pool(const eviction_context& c, index_t lane) const {
    if (kernel == 1) return;
    const std::vector<index_t> order = c.cache.temporal_order(lane);
    const index_t n = index_t(order.size()), half = kernel / 2, rs = stats_per_row();
    float* v = c.cache.stats(lane);
    std::vector<float> raw(order.size());
    for (index_t r = 0; r < n; ++r) raw[std::size_t(r)] = v[order[std::size_t(r)] * rs];
    for (index_t r = 0; r < n; ++r) {
      const index_t lo = std::max<index_t>(0, r - half), hi = std::min<index_t>(n - 1, r + half);
      float x = pooling == snapkv_pooling::max ? raw[std::size_t(lo)] : 0.0f;
      for (index_t t = lo; t <= hi; ++t)
        x = pooling == snapkv_pooling::max ? std::max(x, raw[std::size_t(t)]) : x + raw[std::size_t(t)];
      v[order[std::size_t(r)] * rs] = pooling == snapkv_pooling::max ? x : x / float(kernel);
    }
  }
};

/// SnapKV on the bounded cache, float K/V: snapkv{.budget = 1024, .rule =
/// {.window = 32}}. Its score_aggregation default is the layer mean
/// (mean_all_heads); mean_kv_group is the authors' per-group choice.
using snapkv = bounded_cache<snapkv_rule>;
LONGCTX_ASSERT_SEQUENCE_POLICY(snapkv);

LONGCTX_NAMESPACE_END
