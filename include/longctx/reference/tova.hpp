// Double-precision oracle of the bounded KV cache policies (tova, window,
// sinks, h2o, full): rows kept per KV head in temporal order, attention and
// scores in double, victims found by brute force from the definitions in
// PAPERS.md section 4. For tests only; O(rows) per choice, no workspace games.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <optional>
#include <type_traits>

#include "../policies/eviction/snapkv.hpp"
#include "../policies/tova.hpp"

LONGCTX_NAMESPACE_BEGIN
namespace reference {

struct kv_row {
  std::vector<double> k, v;
  index_t pos = 0;
  double acc = 0, cnt = 0;  // H2O accumulated attention, queries that saw it
  std::vector<std::pair<index_t, double>> votes;  // snapkv re-selection: (query position, probability)
};

// The rules the oracle knows, by name (the library's rules are types).
enum class eviction { tova, window, sinks, h2o, full, snapkv };

inline const char* eviction_name(eviction e) noexcept {
  switch (e) {
    case eviction::tova: return "tova";
    case eviction::window: return "window";
    case eviction::sinks: return "sinks";
    case eviction::h2o: return "h2o";
    case eviction::full: return "full";
    case eviction::snapkv: return "snapkv";
  }
  return "?";
}

// A bounded cache's configuration, flattened (the oracle is written from
// the definitions, not from the rule types).
struct cache_config {
  eviction policy = eviction::tova;
  index_t budget = 0, sinks = 4, recent = -1, chunk = 0;
  current_token current = current_token::evictable;
  h2o_normalisation h2o_norm = h2o_normalisation::none;
  score_aggregation aggregation = score_aggregation::mean_all_heads;
  prefill_mode prefill = prefill_mode::full_then_top_k;
  position_mode positions = position_mode::absolute;
  float rope_theta = 10000.0f;
  std::optional<float> scale{};
  index_t window = 32, kernel = 7, reselect = 0;  // snapkv
  snapkv_pooling pooling = snapkv_pooling::max;
  // The storage type's rounding of a row of floats, in place (null: float
  // storage, exact): rows are attended as the values the cache stores.
  void (*store_row)(std::vector<double>&) = nullptr;
  bool key_channels = false;  // key_scales::per_channel

  void stored(std::vector<double>& row) const {
    if (store_row) store_row(row);
  }
  bool bounded() const noexcept { return policy != eviction::full; }
  index_t h2o_recent() const noexcept { return recent < 0 ? budget / 2 : recent; }
  double scale_for(index_t d) const noexcept { return scale ? *scale : default_scale(d); }
};

template <class Rule, class KV>
cache_config describe(const bounded_cache<Rule, KV>& p) {
  cache_config c;
  if constexpr (std::is_same_v<Rule, tova_rule>) c.policy = eviction::tova;
  if constexpr (std::is_same_v<Rule, window_rule>) c.policy = eviction::window;
  if constexpr (std::is_same_v<Rule, sinks_rule>) c.policy = eviction::sinks, c.sinks = p.rule.sinks;
  if constexpr (std::is_same_v<Rule, h2o_rule>) c.policy = eviction::h2o, c.recent = p.rule.recent, c.h2o_norm = p.rule.norm;
  if constexpr (std::is_same_v<Rule, full_rule>) c.policy = eviction::full;
  if constexpr (std::is_same_v<Rule, snapkv_rule>)
    c.policy = eviction::snapkv, c.window = p.rule.window, c.kernel = p.rule.kernel, c.pooling = p.rule.pooling,
    c.reselect = p.rule.reselect_every;
  c.budget = p.budget, c.chunk = p.chunk, c.current = p.current, c.aggregation = p.aggregation;
  c.prefill = p.prefill, c.positions = p.positions, c.rope_theta = p.rope_theta, c.scale = p.scale;
  c.key_channels = p.keys == key_scales::per_channel;
  if constexpr (!std::is_same_v<KV, float>)
    c.store_row = [](std::vector<double>& row) {
      const index_t n = index_t(row.size());
      std::vector<float> f(row.begin(), row.end());
      stored_rows<KV> buf(1, n);
      kv_storage_traits<KV>::template store_row<scalar>(f.data(), buf.row(0), n);
      kv_storage_traits<KV>::template load_row<scalar>(buf.row(0), f.data(), n);
      std::copy(f.begin(), f.end(), row.begin());
    };
  return c;
}

class tova_oracle {
 public:
  tova_oracle(attention_dims dims, const cache_config& cfg) : dm_(dims), pol_(cfg), cfg_(cfg) {
    dm_.d_v = value_dim(dims);
    lanes_.resize(std::size_t(dm_.b * dm_.h_kv));
    scores_.resize(lanes_.size());
    chan_.assign(lanes_.size(), std::vector<double>(std::size_t(dm_.d), 1.0));
  }
  template <class Rule, class KV>
  tova_oracle(attention_dims dims, const bounded_cache<Rule, KV>& p) : tova_oracle(dims, describe(p)) {}

