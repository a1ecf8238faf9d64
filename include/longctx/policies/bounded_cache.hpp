// A KV cache of at most `budget` rows per KV head, as a sequence policy:
// forward(state, {q, k, v}, o) attends the new tokens over the cache plus
// themselves with the exact kernels, scores the rows from that same
// computation (the kernels' logits and LSE: no second Q K^T) and lets the
// eviction rule (policies/eviction/) choose what leaves. bounded_cache<Rule>
// is the policy; tova, h2o_cache, window_cache, sinks_cache, snapkv are
// its instantiations (tova.hpp, snapkv.hpp).
//   q (b, h, n, d), k (b, h_kv, n, d), v (b, h_kv, n, d_v), o (b, h, n, d_v).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "../kernels/attention.hpp"
#include "../kernels/exact_row.hpp"
#include "../kernels/online_softmax.hpp"
#include "../kernels/scale.hpp"
#include "../kernels/topk.hpp"
#include "../simd/blas1.hpp"
#include "eviction_rule.hpp"
#include "kv_cache.hpp"
#include "protocol.hpp"

LONGCTX_NAMESPACE_BEGIN

/// How the per-head probabilities of a query become one score per row.
/// Official TOVA: the mean over all query heads of the layer, so every KV
/// head evicts the same position. mean_kv_group: each KV head ranks by the
/// mean of its query heads; per_head: each head by its own (needs h == h_kv).
LONGCTX_UNTAGGED_BEGIN
enum class score_aggregation { mean_all_heads, mean_kv_group, per_head };
LONGCTX_UNTAGGED_END

/// What forward() does with a segment of n > 1 tokens: full causal attention
/// over cache + segment and one top-k down to the budget (official TOVA
/// code, the default), one decode step per token (the multi-state RNN
/// definition; equal, bit for bit, to calling forward() token by token), or
/// the first mode on chunks of `chunk` tokens.
LONGCTX_UNTAGGED_BEGIN
enum class prefill_mode { full_then_top_k, token_by_token, chunked };
LONGCTX_UNTAGGED_END

template <eviction_rule Rule, kv_storage KV = float>
struct bounded_cache;

/// The state of a bounded_cache (its state_type): per KV head (lane = b
/// h_kv + hk) at most budget rows of K and V in the storage type `KV`, each
/// row's absolute position and the rule's per-row statistics. Made by
/// bounded_cache::make_state (a default-constructed one is rejected by
/// forward()); movable and copyable (a copy is an independent state). Used
/// by one thread at a time.
template <eviction_rule Rule, kv_storage KV = float>
class bounded_cache_state {
 public:
  /// An empty state no policy accepts; assign one from make_state.
  bounded_cache_state() = default;

  /// \return the dims it was made for, d_v resolved
  const attention_dims& dims() const noexcept { return cache_.dims(); }
  /// The storage: rows, positions, slot order, the rule's row statistics.
  /// \return the KV cache, read-only
  const kv_cache<KV>& cache() const noexcept { return cache_; }
  /// \return rows held per KV head (every lane holds as many)
  index_t size() const noexcept { return cache_.size(); }
  /// \return tokens appended so far: the next token's absolute position
  index_t next_position() const noexcept { return cache_.next_position(); }
  /// \param lane b h_kv + hk, in [0, b h_kv)
  /// \return the absolute positions the lane holds, in temporal order
  std::vector<index_t> held_positions(index_t lane) const { return cache_.held_positions(lane); }
  /// Bytes held (K, V, positions, statistics; under cache_relative a second
  /// copy of K; per-channel key scales): b h_kv (budget + 1) rows from
  /// make_state on, so constant for a bounded cache (a prefill's transient
  /// growth is returned at its end); growing with the stream for dense. O(1).
  /// \return the bytes allocated
  std::size_t footprint() const noexcept { return cache_.footprint(); }

