// Shared by the bounded-cache tests (tova.cpp, storage.cpp): a random
// token stream, every cache's parameters in one flat struct drawn at run time
// and turned into the typed policy, the fp32-vs-oracle comparison of kept
// sets (near-ties allowed).
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <longctx/policies/tova.hpp>
#include <longctx/reference/tova.hpp>

#include "../support/support.hpp"

namespace cache_test {
using namespace longctx;
using reference::eviction;
using reference::eviction_name;

// One layer's token stream, (b, heads, T, dim) contiguous.
struct stream {
  index_t b, h, hk, t, d, dv;
  std::vector<float> q, k, v;
  stream(test::rng_t& g, index_t b_, index_t h_, index_t hk_, index_t t_, index_t d_, index_t dv_, float qscale = 1)
      : b(b_), h(h_), hk(hk_), t(t_), d(d_), dv(dv_) {
    q = test::random_floats(g, std::size_t(b * h * t * d), -qscale, qscale);
    k = test::random_floats(g, std::size_t(b * hk * t * d));
    v = test::random_floats(g, std::size_t(b * hk * t * dv));
  }
  tensor4_view<const float> qs(index_t i, index_t n) const { return from_bhnd(q.data(), b, h, t, d).tokens(i, n); }
  tensor4_view<const float> ks(index_t i, index_t n) const { return from_bhnd(k.data(), b, hk, t, d).tokens(i, n); }
  tensor4_view<const float> vs(index_t i, index_t n) const { return from_bhnd(v.data(), b, hk, t, dv).tokens(i, n); }
  // Flat (b, heads, n, dim) copies of tokens [i, i + n) for the oracle.
  static std::vector<float> slice(const std::vector<float>& x, index_t b, index_t hh, index_t t, index_t dim, index_t i,
                                  index_t n) {
    std::vector<float> r(std::size_t(b * hh * n * dim));
    for (index_t a = 0; a < b * hh; ++a)
      std::copy_n(&x[std::size_t((a * t + i) * dim)], n * dim, &r[std::size_t(a * n * dim)]);
    return r;
  }
  attention_dims dims() const { return {b, h, hk, d, dv}; }
};

struct out_buf {
  std::vector<float> data;
  tensor4_view<float> view;
  out_buf(index_t b, index_t h, index_t n, index_t dv)
      : data(std::size_t(std::max<index_t>(1, b * h * n * dv)), -7.0f), view(from_bhnd(data.data(), b, h, n, dv)) {}
};

// The parameters of every bounded cache in one flat struct (the old
// enum-driven spelling), so random sweeps can draw a rule at run time;
// with_policy() turns it into the typed bounded_cache<Rule>.
struct spec {
  index_t budget = -1;
  eviction policy = eviction::tova;
  score_aggregation aggregation = score_aggregation::mean_all_heads;
  current_token current = current_token::evictable;
  index_t sinks = 4, recent = -1;
  h2o_normalisation h2o_norm = h2o_normalisation::none;
  kv_layout layout = kv_layout::slots;
  position_mode positions = position_mode::absolute;
  float rope_theta = 10000.0f;
  prefill_mode prefill = prefill_mode::full_then_top_k;
  index_t chunk = 0;
  std::optional<float> scale{};
  index_t window = 4, kernel = 3, reselect = 0;  // snapkv (window clamped to the budget)
  snapkv_pooling pooling = snapkv_pooling::max;
  key_scales keys = key_scales::per_token;  // per_channel: q8 only
  float scale_for(index_t d) const { return scale ? *scale : default_scale(d); }
};

template <class KV = float, class Rule>
bounded_cache<Rule, KV> typed(const spec& p, Rule r) {
  return {p.budget, r, p.aggregation, p.current, p.layout, p.positions, p.rope_theta, p.prefill, p.chunk, p.scale,
          p.keys};
}
// f(policy) with the rule p names, caching rows as KV.
template <class KV = float, class F>
decltype(auto) with_policy(const spec& p, F&& f) {
  switch (p.policy) {
    case eviction::tova: return f(typed<KV>(p, tova_rule{}));
    case eviction::window: return f(typed<KV>(p, window_rule{}));
    case eviction::sinks: return f(typed<KV>(p, sinks_rule{.sinks = p.sinks}));
    case eviction::h2o: return f(typed<KV>(p, h2o_rule{.recent = p.recent, .norm = p.h2o_norm}));
    case eviction::snapkv:
      return f(typed<KV>(p, snapkv_rule{.window = std::clamp<index_t>(p.window, 1, std::max<index_t>(p.budget, 1)),
                                    .kernel = p.kernel,
                                    .pooling = p.pooling,
                                    .reselect_every = p.reselect}));
    case eviction::full: break;
  }
  return f(typed<KV>(p, full_rule{}));
}

template <class State>
std::vector<index_t> held(const State& st, index_t lane) { return st.held_positions(lane); }
template <class State>
index_t lanes_of(const State& st) { return st.cache().lanes(); }

// Cauchy-Schwarz bound on |logit| over the stream (for the tolerance).
inline double logit_bound(const stream& s, float scale) {
  double mq = 0, mk = 0;
  for (std::size_t r = 0; r < s.q.size() / std::size_t(s.d); ++r) {
    double n = 0;
    for (index_t p = 0; p < s.d; ++p) n += double(s.q[r * std::size_t(s.d) + std::size_t(p)]) * s.q[r * std::size_t(s.d) + std::size_t(p)];
    mq = std::max(mq, std::sqrt(n));
  }
  for (std::size_t r = 0; r < s.k.size() / std::size_t(s.d); ++r) {
    double n = 0;
    for (index_t p = 0; p < s.d; ++p) n += double(s.k[r * std::size_t(s.d) + std::size_t(p)]) * s.k[r * std::size_t(s.d) + std::size_t(p)];
    mk = std::max(mk, std::sqrt(n));
  }
  return std::abs(scale) * mq * mk;
}

inline spec random_policy(test::rng_t& g, index_t t, index_t group) {
  spec p;
  p.policy = static_cast<eviction>(test::uniform_int(g, 0, 5));
  p.budget = test::uniform_int(g, 0, 3) == 0 ? test::uniform_int(g, 0, 2) : test::uniform_int(g, 0, int(t));
  if (p.policy == eviction::snapkv) {  // needs 1 <= window <= budget
    p.budget = std::max<index_t>(p.budget, 1);
    p.window = test::uniform_int(g, 1, int(std::min<index_t>(p.budget, 8)));
    p.kernel = 2 * test::uniform_int(g, 0, 3) + 1;
    p.pooling = test::uniform_int(g, 0, 1) ? snapkv_pooling::max : snapkv_pooling::average;
    p.reselect = test::uniform_int(g, 0, 1) ? 0 : test::uniform_int(g, 1, 6);
  }
  p.layout = test::uniform_int(g, 0, 1) ? kv_layout::slots : kv_layout::compacted;
  p.aggregation = static_cast<score_aggregation>(test::uniform_int(g, 0, group == 1 ? 2 : 1));
  p.current = p.budget > 0 && test::uniform_int(g, 0, 3) == 0 ? current_token::kept : current_token::evictable;
  p.sinks = test::uniform_int(g, 0, 5);
  if (p.policy == eviction::sinks && p.current == current_token::kept && p.sinks >= p.budget) p.sinks = p.budget - 1;
  p.recent = test::uniform_int(g, 0, 2) == 0 ? -1 : test::uniform_int(g, 0, int(p.budget));
  p.h2o_norm = test::uniform_int(g, 0, 1) ? h2o_normalisation::none : h2o_normalisation::query_count;
  const float boost = std::vector<float>{1, 1, 3, 10}[std::size_t(test::uniform_int(g, 0, 3))];
  if (test::uniform_int(g, 0, 1)) p.scale = boost;
  return p;
}

// cache_relative positions (RoPE) need an even head dim.
inline void maybe_relative(test::rng_t& g, spec& p, index_t d) {
  if (d % 2 == 0 && test::uniform_int(g, 0, 2) == 0) {
    p.positions = position_mode::cache_relative;
    p.rope_theta = test::uniform_int(g, 0, 1) ? 10000.0f : 50.0f;  // 50: fast-turning pairs at small lags
  }
}

inline std::string describe(const spec& p, const stream& s) {
  return detail::concat("policy ", eviction_name(p.policy), " budget ", p.budget, " layout ", int(p.layout), " agg ",
                        int(p.aggregation), " keep_cur ", int(p.current), " sinks ", p.sinks, " recent ", p.recent,
                        " norm ", int(p.h2o_norm), " positions ", int(p.positions), " theta ", p.rope_theta,
                        " prefill ", int(p.prefill), " chunk ", p.chunk, " window ", p.window, " kernel ",
                        p.kernel, " pooling ", int(p.pooling), " reselect ", p.reselect, " keys ", int(p.keys), " scale ",
                        p.scale ? *p.scale : -1.0f, " | b ", s.b, " h ", s.h, " h_kv ", s.hk, " T ", s.t, " d ", s.d,
                        " d_v ", s.dv);
}

// Kept sets equal, or differing only between rows whose oracle scores are
// within `tol` (a near-tie fp32 may break the other way). Returns true if equal.
template <class State>
bool check_kept(const State& st, const reference::tova_oracle& ref, double tol) {
  bool equal = true;
  for (index_t lane = 0; lane < lanes_of(st); ++lane) {
    const auto mine = held(st, lane), want = ref.positions(lane);
    if (mine == want) continue;
    equal = false;
    INFO("lane " << lane);
    REQUIRE(mine.size() == want.size());
    std::vector<index_t> only_mine, only_want;
    std::set_difference(mine.begin(), mine.end(), want.begin(), want.end(), std::back_inserter(only_mine));
    std::set_difference(want.begin(), want.end(), mine.begin(), mine.end(), std::back_inserter(only_want));
    for (index_t a : only_mine)
      for (index_t b : only_want) {
        INFO("fp32 kept " << a << " (score " << ref.score_of(lane, a) << "), oracle kept " << b << " (score "
                          << ref.score_of(lane, b) << ")");
        REQUIRE(std::abs(ref.score_of(lane, a) - ref.score_of(lane, b)) <= tol);
      }
  }
  return equal;
}


// (b, heads, t, dim) rows of x stored as KV (with their prefixes), as a view.
template <class KV>
struct stored_stream {
  stored_rows<KV> rows;
  index_t b, h, t, dim;
  stored_stream(const std::vector<float>& x, index_t b_, index_t h_, index_t t_, index_t dim_)
      : rows(b_ * h_ * t_, dim_), b(b_), h(h_), t(t_), dim(dim_) {
    for (index_t r = 0; r < b * h * t; ++r)
      kv_storage_traits<KV>::template store_row<default_arch>(x.data() + r * dim, rows.row(r), dim);
  }
  tensor4_view<const KV> view() const {
    using E = typename tensor4_view<const KV>::extents_type;
    const index_t s = rows.stride();
    return tensor4_view<const KV>(rows.row(0), E(b, h, t, dim), {h * t * s, t * s, s, 1});
  }
};

// Multiplies a few key channels of s by factors from 8 to 24 (as LLM keys
// have): the per_channel key scales then differ from 1.
inline void outlier_channels(test::rng_t& g, stream& s) {
  std::vector<float> f(std::size_t(s.d), 1.0f);
  for (index_t i = 0; i < std::max<index_t>(1, s.d / 16); ++i)
    f[std::size_t(test::uniform_int(g, 0, int(s.d) - 1))] = float(test::uniform_int(g, 8, 24));
  for (std::size_t r = 0; r < s.k.size() / std::size_t(s.d); ++r)
    for (index_t c = 0; c < s.d; ++c) s.k[r * std::size_t(s.d) + std::size_t(c)] *= f[std::size_t(c)];
}

// Every rule on random shapes, step by step against the double oracle
// (which attends the values a KV cache stores): outputs within the fp32
// tolerance, kept sets equal up to near-ties. per_channel: keys with
// outlier channels, per_channel key scales (q8).
template <class Arch, class KV>
void oracle_sweep(std::uint64_t seed_id, int cases, key_scales keys = key_scales::per_token) {
  static const std::vector<int> dims{1, 2, 7, 8, 17, 32, 59, 64, 128};
    int steps = 0, near_ties = 0;
  for (int c = 0; c < cases; ++c) {
    test::rng_t g(test::seed_for(seed_id, std::uint64_t(c)));
    const index_t hk = test::uniform_int(g, 1, 2), group = test::uniform_int(g, 1, 3);
    const index_t d = dims[std::size_t(test::uniform_int(g, 0, int(dims.size()) - 1))];
    const index_t dv = test::uniform_int(g, 0, 2) ? d : dims[std::size_t(test::uniform_int(g, 0, int(dims.size()) - 1))];
    stream s(g, test::uniform_int(g, 1, 2), hk * group, hk, test::uniform_int(g, 1, 64), d, dv);
    if (keys == key_scales::per_channel) outlier_channels(g, s);
    spec p = random_policy(g, s.t, group);
    p.keys = keys;
    // Half the cases open with a multi-token segment (prefill modes).
    const index_t pre = test::uniform_int(g, 0, 1) ? test::uniform_int(g, 2, int(std::max<index_t>(2, s.t))) : 0;
    p.prefill = static_cast<prefill_mode>(test::uniform_int(g, 0, 2));
    p.chunk = test::uniform_int(g, 1, 9);
    maybe_relative(g, p, d);
    INFO("case " << c << ": " << describe(p, s) << " prefill tokens " << pre);
    with_policy<KV>(p, [&](const auto& pol) {
    auto st = pol.make_state(s.dims());
    reference::tova_oracle ref(s.dims(), pol);
    const float scale = p.scale_for(d);
    const double lb = logit_bound(s, scale);
    const double tol_o = test::attention_tolerance(lb, 1.0);
    const double tol_score = 32 * test::eps_f32 * (1 + lb) * (1 + double(s.t));
    for (index_t i = 0; i < s.t;) {
      const index_t n = (i == 0 && pre > 0) ? std::min(pre, s.t) : 1;
      INFO("tokens [" << i << ", " << i + n << ")");
      ref.load(st);
      const auto want = ref.forward(stream::slice(s.q, s.b, s.h, s.t, d, i, n), stream::slice(s.k, s.b, s.hk, s.t, d, i, n),
                                    stream::slice(s.v, s.b, s.hk, s.t, dv, i, n), n);
      out_buf o(s.b, s.h, n, dv);
      pol.template forward<Arch>(st, {s.qs(i, n), s.ks(i, n), s.vs(i, n)}, o.view);
      REQUIRE(test::max_abs_diff(o.data, want) <= tol_o);
      REQUIRE(st.size() == (p.policy == eviction::full ? i + n : std::min(p.budget, i + n)));
      if (n == 1 || p.prefill != prefill_mode::token_by_token) {  // token_by_token ran n steps: oracle too
        ++steps;
        near_ties += !check_kept(st, ref, tol_score);
      }
      i += n;
    }
    });
  }
  // Near-ties are a rounding accident in random data, never the rule.
  INFO("steps " << steps << " near ties " << near_ties);
  REQUIRE(near_ties * 50 <= steps);
}

// budget >= n: dense attention over the stored rows, bit for bit.
template <class Arch, class KV>
void dense_sweep(std::uint64_t seed_id, int cases) {
    for (int c = 0; c < cases; ++c) {
    test::rng_t g(test::seed_for(seed_id, std::uint64_t(c)));
    const index_t hk = test::uniform_int(g, 1, 2), group = test::uniform_int(g, 1, 3);
    const index_t d = std::vector<index_t>{3, 16, 64, 128}[std::size_t(test::uniform_int(g, 0, 3))];
    const stream s(g, test::uniform_int(g, 1, 2), hk * group, hk, test::uniform_int(g, 1, 80), d, d);
    spec p;
    p.policy = static_cast<eviction>(c % 6);
    p.budget = s.t + test::uniform_int(g, 0, 3);
    p.layout = c % 2 ? kv_layout::slots : kv_layout::compacted;
    // Without evictions rank == position: cache_relative rotates by 0.
    if (d % 2 == 0 && c % 4 == 1) p.positions = position_mode::cache_relative;
    const index_t pre = c % 3 == 0 ? test::uniform_int(g, 1, int(s.t)) : 0;
    INFO("case " << c << ": " << describe(p, s) << " prefill " << pre);
    // The rows as the cache stores them.
    const stored_stream<KV> ks16(s.k, s.b, s.hk, s.t, d), vs16(s.v, s.b, s.hk, s.t, d);
    const auto kst = [&](index_t i, index_t n) { return ks16.view().tokens(i, n); };
    const auto vst = [&](index_t i, index_t n) { return vs16.view().tokens(i, n); };
    with_policy<KV>(p, [&](const auto& pol) {
    auto st = pol.make_state(s.dims());
    const float scale = p.scale_for(d);
    if (pre > 0) {  // prefill = causal attention over the prompt
      out_buf o(s.b, s.h, pre, d), want(s.b, s.h, pre, d);
      pol.template forward<Arch>(st, {s.qs(0, pre), s.ks(0, pre), s.vs(0, pre)}, o.view);
      attention<Arch, KV>(s.qs(0, pre), kst(0, pre), vst(0, pre), want.view, scale, causal{});
      REQUIRE(o.data == want.data);
    }
    for (index_t i = pre; i < s.t; ++i) {
      out_buf o(s.b, s.h, 1, d), want(s.b, s.h, 1, d);
      pol.template forward<Arch>(st, {s.qs(i, 1), s.ks(i, 1), s.vs(i, 1)}, o.view);
      decode<Arch, KV>(s.qs(i, 1), kst(0, i + 1), vst(0, i + 1), want.view, scale);
      INFO("token " << i);
      REQUIRE(o.data == want.data);
    }
    std::vector<index_t> all(static_cast<std::size_t>(s.t));
    std::iota(all.begin(), all.end(), index_t(0));
    for (index_t lane = 0; lane < lanes_of(st); ++lane) REQUIRE(held(st, lane) == all);
    });
  }
}

}  // namespace cache_test