  // Takes over the rows (and statistics) of a cache, in temporal order, as
  // the values it stores (a 16-bit row exactly as its float).
  template <class Rule, class KV>
  void load(const bounded_cache_state<Rule, KV>& state) {
    const kv_cache<KV>& st = state.cache();
    const auto widen = [](const KV* x, index_t n) {
      std::vector<float> f(static_cast<std::size_t>(n));
      kv_storage_traits<KV>::template load_row<scalar>(x, f.data(), n);
      return std::vector<double>(f.begin(), f.end());
    };
    for (index_t lane = 0; lane < st.lanes(); ++lane) {
      auto& rows = lanes_[std::size_t(lane)];
      rows.clear();
      const float* sc = st.key_channel_scales(lane);
      if (sc) chan_[std::size_t(lane)].assign(sc, sc + dm_.d);
      for (index_t s : st.temporal_order(lane)) {
        kv_row r;
        r.k = widen(st.original_key_row(lane, s), dm_.d);
        for (index_t c = 0; sc && c < dm_.d; ++c) r.k[std::size_t(c)] *= sc[c];
        r.v = widen(st.value_row(lane, s), dm_.d_v);
        r.pos = st.positions(lane)[s];
        if (st.options().row_stats == 2) {  // h2o: accumulated attention, query count
          r.acc = st.stats(lane)[2 * s];
          r.cnt = st.stats(lane)[2 * s + 1];
        }
        if constexpr (std::is_same_v<Rule, snapkv_rule>) {  // the vote, the ring of the last window's
          const index_t rs = st.options().row_stats, w = cfg_.window;
          r.acc = st.stats(lane)[s * rs];
          for (index_t qp = std::max<index_t>(0, st.next_position() - w); rs > 1 && qp < st.next_position(); ++qp)
            r.votes.emplace_back(qp, st.stats(lane)[s * rs + 1 + qp % w]);
        }
        rows.push_back(std::move(r));
      }
    }
    next_ = st.next_position();
  }

  const std::vector<kv_row>& rows(index_t lane) const { return lanes_[std::size_t(lane)]; }
  std::vector<index_t> positions(index_t lane) const {
    std::vector<index_t> p;
    for (const auto& r : rows(lane)) p.push_back(r.pos);
    return p;
  }
  // The ranking value of every row of a lane at the last eviction decision
  // (aligned with the rows before the eviction): tova's aggregated
  // probability, h2o's (normalised) accumulated attention.
  double score_of(index_t lane, index_t pos) const {
    for (const auto& [p, s] : scores_[std::size_t(lane)])
      if (p == pos) return s;
    return std::numeric_limits<double>::quiet_NaN();
  }

  // A segment of c tokens: q (b, h, c, d), k (b, h_kv, c, d), v (b, h_kv, c,
  // d_v) as flat row-major arrays; returns o (b, h, c, d_v). c == 1 or
  // token_by_token: one decode step per token; else one top-k per segment
  // (chunked: per chunk).
  std::vector<double> forward(const std::vector<float>& q, const std::vector<float>& k,
                              const std::vector<float>& v, index_t c) {
    const index_t h = dm_.h, hk = dm_.h_kv, d = dm_.d, dv = dm_.d_v, b = dm_.b;
    std::vector<double> o(std::size_t(b * h * c * dv));
    const index_t step = (c == 1 || pol_.prefill == prefill_mode::token_by_token) ? 1
                         : pol_.prefill == prefill_mode::chunked                  ? pol_.chunk
                                                                                  : c;
    for (index_t i0 = 0; i0 < c; i0 += step) {
      const index_t m = std::min(step, c - i0);
      std::vector<float> qs(std::size_t(b * h * m * d)), ks(std::size_t(b * hk * m * d)), vs(std::size_t(b * hk * m * dv));
      for (index_t bi = 0; bi < b; ++bi)
        for (index_t i = 0; i < m; ++i) {
          for (index_t hi = 0; hi < h; ++hi)
            std::copy_n(&q[std::size_t(((bi * h + hi) * c + i0 + i) * d)], d, &qs[std::size_t(((bi * h + hi) * m + i) * d)]);
          for (index_t hj = 0; hj < hk; ++hj) {
            std::copy_n(&k[std::size_t(((bi * hk + hj) * c + i0 + i) * d)], d, &ks[std::size_t(((bi * hk + hj) * m + i) * d)]);
            std::copy_n(&v[std::size_t(((bi * hk + hj) * c + i0 + i) * dv)], dv, &vs[std::size_t(((bi * hk + hj) * m + i) * dv)]);
          }
        }
      const auto os = run(qs, ks, vs, m, !(c == 1 || pol_.prefill == prefill_mode::token_by_token));
      for (index_t bi = 0; bi < b; ++bi)
        for (index_t hi = 0; hi < h; ++hi)
          for (index_t i = 0; i < m; ++i)
            std::copy_n(&os[std::size_t(((bi * h + hi) * m + i) * dv)], dv, &o[std::size_t(((bi * h + hi) * c + i0 + i) * dv)]);
    }
    return o;
  }

