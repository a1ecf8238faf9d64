// TOVA and the bounded-cache baselines as a policy: forward(state, q, k, v, o)
// attends the new tokens over the cache plus themselves with the exact
// kernels, scores the rows from that same computation and evicts down to the
// budget. q (b, h, n, d), k (b, h_kv, n, d), v (b, h_kv, n, d_v), o (b, h, n, d_v).
#pragma once

#include <cmath>
#include <optional>
#include <vector>

#include "../kernels/attention.hpp"
#include "../kernels/online_softmax.hpp"
#include "../kernels/topk.hpp"
#include "../simd/blas1.hpp"
#include "kv_cache.hpp"

LONGCTX_NAMESPACE_BEGIN

// How the per-head probabilities of the newest query become one score per
// row. Official TOVA: the mean over all query heads of the layer, so every KV
// head evicts the same position. per_kv_group: each KV head ranks by the mean
// of its query heads; per_head: each head by its own (needs h == h_kv).
enum class score_aggregation { mean_all_heads, mean_kv_group, per_head };

// A segment of n > 1 tokens: full causal attention over cache + segment and
// one top-k from its last row (official TOVA code), one decode step per token
// (the multi-state RNN definition), or the first mode on chunks of `chunk`.
enum class prefill_mode { full_then_top_k, token_by_token, chunked };

struct tova {
  index_t budget = 0;
  eviction policy = eviction::tova;
  score_aggregation aggregation = score_aggregation::mean_all_heads;
  current_token current = current_token::evictable;
  index_t sinks = 4;    // eviction::sinks
  index_t recent = -1;  // eviction::h2o recent window, -1: budget / 2
  h2o_normalisation h2o_norm = h2o_normalisation::none;
  kv_layout layout = kv_layout::slots;
  position_mode positions = position_mode::absolute;
  float rope_theta = 10000.0f;  // cache_relative: RoPE base the caller used
  prefill_mode prefill = prefill_mode::full_then_top_k;
  index_t chunk = 0;            // prefill_mode::chunked: tokens per chunk (> 0)
  std::optional<float> scale{};  // unset: 1 / sqrt(d)

  using state_type = kv_cache;

  kv_cache_config cache_config() const noexcept {
    return {budget, policy, current, sinks, recent, h2o_norm, layout, positions, rope_theta};
  }
  state_type make_state(kv_cache_dims dims) const {
    check_params(dims);
    return kv_cache(dims, cache_config());
  }

  // Decodes / prefills the n tokens of a segment; o receives their attention.
  template <arch_tag Arch = default_arch, executor Exec = serial_executor>
  void forward(state_type& st, tensor4_view<const float> q, tensor4_view<const float> k,
               tensor4_view<const float> v, tensor4_view<float> o, Exec&& exec = {}) const {
    const auto& dm = st.dims();
    check_params(dm);
    require(st.config() == cache_config(), "tova::forward", "state",
            "the state was made by a policy with a different cache configuration");
    const index_t n = q.extent(2);
    const auto shapes = [&] {
      return detail::concat("q ", shape_of(q), ", k ", shape_of(k), ", v ", shape_of(v), ", o ",
                            shape_of(o), "; state (b ", dm.batch, ", h ", dm.heads, ", h_kv ", dm.kv_heads,
                            ", d ", dm.head_dim, ", d_v ", dm.value_dim, ")");
    };
    require(q.extent(0) == dm.batch && q.extent(1) == dm.heads && q.extent(3) == dm.head_dim, "tova::forward",
            "q", "must be (b, h, n, d) of the state: ", shapes);
    require(k.extent(0) == dm.batch && k.extent(1) == dm.kv_heads && k.extent(2) == n &&
                k.extent(3) == dm.head_dim,
            "tova::forward", "k", "must be (b, h_kv, n, d): ", shapes);
    require(v.extent(0) == dm.batch && v.extent(1) == dm.kv_heads && v.extent(2) == n &&
                v.extent(3) == dm.value_dim,
            "tova::forward", "v", "must be (b, h_kv, n, d_v): ", shapes);
    require(o.extent(0) == dm.batch && o.extent(1) == dm.heads && o.extent(2) == n &&
                o.extent(3) == dm.value_dim,
            "tova::forward", "o", "must be (b, h, n, d_v): ", shapes);
    if (n == 0) return;
    if (n == 1 || prefill == prefill_mode::token_by_token) {
      for (index_t i = 0; i < n; ++i)
        step<Arch>(st, q.tokens(i, 1), k.tokens(i, 1), v.tokens(i, 1), o.tokens(i, 1), exec);
      return;
    }
    const index_t c = prefill == prefill_mode::chunked ? chunk : n;
    for (index_t i = 0; i < n; i += c) {
      const index_t m = std::min(c, n - i);
      segment<Arch>(st, q.tokens(i, m), k.tokens(i, m), v.tokens(i, m), o.tokens(i, m), exec);
    }
    st.shrink_to_fit();
  }