  /// Appends rows without attending to them (a cache warmed from outside: a
  /// prefix computed elsewhere, a benchmark): k (b, h_kv, n, d), v (b, h_kv,
  /// n, d_v) at the next positions, converted to the storage type, rule
  /// statistics 0. The cache may not exceed its budget this way.
  /// \param k (b, h_kv, n, d) keys, as the caller rotated them
  /// \param v (b, h_kv, n, d_v) values
  /// \throws invalid_argument on a shape, stride or data error, or when
  ///   size() + n would exceed the budget; the state is then unchanged
  void preload(tensor4_view<const float> k, tensor4_view<const float> v) {
    constexpr const char* where = "bounded_cache::preload";
    const attention_dims& a = dims();
    const index_t n = k.extent(2);
    require(k.extent(0) == a.b && k.extent(1) == a.h_kv && k.extent(3) == a.d, where, "k",
            "must be (b, h_kv, n, d), got ", shape_of(k));
    require(v.extent(0) == a.b && v.extent(1) == a.h_kv && v.extent(2) == n && v.extent(3) == value_dim(a), where,
            "v", "must be (b, h_kv, n, d_v), got ", shape_of(v));
    require_views(where, "k", k, "v", v);
    require(bounded_cache<Rule, KV>::unbounded || cache_.size() + n <= budget_, where, "k", "would hold ", cache_.size() + n,
            " rows, the budget is ", budget_);
    cache_.append(k, v);
  }

  /// The whole state as one snapshot (kind "kv:<rule>/<storage>", the
  /// configuration fingerprint, the rows in their stored bits, positions,
  /// statistics). O(footprint()).
  /// \return the bytes; restore() of a same-configuration state reads them
  snapshot_bytes snapshot() const {
    snapshot_writer w(kind(), fp_);
    cache_.write(w);
    return std::move(w).finish();
  }
  /// Replaces the contents with a snapshot of a state of the same policy and
  /// dims; anything else throws invalid_argument and leaves this unchanged.
  /// The bytes are untrusted: the envelope, every count and the payload's
  /// invariants (positions distinct and below the next position, at most
  /// budget rows, finite statistics, valid int8 rows, channel scales, RoPE
  /// copies) are checked before the state is replaced.
  /// \param bytes a snapshot() of a state of this policy, storage and dims
  /// \throws invalid_argument naming the argument "bytes" and the field
  void restore(std::span<const std::byte> bytes) {
    snapshot_reader r(bytes, kind(), fp_, "bounded_cache::restore");
    kv_cache<KV> c = kv_cache<KV>::read(r, cache_.dims(), cache_.options(), bounded_cache<Rule, KV>::unbounded ? max_rows : budget_);
    r.finish();
    cache_ = std::move(c);
  }

 private:
  friend struct bounded_cache<Rule, KV>;
  static constexpr index_t max_rows = index_t(1) << 40;
  // Appended piece by piece: GCC 12 warns falsely (-Warray-bounds) on
  // operator+ chains of std::string in some instantiations.
  // "kv:<rule>/<storage>", at most snapshot_kind_bytes (16) characters.
  static std::string kind() {
    static_assert(3 + std::char_traits<char>::length(Rule::name) + 1 +
                          std::char_traits<char>::length(kv_storage_traits<KV>::name) <=
                      detail::snapshot_kind_bytes,
                  "the rule's name is too long for the snapshot kind field (\"kv:<rule>/<storage>\", 16 bytes)");
    std::string k = "kv:";
    k += Rule::name;
    k += '/';
    k += kv_storage_traits<KV>::name;
    return k;
  }

  kv_cache<KV> cache_;
  std::uint64_t fp_ = 0;
  index_t budget_ = 0;  // restore() and preload() bound the rows by it
};