 private:
  // segment_call: a prefill segment (one top-k), not a decode step.
  std::vector<double> run(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                          index_t c, bool segment_call) {
    const index_t h = dm_.h, hk = dm_.h_kv, d = dm_.d, dv = dm_.d_v, b = dm_.b;
    const index_t g = h / hk;
    const double scale = pol_.scale_for(d);
    const index_t s0 = index_t(lanes_[0].size());
    if (cfg_.key_channels && next_ == 0) calibrate(k, c);
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t hj = 0; hj < hk; ++hj)
        for (index_t i = 0; i < c; ++i) {
          kv_row r;
          r.k.assign(&k[std::size_t(((bi * hk + hj) * c + i) * d)], &k[std::size_t(((bi * hk + hj) * c + i) * d)] + d);
          r.v.assign(&v[std::size_t(((bi * hk + hj) * c + i) * dv)], &v[std::size_t(((bi * hk + hj) * c + i) * dv)] + dv);
          store_key(bi * hk + hj, r.k);
          cfg_.stored(r.v);
          r.pos = next_ + i;
          lanes_[std::size_t(bi * hk + hj)].push_back(std::move(r));
        }
    next_ += c;
    const index_t n = s0 + c;
    std::vector<double> o(std::size_t(b * h * c * dv), 0.0);
    // cache_relative: row j attended at its rank j, query i at rank s0 + i
    // (the caller rotated it at absolute next_ - c + i).
    const bool rel = cfg_.positions == position_mode::cache_relative;
    const auto rotate = [&](std::vector<double> x, double delta, std::size_t key_lane, bool key) {
      const index_t half = index_t(x.size()) / 2;
      for (index_t t = 0; rel && delta != 0 && t < half; ++t) {
        const double a = delta * std::pow(double(cfg_.rope_theta), -2.0 * double(t) / double(x.size()));
        const double u = x[std::size_t(t)], w = x[std::size_t(t + half)];
        x[std::size_t(t)] = u * std::cos(a) - w * std::sin(a);
        x[std::size_t(t + half)] = w * std::cos(a) + u * std::sin(a);
      }
      // A 16-bit cache rounds the rotated key to float (the rotation's one
      // rounding), then to its type.
      if (rel && key && cfg_.store_row) {
        for (auto& y : x) y = double(float(y));
        store_key(key_lane, x);
      }
      return x;
    };
    std::vector<std::vector<std::vector<double>>> keys(lanes_.size());  // attended keys per lane
    for (std::size_t lane = 0; lane < lanes_.size(); ++lane)
      for (index_t j = 0; j < n; ++j) {
        const auto& r = lanes_[lane][std::size_t(j)];
        keys[lane].push_back(rotate(r.k, double(j - r.pos), lane, true));
      }
    // p[(bi, hi, i)][j]: softmax probabilities of row i over keys [0, s0 + i].
    std::vector<std::vector<double>> p(std::size_t(b * h * c));
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t hi = 0; hi < h; ++hi) {
        const auto& rows = lanes_[std::size_t(bi * hk + hi / g)];
        const auto& lane_keys = keys[std::size_t(bi * hk + hi / g)];
        for (index_t i = 0; i < c; ++i) {
          const index_t nv = s0 + i + 1;
          auto& pr = p[std::size_t((bi * h + hi) * c + i)];
          pr.assign(std::size_t(nv), 0.0);
          const float* qf = &q[std::size_t(((bi * h + hi) * c + i) * d)];
          const auto qr = rotate(std::vector<double>(qf, qf + d), double(s0 - (next_ - c)), 0, false);
          double m = -std::numeric_limits<double>::infinity();
          for (index_t j = 0; j < nv; ++j) {
            double s = 0;
            for (index_t t = 0; t < d; ++t) s += qr[std::size_t(t)] * lane_keys[std::size_t(j)][std::size_t(t)];
            pr[std::size_t(j)] = s * scale;
            m = std::max(m, pr[std::size_t(j)]);
          }
          double l = 0;
          for (auto& x : pr) l += std::exp(x - m);
          for (index_t j = 0; j < nv; ++j) {
            pr[std::size_t(j)] = std::exp(pr[std::size_t(j)] - m) / l;
            for (index_t t = 0; t < dv; ++t)
              o[std::size_t(((bi * h + hi) * c + i) * dv + t)] += pr[std::size_t(j)] * rows[std::size_t(j)].v[std::size_t(t)];
          }
        }
      }
    // Aggregated score of lane (bi, hj) for row i: mean over its heads.
    const auto agg = [&](index_t bi, index_t hj, index_t i, index_t j) {
      index_t h0 = 0, h1 = h;
      if (pol_.aggregation == score_aggregation::mean_kv_group) h0 = hj * g, h1 = h0 + g;
      if (pol_.aggregation == score_aggregation::per_head) h0 = hj, h1 = hj + 1;
      double s = 0;
      for (index_t hi = h0; hi < h1; ++hi) s += p[std::size_t((bi * h + hi) * c + i)][std::size_t(j)];
      return s / double(h1 - h0);
    };
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t hj = 0; hj < hk; ++hj) {
        const index_t lane = bi * hk + hj;
        auto& rows = lanes_[std::size_t(lane)];
        if (cfg_.policy == eviction::h2o)
          for (index_t i = 0; i < c; ++i)
            for (index_t j = 0; j <= s0 + i; ++j) {
              rows[std::size_t(j)].acc += agg(bi, hj, i, j);
              rows[std::size_t(j)].cnt += 1;
            }
        if (cfg_.policy == eviction::snapkv) {
          // The last `window` rows of a prefill segment vote (every decode
          // step's row does); a segment's votes are then pooled over the
          // rows in temporal order, zero padded.
          const auto pool = [&] {
            if (cfg_.kernel == 1) return;
            std::vector<double> raw;
            for (const auto& r : rows) raw.push_back(r.acc);
            const index_t half = cfg_.kernel / 2;
            for (index_t j = 0; j < n; ++j) {
              double x = cfg_.pooling == snapkv_pooling::max ? -std::numeric_limits<double>::infinity() : 0.0;
              for (index_t t = std::max<index_t>(0, j - half); t <= std::min(n - 1, j + half); ++t)
                x = cfg_.pooling == snapkv_pooling::max ? std::max(x, raw[std::size_t(t)]) : x + raw[std::size_t(t)];
              rows[std::size_t(j)].acc = cfg_.pooling == snapkv_pooling::max ? x : x / double(cfg_.kernel);
            }
          };
          for (index_t i = segment_call ? c - std::min(cfg_.window, c) : 0; i < c; ++i)
            for (index_t j = 0; j <= s0 + i; ++j) {
              rows[std::size_t(j)].acc += agg(bi, hj, i, j);
              rows[std::size_t(j)].votes.emplace_back(next_ - c + i, agg(bi, hj, i, j));
            }
          // Re-selection after a one-token step at position p, (p + 1) % N
          // == 0: the vote of the last `window` queries, pooled.
          const index_t newest = next_ - 1;
          if (c == 1 && cfg_.reselect > 0 && (newest + 1) % cfg_.reselect == 0) {
            for (auto& r : rows) {
              r.acc = 0;
              for (const auto& [qp, pr] : r.votes)
                if (qp > newest - cfg_.window) r.acc += pr;
            }
            pool();
          }
          if (segment_call) pool();
        }
        std::vector<double> rank(static_cast<std::size_t>(n));
        for (index_t j = 0; j < n; ++j) {
          const auto& r = rows[std::size_t(j)];
          rank[std::size_t(j)] = cfg_.policy == eviction::tova ? agg(bi, hj, c - 1, j)
                                 : cfg_.h2o_norm == h2o_normalisation::query_count ? r.acc / std::max(r.cnt, 1.0)
                                                                                     : r.acc;
        }
        auto& sc = scores_[std::size_t(lane)];
        sc.clear();
        for (index_t j = 0; j < n; ++j) sc.emplace_back(rows[std::size_t(j)].pos, rank[std::size_t(j)]);
        if (!cfg_.bounded() || n <= cfg_.budget) continue;
        // Drop the n - budget lowest-ranked unprotected rows, (rank, pos)
        // ascending; a decode step drops exactly one (the brute-force argmin).
        std::vector<index_t> cand;
        for (index_t j = 0; j < n; ++j)
          if (!is_protected(rows, j)) cand.push_back(j);
        std::sort(cand.begin(), cand.end(), [&](index_t a, index_t bb) {
          const double ra = rank_of(rank, a), rb = rank_of(rank, bb);
          if (ra != rb) return ra < rb;
          return rows[std::size_t(a)].pos < rows[std::size_t(bb)].pos;
        });
        std::vector<char> drop(std::size_t(n), 0);
        for (index_t t = 0; t < n - cfg_.budget; ++t) drop[std::size_t(cand[std::size_t(t)])] = 1;
        std::vector<kv_row> kept;
        for (index_t j = 0; j < n; ++j)
          if (!drop[std::size_t(j)]) kept.push_back(std::move(rows[std::size_t(j)]));
        rows = std::move(kept);
      }
    return o;
  }

  // window/sinks rank by position alone: every unprotected row ranks equal,
  // the position breaks the tie (oldest first).
  double rank_of(const std::vector<double>& rank, index_t j) const {
    return cfg_.policy == eviction::window || cfg_.policy == eviction::sinks ? 0.0 : rank[std::size_t(j)];
  }
  // A key as the cache holds it: the storage rounding of k / s, times s
  // (s: the lane's key channel scales, 1 but under per_channel).
  void store_key(std::size_t lane, std::vector<double>& k) const {
    const auto& s = chan_[lane];
    for (std::size_t c = 0; c < k.size(); ++c) k[c] /= s[c];
    cfg_.stored(k);
    for (std::size_t c = 0; c < k.size(); ++c) k[c] *= s[c];
  }
  // key_scales::per_channel on the first segment (kv_cache.hpp): s_c = 2^j,
  // j the largest with m 2^j <= a_c, if a_c >= 8 m (m: lower median of a);
  // RoPE pairs share the larger a_c.
  void calibrate(const std::vector<float>& k, index_t c) {
    const index_t d = dm_.d, half = d / 2;
    for (std::size_t lane = 0; lane < lanes_.size(); ++lane) {
      std::vector<double> a(std::size_t(d), 0.0);
      for (index_t i = 0; i < c; ++i)
        for (index_t j = 0; j < d; ++j) {
          const double x = std::abs(double(k[(lane * std::size_t(c) + std::size_t(i)) * std::size_t(d) + std::size_t(j)]));
          if (std::isfinite(x)) a[std::size_t(j)] = std::max(a[std::size_t(j)], x);
        }
      if (cfg_.positions == position_mode::cache_relative)
        for (index_t j = 0; j < half; ++j) a[std::size_t(j)] = a[std::size_t(j + half)] = std::max(a[std::size_t(j)], a[std::size_t(j + half)]);
      std::vector<double> sorted = a;
      std::sort(sorted.begin(), sorted.end());
      const double m = sorted[std::size_t((d - 1) / 2)];
      for (index_t j = 0; j < d; ++j) {
        double s = 1;
        if (m > 0 && a[std::size_t(j)] >= 8 * m)
          while (s < 4294967296.0 && m * 2 * s <= a[std::size_t(j)]) s *= 2;
        chan_[lane][std::size_t(j)] = s;
      }
    }
  }

  bool is_protected(const std::vector<kv_row>& rows, index_t j) const {
    const index_t pos = rows[std::size_t(j)].pos, newest = next_ - 1;
    const bool keep_cur = cfg_.current == current_token::kept && pos == newest;
    switch (cfg_.policy) {
      case eviction::tova: return keep_cur;
      case eviction::window: return false;
      case eviction::sinks: return pos < std::min(cfg_.sinks, cfg_.budget);
      case eviction::h2o: return keep_cur || pos > newest - cfg_.h2o_recent();
      case eviction::full: return true;
      case eviction::snapkv: return keep_cur || pos > newest - cfg_.window;
    }
    return true;
  }

  attention_dims dm_;
  cache_config pol_;
  cache_config cfg_;
  std::vector<std::vector<kv_row>> lanes_;
  std::vector<std::vector<double>> chan_;  // per lane: key channel scales
  std::vector<std::vector<std::pair<index_t, double>>> scores_;
  index_t next_ = 0;
};

}  // namespace reference
LONGCTX_NAMESPACE_END