  float scale_for(index_t d) const noexcept { return scale ? *scale : 1.0f / std::sqrt(float(d)); }

  void check_params(const kv_cache_dims& dm) const {
    require_kv_cache_config(cache_config(), "tova");
    const int a = static_cast<int>(aggregation), p = static_cast<int>(prefill);
    require(a >= 0 && a <= 2, "tova", "aggregation", "unknown score_aggregation ", a);
    require(p >= 0 && p <= 2, "tova", "prefill", "unknown prefill_mode ", p);
    require(prefill != prefill_mode::chunked || chunk > 0, "tova", "chunk",
            "prefill_mode::chunked needs chunk > 0, got ", chunk);
    require(!scale || std::isfinite(*scale), "tova", "scale", "must be finite");
    require(aggregation != score_aggregation::per_head || dm.heads == dm.kv_heads, "tova", "aggregation",
            "per_head scores need one KV head per query head (h ", dm.heads, " != h_kv ", dm.kv_heads,
            "): a shared KV row cannot be evicted for one head only");
  }

 private:
  bool needs_scores() const noexcept { return policy == eviction::tova || policy == eviction::h2o; }

  // Workspace of one step, owned per thread (kernels and policies do not
  // allocate in steady state).
  struct workspace {
    std::vector<float> logits, lse, scores, out, q;
    std::vector<index_t> victims, keeps;
  };
  static workspace& ws() {
    thread_local workspace w;
    return w;
  }

  // Mean over query heads [h0, h1) of batch bi of p (rows of n floats), into s.
  template <arch_tag Arch>
  static void mean_heads(const float* p, index_t head_stride, index_t h0, index_t h1, index_t n, float* s) {
    std::copy_n(p + h0 * head_stride, n, s);
    for (index_t hi = h0 + 1; hi < h1; ++hi) axpy<Arch>(1.0f, p + hi * head_stride, s, n);
    if (h1 - h0 > 1) longctx::scale<Arch>(1.0f / float(h1 - h0), s, n);
  }

  // Aggregated scores of lane (bi, hk) from head probabilities p
  // (b, h, n) with head stride hs; returns the lane's score row.
  template <arch_tag Arch>
  const float* lane_scores(const kv_cache& st, const float* p, index_t hs, index_t bi, index_t hk, index_t n,
                           float* out) const {
    const index_t h = st.dims().heads, g = h / st.dims().kv_heads;
    const float* pb = p + bi * h * hs;
    switch (aggregation) {
      case score_aggregation::mean_all_heads: mean_heads<Arch>(pb, hs, 0, h, n, out); break;
      case score_aggregation::mean_kv_group: mean_heads<Arch>(pb, hs, hk * g, hk * g + g, n, out); break;
      case score_aggregation::per_head: std::copy_n(pb + hk * hs, n, out); break;
    }
    return out;
  }