/// A KV cache of at most `budget` rows per KV head as a sequence_policy:
/// each forward() attends the new tokens over the cache plus themselves
/// with the exact kernels (causal, bottom-right), scores the rows from that
/// same computation (the kernels' logits and LSE: no second Q K^T) and lets
/// `Rule` choose which rows leave. tova, h2o_cache, window_cache,
/// sinks_cache, snapkv and dense are its instantiations.
///
/// Shapes: in.q (b, h, n, d), in.k (b, h_kv, n, d), in.v (b, h_kv, n, d_v),
/// o (b, h, n, d_v), any n per call (the prompt, or one token).
///
/// Cost, with S <= budget the rows held: a one-token step (n = 1) is
/// O(b h (S + 1)(d + d_v)) for the attention plus O(b h S) for the scores
/// and the choice, and moves O(d + d_v) per KV head (slots; compacted:
/// O(budget (d + d_v)); cache_relative also re-rotates the younger keys,
/// O(budget d)). A segment of n > 1 tokens under full_then_top_k is causal
/// attention, O(b h n (S + n)(d + d_v)), then one top-k; the rule's observed
/// rows add their logits (TOVA 1 row, SnapKV `window`, H2O all n, in blocks
/// of about 32 MB). State: b h_kv (budget + 1) rows (footprint()), growing
/// transiently to S + n rows during a prefill; dense keeps every row.
///
/// Contract: make_state() checks the dims and every parameter (budget set
/// and >= 0 unless the rule keeps everything, enum values, even d under
/// cache_relative, chunk > 0 under chunked, finite scale, per_channel keys
/// only for q8, per_head only with h == h_kv, the state's bytes <= 2^47) and
/// throws invalid_argument naming the parameter. forward() checks that the
/// state was made by a policy with these parameters (fingerprint) and the
/// call's shapes, strides, data and that `o` aliases no input, before
/// touching the state. Any split of a stream into calls gives the bits of
/// one-token calls under prefill_mode::token_by_token; the default prefill
/// attends a call's tokens in one kernel call and selects once, so its
/// results depend on where the stream is split (dense: to rounding only).
/// Results do not depend on the executor or its thread count.
///
/// Thread safety: the policy is immutable; one policy may serve many states
/// on many threads (its workspace is per thread). A state is used by one
/// thread at a time.
/// \tparam Rule an eviction_rule (tova_rule, h2o_rule, ...)
/// \tparam KV the storage type of the cached rows (float, bf16, f16, q8);
///   q, o and every score stay float
template <eviction_rule Rule, kv_storage KV>
struct bounded_cache {
  // ---- Parameters (designated initialisers: tova{.budget = 512}). --------
  index_t budget = -1;  ///< rows kept per KV head; must be set (>= 0) unless the rule keeps everything
  Rule rule{};          ///< the rule's own parameters (e.g. h2o_rule{.recent = 256})
  score_aggregation aggregation = score_aggregation::mean_all_heads;  ///< how head probabilities become row scores
  current_token current = current_token::evictable;  ///< whether the newest token may leave at once
  kv_layout layout = kv_layout::slots;  ///< where a new row goes (kv_layout)
  position_mode positions = position_mode::absolute;  ///< the positions attention sees (position_mode)
  float rope_theta = 10000.0f;  ///< cache_relative: the RoPE base the caller used
  prefill_mode prefill = prefill_mode::full_then_top_k;  ///< what a call of n > 1 tokens does
  index_t chunk = 0;             ///< prefill_mode::chunked: tokens per chunk (> 0)
  std::optional<float> scale{};  ///< the logit scale; unset: default_scale(d)
  key_scales keys = key_scales::per_token;  ///< per_channel: int8 (q8) storage only (kv_cache.hpp)
  /// The prefill products' arithmetic (calls of n > 1 tokens; decode stays
  /// f32): bf16 runs the AMX or AVX512_BF16 engine (kernels/compute.hpp).
  /// Not in the fingerprint: it changes rounding, not what a state holds.
  compute_precision compute = compute_precision::f32;

  using state_type = bounded_cache_state<Rule, KV>;  ///< what make_state() returns
  using input_type = sequence_input;  ///< q, k, v of one forward() call
  using rule_type = Rule;
  using storage_type = KV;
  static constexpr bool unbounded = requires { Rule::unbounded; };  ///< the rule keeps every row (dense)

  /// An empty cache for `dims`, its budget + 1 rows per KV head allocated.
  /// \param dims b, h, h_kv, d, d_v (0: d)
  /// \return the state, fingerprinted with dims and every parameter
  /// \throws invalid_argument naming the bad parameter or "dims"
  state_type make_state(const attention_dims& dims) const {
    constexpr const char* where = "bounded_cache::make_state";
    require_dims(dims, where);
    check_params(dims, where);
    state_type st;
    st.cache_ = kv_cache<KV>(dims, kv_cache_options{stats_per_row(rule), layout, positions, double(rope_theta),
                                                unbounded ? 16 : budget + 1, keys});
    st.fp_ = fingerprint(dims);
    st.budget_ = budget;
    return st;
  }

  /// \param d the head dim
  /// \return the logit scale used: `scale`, or default_scale(d)
  float scale_for(index_t d) const noexcept { return scale ? *scale : default_scale(d); }

  /// Attends the n tokens of a segment (any n; prompt or one decode token)
  /// over the cache and themselves, writes o, appends the tokens' K and V
  /// (converted to `KV`) and evicts down to the budget. n = 0 does nothing.
  /// \tparam Arch the SIMD backend (default_arch)
  /// \param st a state from this policy's make_state()
  /// \param in q (b, h, n, d), k (b, h_kv, n, d), v (b, h_kv, n, d_v) at
  ///   positions next_position() .. + n - 1 (rotated by the caller, if RoPE)
  /// \param o (b, h, n, d_v), disjoint from q, k, v
  /// \param exec the executor (serial by default)
  /// \throws invalid_argument when st was made by another configuration or
  ///   a view's shape, stride or data is wrong; st is then unchanged
  template <arch_tag Arch = default_arch, executor Exec = serial_executor>
  void forward(state_type& st, const sequence_input& in, tensor4_view<float> o, Exec&& exec = {}) const {
    constexpr const char* where = "bounded_cache::forward";
    const attention_dims& dm = st.dims();
    require(st.fp_ == fingerprint(dm), where, "state",
            "made by a policy with other parameters (or not made by make_state)");
    require_sequence_call(where, dm, in.q, in.k, in.v, o);
    require_engine<Arch>(compute);  // an engine that cannot run here throws before the cache changes
    const index_t n = in.q.extent(2);
    if (n == 0) return;
    if (n == 1 || prefill == prefill_mode::token_by_token) {
      for (index_t i = 0; i < n; ++i)
        step<Arch>(st.cache_, in.q.tokens(i, 1), in.k.tokens(i, 1), in.v.tokens(i, 1), o.tokens(i, 1), exec);
      return;
    }
    const index_t c = prefill == prefill_mode::chunked ? chunk : n;
    for (index_t i = 0; i < n; i += c) {
      const index_t m = std::min(c, n - i);
      segment<Arch>(st.cache_, in.q.tokens(i, m), in.k.tokens(i, m), in.v.tokens(i, m), o.tokens(i, m), exec);
    }
    if (!unbounded) st.cache_.shrink_to(budget + 1);
  }

  void check_params(const attention_dims& dm, const char* where) const {
    const bool keep = current == current_token::kept;
    if (!unbounded) {
      require(budget >= 0, where, "budget", "must be set to the rows kept per KV head (>= 0), got ", budget);
      // budget + 1 rows per KV head are allocated up front.
      const double row_bytes = double(sizeof(KV)) * double(2 * (dm.d + value_dim(dm) + 2 * kv_storage_traits<KV>::row_prefix)) +
                               double(sizeof(float)) * double(stats_per_row(rule)) + 16.0;
      require_state_bytes(where, "budget", double(dm.b) * double(dm.h_kv) * (double(budget) + 1) * row_bytes);
      require(!(keep && budget == 0), where, "current",
              "current_token::kept needs budget >= 1 (budget 0 keeps no row at all)");
      if constexpr (requires { rule.check(budget, keep, where); }) rule.check(budget, keep, where);
    }
    const int a = static_cast<int>(aggregation), p = static_cast<int>(prefill);
    require(a >= 0 && a <= 2, where, "aggregation", "unknown score_aggregation ", a);
    require(p >= 0 && p <= 2, where, "prefill", "unknown prefill_mode ", p);
    require(keep || current == current_token::evictable, where, "current", "unknown current_token value");
    require(layout == kv_layout::slots || layout == kv_layout::compacted, where, "layout", "unknown layout");
    require_compute_precision(where, compute);
    require(positions == position_mode::absolute || positions == position_mode::cache_relative, where,
            "positions", "unknown position_mode value");
    require(positions == position_mode::absolute || (std::isfinite(rope_theta) && rope_theta > 0), where,
            "rope_theta", "must be finite and > 0, got ", rope_theta);
    require(positions == position_mode::absolute || dm.d % 2 == 0, where, "dims",
            "position_mode::cache_relative (RoPE) needs an even head dim d, got ", dm.d);
    require(prefill != prefill_mode::chunked || chunk > 0, where, "chunk",
            "prefill_mode::chunked needs chunk > 0, got ", chunk);
    require(!scale || std::isfinite(*scale), where, "scale", "must be finite");
    require(keys == key_scales::per_token || keys == key_scales::per_channel, where, "keys",
            "unknown key_scales value");
    require(keys == key_scales::per_token || kv_storage_traits<KV>::row_prefix > 0, where, "keys",
            "key_scales::per_channel needs int8 (q8) storage, the cache stores ", kv_storage_traits<KV>::name);
    require(aggregation != score_aggregation::per_head || dm.h == dm.h_kv, where, "aggregation",
            "per_head scores need one KV head per query head (h ", dm.h, " != h_kv ", dm.h_kv,
            "): a shared KV row cannot be evicted for one head only");
  }