  // cache_relative: the caller rotated query i at absolute position p0 + i;
  // it is attended at rank r0 + i. Rotated into the workspace.
  static tensor4_view<const float> relative_queries(const kv_cache& st, tensor4_view<const float> q, index_t r0,
                                                    index_t p0, std::vector<float>& buf) {
    if (!st.relative()) return q;
    const index_t b = q.extent(0), h = q.extent(1), n = q.extent(2), d = q.extent(3);
    buf.resize(std::size_t(b * h * n * d));
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t hi = 0; hi < h; ++hi)
        for (index_t i = 0; i < n; ++i)
          detail::rope_rotate(&q(bi, hi, i, 0), buf.data() + ((bi * h + hi) * n + i) * d, d, double(r0 - p0),
                              double(st.config().rope_theta));
    return from_bhnd<dynamic_extent, const float>(buf.data(), b, h, n, d);
  }

  // One token: append, decode over cache + itself (logits and LSE kept),
  // probabilities from them, aggregate, accumulate (H2O), evict one row.
  template <arch_tag Arch, class Exec>
  void step(kv_cache& st, tensor4_view<const float> q, tensor4_view<const float> k, tensor4_view<const float> v,
            tensor4_view<float> o, Exec&& exec) const {
    const auto& dm = st.dims();
    st.reserve(st.size() + 1);
    st.append(k, v);
    const index_t n = st.size(), cap = st.capacity(), b = dm.batch, h = dm.heads, L = st.lanes();
    workspace& w = ws();
    q = relative_queries(st, q, n - 1, st.next_position() - 1, w.q);
    const bool scored = needs_scores();
    tensor4_view<float> logits{};
    lse_view lse{};
    if (scored) {
      w.logits.resize(std::size_t(b * h * cap));
      w.lse.resize(std::size_t(b * h));
      using E4 = tensor4_view<float>::extents_type;
      logits = tensor4_view<float>(w.logits.data(), E4(b, h, 1, n), {h * cap, cap, cap, 1});
      lse = lse_view(w.lse.data(), dextents<index_t, 3>(b, h, 1));
    }
    decode_attention<Arch, float>(q, st.keys(), st.values(), o, scale_for(dm.head_dim), no_mask{}, lse, exec, logits);
    const bool evicting = st.config().bounded() && n > st.config().budget;
    if (!scored && !evicting) return;
    w.scores.resize(std::size_t(L * cap));
    w.victims.resize(static_cast<std::size_t>(L));
    if (scored)  // p = exp(logit - lse), in place: no second pass over K
      for (index_t r = 0; r < b * h; ++r)
        probabilities_from_logits<Arch>(w.logits.data() + r * cap, w.lse[std::size_t(r)], w.logits.data() + r * cap, n);
    const bool shared = aggregation == score_aggregation::mean_all_heads;
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t hk = 0; hk < dm.kv_heads; ++hk) {
        const index_t lane = bi * dm.kv_heads + hk;
        float* s = w.scores.data() + lane * cap;
        // mean over all heads: one row per batch element, shared by its lanes
        // (their slots hold the same positions, so they pick the same victim).
        const bool first = !shared || hk == 0;
        if (scored) {
          if (first) lane_scores<Arch>(st, w.logits.data(), cap, bi, hk, n, s);
          else if (policy == eviction::h2o) std::copy_n(w.scores.data() + bi * dm.kv_heads * cap, n, s);
          if (policy == eviction::h2o) {
            axpy<Arch>(1.0f, s, st.accumulated(lane), n);
            float* c = st.query_counts(lane);
            for (index_t j = 0; j < n; ++j) c[j] += 1.0f;
          }
        }
        if (evicting)
          w.victims[std::size_t(lane)] =
              first ? st.victim<Arch>(lane, s) : w.victims[std::size_t(bi * dm.kv_heads)];
      }
    if (evicting) st.evict(w.victims.data());
  }

  // A segment of c tokens: causal attention over cache + segment (bottom-right:
  // every cached row is older), then one top-k down to the budget scored from
  // the segment's last row (tova) or every row (h2o's accumulated attention).
  template <arch_tag Arch, class Exec>
  void segment(kv_cache& st, tensor4_view<const float> q, tensor4_view<const float> k,
               tensor4_view<const float> v, tensor4_view<float> o, Exec&& exec) const {
    const auto& dm = st.dims();
    const index_t c = q.extent(2), s0 = st.size();
    st.reserve(s0 + c);
    st.append(k, v);
    const index_t n = st.size(), cap = st.capacity(), b = dm.batch, h = dm.heads, L = st.lanes();
    const index_t d = dm.head_dim, g = h / dm.kv_heads;
    const float sc = scale_for(d);
    workspace& w = ws();
    q = relative_queries(st, q, s0, st.next_position() - c, w.q);
    w.lse.resize(std::size_t(b * h * c));
    const lse_view lse(w.lse.data(), dextents<index_t, 3>(b, h, c));
    prefill_attention<Arch, float>(q, st.keys(), st.values(), o, sc, causal{}, lse, exec);
    const bool evicting = st.config().bounded() && n > st.config().budget;
    if (!needs_scores() && !evicting) return;
    w.scores.resize(std::size_t(L * cap));
    w.logits.resize(std::size_t(b * h * cap));
    const auto keys = st.keys();
    // Row i's probabilities over its visible keys [0, s0 + i]: logits
    // recomputed from q and K (the prefill kernel keeps only its LSE).
    const auto row_probs = [&](index_t bi, index_t i) {
      const index_t nv = s0 + i + 1;
      for (index_t hi = 0; hi < h; ++hi) {
        float* p = w.logits.data() + (bi * h + hi) * cap;
        const float* qr = &q(bi, hi, i, 0);
        const auto kh = keys.head(bi, hi / g);
        for (index_t j = 0; j < nv; ++j) p[j] = sc * dot<Arch>(qr, &kh(j, 0), d);
        probabilities_from_logits<Arch>(p, lse(bi, hi, i), p, nv);
      }
      return nv;
    };
    if (policy == eviction::h2o) {
      for (index_t bi = 0; bi < b; ++bi)
        for (index_t i = 0; i < c; ++i) {
          const index_t nv = row_probs(bi, i);
          for (index_t hk = 0; hk < dm.kv_heads; ++hk) {
            const index_t lane = bi * dm.kv_heads + hk;
            float* s = w.scores.data() + lane * cap;
            lane_scores<Arch>(st, w.logits.data(), cap, bi, hk, nv, s);
            axpy<Arch>(1.0f, s, st.accumulated(lane), nv);
            float* cn = st.query_counts(lane);
            for (index_t j = 0; j < nv; ++j) cn[j] += 1.0f;
          }
        }
    } else if (policy == eviction::tova && evicting) {
      for (index_t bi = 0; bi < b; ++bi) {
        row_probs(bi, c - 1);
        for (index_t hk = 0; hk < dm.kv_heads; ++hk) {
          const index_t lane = bi * dm.kv_heads + hk;
          lane_scores<Arch>(st, w.logits.data(), cap, bi, hk, n, w.scores.data() + lane * cap);
        }
      }
    }
    if (!evicting) return;
    const index_t keep = st.config().budget;
    w.keeps.resize(std::size_t(L * n));
    for (index_t lane = 0; lane < L; ++lane)
      st.select_keep(lane, keep, w.scores.data() + lane * cap, w.keeps.data() + lane * n);
    for (index_t lane = 0; lane < L; ++lane)  // pack to (lanes, keep) for retain
      std::copy_n(w.keeps.data() + lane * n, keep, w.keeps.data() + lane * keep);
    st.retain(w.keeps.data(), keep);
  }
};

LONGCTX_NAMESPACE_END