  std::uint64_t fingerprint(const attention_dims& dm) const noexcept {
    config_fingerprint f = fingerprint_of(dm);
    f.add(budget).add(aggregation).add(current).add(layout).add(positions).add(rope_theta).add(prefill).add(chunk);
    f.add(scale.has_value()).add(scale.value_or(0.0f)).add(keys);
    if constexpr (requires { rule.add_to(f); }) rule.add_to(f);
    return f.value();
  }

 private:
  // A query row whose attended form overflowed (attended_queries): its
  // indices; its unscaled attended copy is in workspace::q_raw.
  struct overflowed_row {
    index_t b, h, i;
  };
  // Workspace, owned per thread (steady-state calls do not allocate).
  struct workspace {
    std::vector<float> logits, lse, scores, sel, q, q_raw;
    std::vector<index_t> victims, keeps;
    std::vector<overflowed_row> overflowed;
  };
  static workspace& ws() {
    thread_local workspace w;
    return w;
  }

  eviction_context context(kv_cache<KV>& c) const noexcept {
    return {c, unbounded ? c.size() : budget, current == current_token::kept};
  }

  // Mean over query heads [h0, h1) of p (rows of n floats, head stride hs) into s.
  template <arch_tag Arch>
  static void mean_heads(const float* p, index_t hs, index_t h0, index_t h1, index_t n, float* s) {
    std::copy_n(p + h0 * hs, n, s);
    for (index_t hi = h0 + 1; hi < h1; ++hi) axpy<Arch>(1.0f, p + hi * hs, s, n);
    if (h1 - h0 > 1) longctx::scale<Arch>(1.0f / float(h1 - h0), s, n);
  }

  // The aggregated row of lane (bi, hk) from head probabilities p (batch
  // bi's rows, head stride hs) over n keys, into out.
  template <arch_tag Arch>
  void lane_scores(const attention_dims& dm, const float* pb, index_t hs, index_t hk, index_t n, float* out) const {
    const index_t g = dm.h / dm.h_kv;
    switch (aggregation) {
      case score_aggregation::mean_all_heads: mean_heads<Arch>(pb, hs, 0, dm.h, n, out); break;
      case score_aggregation::mean_kv_group: mean_heads<Arch>(pb, hs, hk * g, hk * g + g, n, out); break;
      case score_aggregation::per_head: std::copy_n(pb + hk * hs, n, out); break;
    }
  }

  // Hands the probabilities of query row i (of a c-row segment; p: batch
  // bi's heads, stride hs, over nv keys) to the rule, lane by lane. Under
  // mean_all_heads the lanes of a batch element share one aggregated row.
  template <arch_tag Arch>
  void observe(const eviction_context& ctx, const float* pb, index_t hs, index_t bi, index_t i, index_t c,
               index_t nv, float* agg, float* sel, index_t ld_sel) const {
    const attention_dims& dm = ctx.cache.dims();
    for (index_t hk = 0; hk < dm.h_kv; ++hk) {
      if (hk == 0 || aggregation != score_aggregation::mean_all_heads) lane_scores<Arch>(dm, pb, hs, hk, nv, agg);
      const index_t lane = bi * dm.h_kv + hk;
      if constexpr (requires { rule.accumulate(ctx, lane, i, c, agg, nv, sel); })
        rule.accumulate(ctx, lane, i, c, agg, nv, sel + lane * ld_sel);
    }
  }

  // The slot the rule evicts from a lane holding budget + 1 rows: its own
  // search if it has one, else the lowest priority among unprotected rows,
  // ties to the older position. A lane with no unprotected row (only a
  // corrupt state could have one) gives up its oldest row: the budget holds.
  template <arch_tag Arch>
  index_t victim(const eviction_context& ctx, index_t lane, const float* scores) const noexcept {
    if constexpr (requires { rule.template victim<Arch>(ctx, lane, scores); }) {
      return rule.template victim<Arch>(ctx, lane, scores);
    } else {
      const index_t* pos = ctx.cache.positions(lane);
      index_t best = -1, oldest = 0;
      float best_p = 0.0f;
      for (index_t s = 0; s < ctx.cache.size(); ++s) {
        if (pos[s] < pos[oldest]) oldest = s;
        if (rule.is_protected(ctx, lane, s)) continue;
        const float p = rule.priority(ctx, lane, s, scores);
        if (best < 0 || p < best_p || (p == best_p && pos[s] < pos[best])) best = s, best_p = p;
      }
      return best < 0 ? oldest : best;
    }
  }

  // Slots of `lane` to keep when shrinking to k rows in one go (prefill):
  // the rows repeated victim() calls would keep for fixed priorities.
  // Writes k slots to keep[0, k), sorted by position.
  void select_keep(const eviction_context& ctx, index_t lane, index_t k, const float* scores, index_t* keep) const {
    const kv_rows& c = ctx.cache;
    const index_t n = c.size();
    const index_t* pos = c.positions(lane);
    std::vector<index_t> cand, cand_pos;
    std::vector<float> cand_prio;
    index_t kept = 0;
    for (index_t s = 0; s < n; ++s) {
      if (rule.is_protected(ctx, lane, s) && kept < k) {
        keep[kept++] = s;
      } else {
        cand.push_back(s);
        cand_pos.push_back(pos[s]);
        cand_prio.push_back(rule.priority(ctx, lane, s, scores));
      }
    }
    std::vector<index_t> sel(cand.size());
    const index_t m = top_k(cand_prio.data(), index_t(cand.size()), k - kept, sel.data(), cand_pos.data());
    for (index_t i = 0; i < m; ++i) keep[kept++] = cand[std::size_t(sel[std::size_t(i)])];
    c.sort_by_position(lane, keep, kept);
  }

  // The queries as the kernels attend them, in the workspace when they
  // change. cache_relative: the caller rotated query i at absolute position
  // p0 + i; it is attended at rank r0 + i. per_channel key scales: times
  // its KV head's channel scales (exact: powers of two). A finite query
  // whose product passes FLT_MAX (a channel scale up to 2^32 times a query
  // near FLT_MAX) is listed in w.overflowed, unscaled in w.q_raw, for
  // recompute_overflowed (fuzz finding policies-q8-channel-overflow).
  tensor4_view<const float> attended_queries(const kv_cache<KV>& st, tensor4_view<const float> q, index_t r0,
                                             index_t p0, workspace& w) const {
    w.overflowed.clear();
    w.q_raw.clear();
    if (!st.relative() && !st.channel_scaled()) return q;
    const index_t b = q.extent(0), h = q.extent(1), n = q.extent(2), d = q.extent(3), g = h / st.dims().h_kv;
    constexpr float big = std::numeric_limits<float>::max();
    w.q.resize(std::size_t(b * h * n * d));
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t hi = 0; hi < h; ++hi)
        for (index_t i = 0; i < n; ++i) {
          float* out = w.q.data() + ((bi * h + hi) * n + i) * d;
          if (st.relative())
            rope_rotate_row(&q(bi, hi, i, 0), out, d, double(r0 - p0), double(rope_theta));
          else
            for (index_t c = 0; c < d; ++c) out[c] = q(bi, hi, i, c);
          const float* sc = st.key_channel_scales(bi * st.dims().h_kv + hi / g);
          if (!sc) continue;
          bool overflow = false;
          for (index_t c = 0; c < d; ++c) overflow |= std::fabs(out[c]) <= big && !(std::fabs(out[c] * sc[c]) <= big);
          if (overflow) {
            w.overflowed.push_back({bi, hi, i});
            w.q_raw.insert(w.q_raw.end(), out, out + d);
          }
          for (index_t c = 0; c < d; ++c) out[c] *= sc[c];
        }
    return from_bhnd<dynamic_extent, const float>(w.q.data(), b, h, n, d);
  }

  // Recomputes, exactly (exact_row.hpp), the overflowed rows among the
  // attended rows [i0, i0 + r) of one kernel call over the first `n_keys`
  // cached rows with `mask`: o, lse and logits are that call's views (rows
  // from i0; lse and logits may be empty).
  template <class Mask>
  void recompute_overflowed(const kv_cache<KV>& st, const workspace& w, index_t i0, index_t r, index_t n_keys,
                            Mask mask, float sc, tensor4_view<float> o, lse_view lse,
                            tensor4_view<float> logits) const {
    const index_t d = st.dims().d, g = st.dims().h / st.dims().h_kv;
    const auto bound = mask.bind(r, n_keys);
    for (std::size_t e = 0; e < w.overflowed.size(); ++e) {
      const overflowed_row& row = w.overflowed[e];
      if (row.i < i0 || row.i >= i0 + r) continue;
      const index_t t = row.i - i0, hk = row.h / g, lane = row.b * st.dims().h_kv + hk;
      exact_attention_row(w.q_raw.data() + e * std::size_t(d),
                          matrix_view<const KV>(st.keys().tokens(0, n_keys).head(row.b, hk)),
                          matrix_view<const KV>(st.values().tokens(0, n_keys).head(row.b, hk)), sc, bound, t,
                          &o(row.b, row.h, t, 0), lse.data() ? &lse(row.b, row.h, t) : nullptr,
                          logits.data() ? &logits(row.b, row.h, t, 0) : nullptr, st.key_channel_scales(lane));
    }
  }

  // One token: append, decode over cache + itself (logits and LSE kept),
  // probabilities from them, the rule's statistics, evict one row.
  template <arch_tag Arch, class Exec>
  void step(kv_cache<KV>& st, tensor4_view<const float> q, tensor4_view<const float> k, tensor4_view<const float> v,
            tensor4_view<float> o, Exec&& exec) const {
    const attention_dims& dm = st.dims();
    workspace& w = ws();
    st.reserve(st.size() + 1);
    const index_t cap = st.capacity(), b = dm.b, h = dm.h, L = st.lanes();
    tensor4_view<float> logits{};
    lse_view lse{};
    if constexpr (Rule::scored) {
      w.logits.resize(std::size_t(b * h * cap));
      w.lse.resize(std::size_t(b * h));
    }
    st.append(k, v);
    const index_t n = st.size();
    q = attended_queries(st, q, n - 1, st.next_position() - 1, w);
    if constexpr (Rule::scored) {
      using E4 = tensor4_view<float>::extents_type;
      logits = tensor4_view<float>(w.logits.data(), E4(b, h, 1, n), {h * cap, cap, cap, 1});
      lse = lse_view(w.lse.data(), dextents<index_t, 3>(b, h, 1));
    }
    decode_attention<Arch, KV>(q, st.keys(), st.values(), o, scale_for(dm.d), no_mask{}, lse, exec, logits);
    recompute_overflowed(st, w, 0, 1, n, no_mask{}, scale_for(dm.d), o, lse, logits);
    const bool evicting = !unbounded && n > budget;
    if (!Rule::scored && !evicting) return;
    const eviction_context ctx = context(st);
    w.scores.resize(std::size_t(L * cap));
    w.sel.resize(std::size_t(cap));
    w.victims.resize(std::size_t(L));
    if constexpr (Rule::scored) {
      for (index_t r = 0; r < b * h; ++r)  // p = exp(logit - lse), in place: no second pass over K
        probabilities_from_logits<Arch>(w.logits.data() + r * cap, w.lse[std::size_t(r)], w.logits.data() + r * cap, n);
      for (index_t bi = 0; bi < b; ++bi)
        observe<Arch>(ctx, w.logits.data() + bi * h * cap, cap, bi, 0, 1, n, w.sel.data(), w.scores.data(), cap);
    }
    if (!evicting) return;
    // Under mean_all_heads every lane of a batch element holds the same
    // positions and scores: one search per batch element.
    const bool shared = aggregation == score_aggregation::mean_all_heads;
    for (index_t lane = 0; lane < L; ++lane)
      w.victims[std::size_t(lane)] = shared && lane % dm.h_kv != 0
                                         ? w.victims[std::size_t(lane - lane % dm.h_kv)]
                                         : victim<Arch>(ctx, lane, w.scores.data() + lane * cap);
    st.evict(w.victims.data());
  }

  // Rows of observed logits held at once in a prefill (b h rows x n keys):
  // about 32 MB, so H2O over a long prompt observes it in row blocks.
  static constexpr index_t observed_logit_floats = index_t(1) << 23;

  // A segment of c tokens: causal attention over cache + segment (bottom-right:
  // every cached row is older), the logits of the rows the rule observes
  // emitted by the same kernel call, then one top-k down to the budget.
  template <arch_tag Arch, class Exec>
  void segment(kv_cache<KV>& st, tensor4_view<const float> q, tensor4_view<const float> k, tensor4_view<const float> v,
               tensor4_view<float> o, Exec&& exec) const {
    const attention_dims& dm = st.dims();
    const index_t c = q.extent(2), s0 = st.size();
    st.reserve(s0 + c);
    st.append(k, v);
    const index_t n = st.size(), cap = st.capacity(), b = dm.b, h = dm.h, L = st.lanes();
    const float sc = scale_for(dm.d);
    workspace& w = ws();
    q = attended_queries(st, q, s0, st.next_position() - c, w);
    w.lse.resize(std::size_t(b * h * c));
    const lse_view lse(w.lse.data(), dextents<index_t, 3>(b, h, c));
    const bool evicting = !unbounded && n > budget;
    // Rules with lasting statistics (H2O) observe every segment; the others
    // only need scores for a selection.
    const bool observing = Rule::scored && (stats_per_row(rule) > 0 || evicting);
    index_t observed = 0;
    if constexpr (requires { rule.observed_rows(c); })
      if (observing) observed = std::clamp<index_t>(rule.observed_rows(c), 0, c);
    const eviction_context ctx = context(st);
    w.scores.assign(std::size_t(L * cap), 0.0f);
    // Rows [0, c - observed): one call, no logits. Observed rows: blocks of
    // rows whose logits fit the budget above; a row's result does not depend
    // on which call computes it (every row is its own online softmax over
    // the same key tiles), so the split changes no bit.
    const index_t first = c - observed;
    if (first > 0)
      prefill_attention<Arch, KV>(q.tokens(0, first), st.keys().tokens(0, s0 + first),
                                     st.values().tokens(0, s0 + first), o.tokens(0, first), sc, causal{},
                                     lse_slice(lse, 0, first), exec, row_logits{}, compute);
    if (first > 0)
      recompute_overflowed(st, w, 0, first, s0 + first, causal{}, sc, o.tokens(0, first), lse_slice(lse, 0, first), {});
    const index_t rows_per_block = std::max<index_t>(1, observed_logit_floats / std::max<index_t>(1, b * h * n));
    for (index_t i0 = first; i0 < c; i0 += rows_per_block) {
      const index_t r = std::min(rows_per_block, c - i0), n_keys = s0 + i0 + r;
      w.logits.resize(std::size_t(b * h * r * n_keys));
      const auto lg = from_bhnd(w.logits.data(), b, h, r, n_keys);  // (b, h, r, n_keys)
      prefill_attention<Arch, KV>(q.tokens(i0, r), st.keys().tokens(0, n_keys), st.values().tokens(0, n_keys),
                                     o.tokens(i0, r), sc, causal{}, lse_slice(lse, i0, r), exec, row_logits{0, lg},
                                     compute);
      recompute_overflowed(st, w, i0, r, n_keys, causal{}, sc, o.tokens(i0, r), lse_slice(lse, i0, r), lg);
      w.sel.resize(std::size_t(n_keys));
      for (index_t bi = 0; bi < b; ++bi)
        for (index_t t = 0; t < r; ++t) {
          const index_t i = i0 + t, nv = s0 + i + 1;
          for (index_t hi = 0; hi < h; ++hi) {
            float* p = &lg(bi, hi, t, 0);
            probabilities_from_logits<Arch>(p, lse(bi, hi, i), p, nv);
          }
          observe<Arch>(ctx, &lg(bi, 0, t, 0), lg.stride(1), bi, i, c, nv, w.sel.data(), w.scores.data(), cap);
        }
    }
    if constexpr (requires { rule.finish_scores(ctx, index_t(0), static_cast<float*>(nullptr)); })
      for (index_t lane = 0; lane < L; ++lane) rule.finish_scores(ctx, lane, w.scores.data() + lane * cap);
    if (!evicting) return;
    w.keeps.resize(std::size_t(L * n));
    for (index_t lane = 0; lane < L; ++lane)
      select_keep(ctx, lane, budget, w.scores.data() + lane * cap, w.keeps.data() + lane * n);
    for (index_t lane = 0; lane < L; ++lane)  // pack to (lanes, budget) for retain
      std::copy_n(w.keeps.data() + lane * n, budget, w.keeps.data() + lane * budget);
    st.retain(w.keeps.data(), budget);
  }

  static lse_view lse_slice(const lse_view& lse, index_t first, index_t count) noexcept {
    return lse_view(lse.data() + first, dextents<index_t, 3>(lse.extent(0), lse.extent(1), count),
                    {lse.stride(0), lse.stride(1), lse.stride(2)});
  }
};

LONGCTX_NAMESPACE_END
