// TOVA and the bounded-cache baselines (window, sinks, h2o, full): the decode
// step and segment prefill against the double oracle (outputs and the exact
// kept sets, the evicted row being the brute-force argmin), budget >= n equal
// to dense attention bit for bit, hand-checked sequences for every policy,
// budgets 0/1, H2O new-token protection, layouts, snapshot/restore, bad input.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <optional>
#include <set>
#include <vector>

#include <longctx/policies/tova.hpp>
#include <longctx/reference/tova.hpp>

#include "../support/support.hpp"

using namespace longctx;
using reference::eviction;
using reference::eviction_name;

namespace {

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
  float scale_for(index_t d) const { return scale ? *scale : default_scale(d); }
};

template <class Rule>
bounded_cache<Rule> typed(const spec& p, Rule r) {
  return {p.budget, r, p.aggregation, p.current, p.layout, p.positions, p.rope_theta, p.prefill, p.chunk, p.scale};
}
template <class F>
decltype(auto) with_policy(const spec& p, F&& f) {
  switch (p.policy) {
    case eviction::tova: return f(typed(p, tova_rule{}));
    case eviction::window: return f(typed(p, window_rule{}));
    case eviction::sinks: return f(typed(p, sinks_rule{.sinks = p.sinks}));
    case eviction::h2o: return f(typed(p, h2o_rule{.recent = p.recent, .norm = p.h2o_norm}));
    case eviction::snapkv:
      return f(typed(p, snapkv_rule{.window = std::clamp<index_t>(p.window, 1, std::max<index_t>(p.budget, 1)),
                                    .kernel = p.kernel,
                                    .pooling = p.pooling,
                                    .reselect_every = p.reselect}));
    case eviction::full: break;
  }
  return f(typed(p, full_rule{}));
}

template <class State>
std::vector<index_t> held(const State& st, index_t lane) { return st.held_positions(lane); }
template <class State>
index_t lanes_of(const State& st) { return st.cache().lanes(); }

// Cauchy-Schwarz bound on |logit| over the stream (for the tolerance).
double logit_bound(const stream& s, float scale) {
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

spec random_policy(test::rng_t& g, index_t t, index_t group) {
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
void maybe_relative(test::rng_t& g, spec& p, index_t d) {
  if (d % 2 == 0 && test::uniform_int(g, 0, 2) == 0) {
    p.positions = position_mode::cache_relative;
    p.rope_theta = test::uniform_int(g, 0, 1) ? 10000.0f : 50.0f;  // 50: fast-turning pairs at small lags
  }
}

std::string describe(const spec& p, const stream& s) {
  return detail::concat("policy ", eviction_name(p.policy), " budget ", p.budget, " layout ", int(p.layout), " agg ",
                        int(p.aggregation), " keep_cur ", int(p.current), " sinks ", p.sinks, " recent ", p.recent,
                        " norm ", int(p.h2o_norm), " positions ", int(p.positions), " theta ", p.rope_theta,
                        " prefill ", int(p.prefill), " chunk ", p.chunk, " window ", p.window, " kernel ",
                        p.kernel, " pooling ", int(p.pooling), " reselect ", p.reselect, " scale ",
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

}  // namespace

TEMPLATE_LIST_TEST_CASE("tova: every policy, random shapes, step by step against the double oracle",
                        "[policies][tova]", compiled_archs) {
  using Arch = TestType;
  static const std::vector<int> dims{1, 2, 7, 8, 17, 32, 59, 64, 128};
  const int cases = test::scaled(150);
  int steps = 0, near_ties = 0;
  for (int c = 0; c < cases; ++c) {
    test::rng_t g(test::seed_for(91, std::uint64_t(c)));
    const index_t hk = test::uniform_int(g, 1, 2), group = test::uniform_int(g, 1, 3);
    const index_t d = dims[std::size_t(test::uniform_int(g, 0, int(dims.size()) - 1))];
    const index_t dv = test::uniform_int(g, 0, 2) ? d : dims[std::size_t(test::uniform_int(g, 0, int(dims.size()) - 1))];
    const stream s(g, test::uniform_int(g, 1, 2), hk * group, hk, test::uniform_int(g, 1, 64), d, dv);
    spec p = random_policy(g, s.t, group);
    // Half the cases open with a multi-token segment (prefill modes).
    const index_t pre = test::uniform_int(g, 0, 1) ? test::uniform_int(g, 2, int(std::max<index_t>(2, s.t))) : 0;
    p.prefill = static_cast<prefill_mode>(test::uniform_int(g, 0, 2));
    p.chunk = test::uniform_int(g, 1, 9);
    maybe_relative(g, p, d);
    INFO("case " << c << ": " << describe(p, s) << " prefill tokens " << pre);
    with_policy(p, [&](const auto& pol) {
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

TEMPLATE_LIST_TEST_CASE("tova: budget >= n is dense attention, bit for bit", "[policies][tova]", compiled_archs) {
  using Arch = TestType;
  const int cases = test::scaled(25);
  for (int c = 0; c < cases; ++c) {
    test::rng_t g(test::seed_for(92, std::uint64_t(c)));
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
    with_policy(p, [&](const auto& pol) {
    auto st = pol.make_state(s.dims());
    const float scale = p.scale_for(d);
    if (pre > 0) {  // prefill = causal attention over the prompt
      out_buf o(s.b, s.h, pre, d), want(s.b, s.h, pre, d);
      pol.template forward<Arch>(st, {s.qs(0, pre), s.ks(0, pre), s.vs(0, pre)}, o.view);
      attention<Arch>(s.qs(0, pre), s.ks(0, pre), s.vs(0, pre), want.view, scale, causal{});
      REQUIRE(o.data == want.data);
    }
    for (index_t i = pre; i < s.t; ++i) {
      out_buf o(s.b, s.h, 1, d), want(s.b, s.h, 1, d);
      pol.template forward<Arch>(st, {s.qs(i, 1), s.ks(i, 1), s.vs(i, 1)}, o.view);
      decode<Arch>(s.qs(i, 1), s.ks(0, i + 1), s.vs(0, i + 1), want.view, scale);
      INFO("token " << i);
      REQUIRE(o.data == want.data);
    }
    std::vector<index_t> all(static_cast<std::size_t>(s.t));
    std::iota(all.begin(), all.end(), index_t(0));
    for (index_t lane = 0; lane < lanes_of(st); ++lane) REQUIRE(held(st, lane) == all);
    });
  }
}

namespace {

// One head, d = 1, q = 1, scale 1: logit of token j is exactly k[j], so the
// attention each token gets is known in closed form.
std::vector<std::vector<index_t>> run_scalar(const spec& sp, const std::vector<float>& keys,
                                             std::vector<float>* outs = nullptr) {
  return with_policy(sp, [&](const auto& p) {
  const index_t t = index_t(keys.size());
  std::vector<float> q(keys.size(), 1.0f), v(keys.size());
  for (std::size_t j = 0; j < keys.size(); ++j) v[j] = float(j + 1);
  auto st = p.make_state({1, 1, 1, 1, 1});
  std::vector<std::vector<index_t>> sets;
  for (index_t i = 0; i < t; ++i) {
    float o = 0;
    p.forward(st, {from_bhnd<dynamic_extent, const float>(&q[std::size_t(i)], 1, 1, 1, 1),
                   from_bhnd<dynamic_extent, const float>(&keys[std::size_t(i)], 1, 1, 1, 1),
                   from_bhnd<dynamic_extent, const float>(&v[std::size_t(i)], 1, 1, 1, 1)},
              from_bhnd(&o, 1, 1, 1, 1));
    if (outs) outs->push_back(o);
    sets.push_back(st.held_positions(0));
  }
  return sets;
  });
}

using set = std::vector<index_t>;

}  // namespace

TEST_CASE("tova: hand-checked kept sets for every policy", "[policies][tova]") {
  const std::vector<float> flat(10, 0.0f);
  SECTION("window keeps the most recent budget tokens") {
    const auto s = run_scalar({.budget = 3, .policy = eviction::window}, flat);
    REQUIRE(s[1] == set{0, 1});
    REQUIRE(s[5] == set{3, 4, 5});
    REQUIRE(s[9] == set{7, 8, 9});
  }
  SECTION("sinks keeps the first `sinks` plus the most recent") {
    REQUIRE(run_scalar({.budget = 4, .policy = eviction::sinks, .sinks = 2}, flat)[7] == set{0, 1, 6, 7});
    REQUIRE(run_scalar({.budget = 6, .policy = eviction::sinks}, flat)[9] == set{0, 1, 2, 3, 8, 9});
    // budget below the sink count: the first `budget` tokens only.
    REQUIRE(run_scalar({.budget = 2, .policy = eviction::sinks}, flat)[9] == set{0, 1});
    for (auto layout : {kv_layout::slots, kv_layout::compacted})
      REQUIRE(run_scalar({.budget = 5, .policy = eviction::sinks, .sinks = 3, .layout = layout}, flat)[9] ==
              set{0, 1, 2, 8, 9});
  }
  SECTION("tova drops the least attended row, ties the oldest, possibly the current token") {
    const std::vector<float> keys{5, 0, 0, 3, -1};
    const auto s = run_scalar({.budget = 2}, keys);
    REQUIRE(s[1] == set{0, 1});
    REQUIRE(s[2] == set{0, 2});  // 1 and 2 tie: the older (1) goes
    REQUIRE(s[3] == set{0, 3});
    REQUIRE(s[4] == set{0, 3});  // the current token is the least attended
    const auto kept = run_scalar({.budget = 2, .current = current_token::kept}, keys);
    REQUIRE(kept[4] == set{0, 4});
    const auto slots = run_scalar({.budget = 2, .layout = kv_layout::compacted}, keys);
    REQUIRE(slots == s);
    // A tie between a newer token in an older slot (3 took 1's slot) and an
    // older one: the older position goes, whatever the slot order.
    for (auto layout : {kv_layout::slots, kv_layout::compacted})
      REQUIRE(run_scalar({.budget = 3, .layout = layout}, {5, -1, 0, 0, 1})[4] == set{0, 3, 4});
  }
  SECTION("h2o keeps heavy hitters by accumulated attention plus the recent window") {
    const std::vector<float> keys{4, 0, 0, 0, 0, 0};
    // Accumulated after token 3: a0 ~ 3.89, a1 ~ 0.053, a2 ~ 0.035, a3 ~ 0.017.
    const auto s = run_scalar({.budget = 3, .policy = eviction::h2o, .recent = 1}, keys);
    REQUIRE(s[2] == set{0, 1, 2});
    REQUIRE(s[3] == set{0, 1, 3});
    REQUIRE(s[4] == set{0, 1, 4});
    REQUIRE(s[5] == set{0, 1, 5});
  }
  SECTION("h2o without a recent window evicts each new token at once") {
    const std::vector<float> keys{4, 0, 0, 0, 0, 0};
    const auto s = run_scalar({.budget = 3, .policy = eviction::h2o, .recent = 0}, keys);
    REQUIRE(s[3] == set{0, 1, 2});
    REQUIRE(s[5] == set{0, 1, 2});
    // current_token::kept protects it even without the window.
    const auto k = run_scalar({.budget = 3, .policy = eviction::h2o, .current = current_token::kept, .recent = 0}, keys);
    REQUIRE(k[3] == set{0, 1, 3});
    REQUIRE(k[5] == set{0, 1, 5});
  }
  SECTION("full never evicts") {
    REQUIRE(run_scalar({.budget = 1, .policy = eviction::full}, flat)[9].size() == 10);
  }
}

TEST_CASE("snapkv: the observation window votes at prefill, pooled along the keys", "[policies][snapkv]") {
  // One head, d = 1, q = 1, scale 1: the logit of key j is k[j]. A 6-token
  // prompt, budget 3, window 1: the last query's probabilities vote.
  const std::vector<float> keys{5, 0, 3, 0, 0, 0}, q(6, 1.0f), v{1, 2, 3, 4, 5, 6};
  const auto kept = [&](snapkv_rule rule) {
    const snapkv p{.budget = 3, .rule = rule};
    auto st = p.make_state({1, 1, 1, 1, 1});
    std::vector<float> o(6);
    p.forward(st, {from_bhnd<dynamic_extent, const float>(q.data(), 1, 1, 6, 1),
                   from_bhnd<dynamic_extent, const float>(keys.data(), 1, 1, 6, 1),
                   from_bhnd<dynamic_extent, const float>(v.data(), 1, 1, 6, 1)},
              from_bhnd(o.data(), 1, 1, 6, 1));
    return st.held_positions(0);
  };
  // No smoothing: the window (5) plus the two best-voted keys (0 and 2).
  REQUIRE(kept({.window = 1, .kernel = 1}) == set{0, 2, 5});
  // Max pooling of width 3 spreads key 0's vote to key 1 (a tie with key 0,
  // above key 2's): the neighbourhood of the strongest key survives.
  REQUIRE(kept({.window = 1, .kernel = 3}) == set{0, 1, 5});
  // A window of 3 keeps the last three tokens whatever the votes.
  REQUIRE(kept({.window = 3, .kernel = 1}) == set{3, 4, 5});
  // Decoding: new tokens vote, the window protects the newest; the
  // lowest-voted older row leaves at each step.
  const auto steps = run_scalar({.budget = 3, .policy = eviction::snapkv, .window = 1, .kernel = 1},
                                {5, 0, 3, 0, 0, 0});
  for (const auto& s : steps) REQUIRE(s.size() <= 3);
  REQUIRE(std::count(steps.back().begin(), steps.back().end(), 0) == 1);  // the heavy key stays
  // Re-selection: four one-token steps, logit q * k. Votes after position 2
  // (q = 1, keys 0, 0, 3): rows 0, 1, 2 hold 1.55, 0.55, 0.91; position 3
  // (q = -1, k = 0) gives them 0.33, 0.33, 0.02 and must evict one of them.
  // Accumulated votes drop row 1; re-selecting at position 3 ((3 + 1) % 4 ==
  // 0) ranks by the last query alone and drops row 2, the key it ignores.
  const auto after_four = [](index_t every) {
    const std::vector<float> qs{1, 1, 1, -1}, ks{0, 0, 3, 0};
    const snapkv p{.budget = 3, .rule = {.window = 1, .kernel = 1, .reselect_every = every}};
    auto st = p.make_state({1, 1, 1, 1, 1});
    for (std::size_t i = 0; i < qs.size(); ++i) {
      float o = 0;
      p.forward(st, {from_bhnd<dynamic_extent, const float>(&qs[i], 1, 1, 1, 1),
                     from_bhnd<dynamic_extent, const float>(&ks[i], 1, 1, 1, 1),
                     from_bhnd<dynamic_extent, const float>(&ks[i], 1, 1, 1, 1)},
                from_bhnd(&o, 1, 1, 1, 1));
    }
    return st.held_positions(0);
  };
  REQUIRE(after_four(0) == set{0, 2, 3});
  REQUIRE(after_four(5) == set{0, 2, 3});  // no re-selection at position 3
  REQUIRE(after_four(4) == set{0, 1, 3});
  REQUIRE(after_four(2) == set{0, 1, 3});
  // The ring costs `window` floats per row.
  REQUIRE(snapkv{.budget = 8, .rule = {.window = 4, .reselect_every = 2}}.make_state({1, 1, 1, 1, 1}).cache().options().row_stats == 5);
  REQUIRE_THROWS_WITH((snapkv{.budget = 3, .rule = {.window = 1, .reselect_every = -1}}.make_state({1, 1, 1, 1, 1})),
                      Catch::Contains("rule.reselect_every"));
  REQUIRE_THROWS_WITH((snapkv{.budget = 3, .rule = {.window = 4}}.make_state({1, 1, 1, 1, 1})),
                      Catch::Contains("rule.window"));
  REQUIRE_THROWS_WITH((snapkv{.budget = 3, .rule = {.window = 1, .kernel = 4}}.make_state({1, 1, 1, 1, 1})),
                      Catch::Contains("rule.kernel"));
}

TEST_CASE("tova: budgets 0 and 1", "[policies][tova]") {
  const std::vector<float> keys{2, -1, 3, 0, 1, 5, -2};
  for (auto pol : {eviction::tova, eviction::window, eviction::sinks, eviction::h2o}) {
    INFO("policy " << eviction_name(pol));
    std::vector<float> o;
    const auto s0 = run_scalar({.budget = 0, .policy = pol, .recent = 0}, keys, &o);
    for (std::size_t i = 0; i < keys.size(); ++i) {
      REQUIRE(s0[i].empty());
      REQUIRE(o[i] == float(i + 1));  // attends to itself only: o = v
    }
    const auto s1 = run_scalar({.budget = 1, .policy = pol, .recent = 0}, keys);
    for (const auto& s : s1) REQUIRE(s.size() == 1);
  }
  // Budget 1: tova keeps whichever of (held, current) the current query
  // attends more; window the current; sinks the first; h2o (recent 1) the current.
  REQUIRE(run_scalar({.budget = 1}, keys)[6] == set{5});
  REQUIRE(run_scalar({.budget = 1, .policy = eviction::window}, keys)[6] == set{6});
  REQUIRE(run_scalar({.budget = 1, .policy = eviction::sinks}, keys)[6] == set{0});
  REQUIRE(run_scalar({.budget = 1, .policy = eviction::h2o, .recent = 1}, keys)[6] == set{6});
}

TEMPLATE_LIST_TEST_CASE("tova: prefill modes and layouts agree", "[policies][tova]", compiled_archs) {
  using Arch = TestType;
  const int cases = test::scaled(20);
  for (int c = 0; c < cases; ++c) {
    test::rng_t g(test::seed_for(93, std::uint64_t(c)));
    const stream s(g, 1, 4, 2, test::uniform_int(g, 2, 60), 16, 16, 2.0f);
    const spec sp{.budget = test::uniform_int(g, 1, int(s.t)), .policy = static_cast<eviction>(c % 4)};
    INFO("case " << c << ": " << describe(sp, s));
    with_policy(sp, [&](const auto& p) {
    using P = std::decay_t<decltype(p)>;
    // token_by_token over a segment == one forward per token, bit for bit.
    P tbt = p;
    tbt.prefill = prefill_mode::token_by_token;
    auto a = tbt.make_state(s.dims());
    auto b = p.make_state(s.dims());
    out_buf oa(1, 4, s.t, 16), ob(1, 4, s.t, 16);
    tbt.template forward<Arch>(a, {s.qs(0, s.t), s.ks(0, s.t), s.vs(0, s.t)}, oa.view);
    for (index_t i = 0; i < s.t; ++i)
      p.template forward<Arch>(b, {s.qs(i, 1), s.ks(i, 1), s.vs(i, 1)}, ob.view.tokens(i, 1));
    REQUIRE(oa.data == ob.data);
    REQUIRE(held(a, 0) == held(b, 0));
    // chunked with a chunk >= n is the full prefill.
    P ch = p;
    ch.prefill = prefill_mode::chunked;
    ch.chunk = s.t + 1;
    auto x = ch.make_state(s.dims());
    auto y = p.make_state(s.dims());
    ch.template forward<Arch>(x, {s.qs(0, s.t), s.ks(0, s.t), s.vs(0, s.t)}, oa.view);
    p.template forward<Arch>(y, {s.qs(0, s.t), s.ks(0, s.t), s.vs(0, s.t)}, ob.view);
    REQUIRE(oa.data == ob.data);
    for (index_t lane = 0; lane < 2; ++lane) REQUIRE(held(x, lane) == held(y, lane));
    // compacted and slots hold the same positions; outputs agree to rounding.
    P cp = p;
    cp.layout = kv_layout::compacted;
    auto u = cp.make_state(s.dims());
    auto w = p.make_state(s.dims());
    for (index_t i = 0; i < s.t; ++i) {
      cp.template forward<Arch>(u, {s.qs(i, 1), s.ks(i, 1), s.vs(i, 1)}, oa.view.tokens(i, 1));
      p.template forward<Arch>(w, {s.qs(i, 1), s.ks(i, 1), s.vs(i, 1)}, ob.view.tokens(i, 1));
    }
    REQUIRE(test::max_abs_diff(oa.data, ob.data) <= test::attention_tolerance(2.0 * 16 / 4, 1.0));
    for (index_t lane = 0; lane < 2; ++lane) REQUIRE(held(u, lane) == held(w, lane));
    });
  }
}

TEST_CASE("tova: snapshot and restore", "[policies][tova]") {
  test::rng_t g(test::seed_for(94, 0));
  const stream s(g, 2, 4, 2, 50, 8, 5);
  for (int variant = 0; variant < 5; ++variant) {
    const eviction pol = std::vector<eviction>{eviction::tova, eviction::h2o, eviction::sinks, eviction::full,
                                               eviction::tova}[std::size_t(variant)];
    INFO("policy " << eviction_name(pol) << " variant " << variant);
    const spec sp{.budget = 12,
                  .policy = pol,
                  .positions = variant == 4 ? position_mode::cache_relative : position_mode::absolute};
    with_policy(sp, [&](const auto& p) {
    using P = std::decay_t<decltype(p)>;
    auto a = p.make_state(s.dims());
    out_buf oa(2, 4, 50, 5), ob(2, 4, 50, 5);
    p.forward(a, {s.qs(0, 20), s.ks(0, 20), s.vs(0, 20)}, oa.view.tokens(0, 20));
    for (index_t i = 20; i < 30; ++i) p.forward(a, {s.qs(i, 1), s.ks(i, 1), s.vs(i, 1)}, oa.view.tokens(i, 1));
    const auto snap = a.snapshot();
    auto b = p.make_state(s.dims());
    b.restore(snap);
    REQUIRE(b.snapshot() == snap);
    for (index_t i = 30; i < 50; ++i) {
      p.forward(a, {s.qs(i, 1), s.ks(i, 1), s.vs(i, 1)}, oa.view.tokens(i, 1));
      p.forward(b, {s.qs(i, 1), s.ks(i, 1), s.vs(i, 1)}, ob.view.tokens(i, 1));
    }
    for (index_t r = 0; r < 8; ++r)
      for (index_t i = 30; i < 50; ++i)
        for (index_t c = 0; c < 5; ++c)
          REQUIRE(oa.data[std::size_t((r * 50 + i) * 5 + c)] == ob.data[std::size_t((r * 50 + i) * 5 + c)]);
    for (index_t lane = 0; lane < 4; ++lane) REQUIRE(held(a, lane) == held(b, lane));
    // Truncated, trailing, foreign, corrupt and mismatched input is
    // rejected; the target keeps its contents.
    const auto before = b.snapshot();
    auto cut = snap;
    cut.pop_back();
    REQUIRE_THROWS_AS(b.restore(cut), longctx::invalid_argument);
    REQUIRE_THROWS_AS(b.restore(std::span<const std::byte>(snap.data(), 10)), longctx::invalid_argument);
    auto extra = snap;
    extra.push_back(std::byte{0});
    REQUIRE_THROWS_AS(b.restore(extra), longctx::invalid_argument);
    auto bad = snap;
    bad[0] = std::byte{'X'};
    REQUIRE_THROWS_WITH(b.restore(bad), Catch::Contains("magic"));
    auto ver = snap;
    ver[8] = std::byte{99};
    REQUIRE_THROWS_WITH(b.restore(ver), Catch::Contains("version"));
    for (std::size_t at : {snap.size() / 2, snap.size() - 5}) {  // one flipped bit anywhere in the payload
      auto flip = snap;
      flip[at] ^= std::byte{4};
      REQUIRE_THROWS_WITH(b.restore(flip), Catch::Contains("checksum"));
    }
    P other_p = p;
    other_p.budget = 13;
    auto other = other_p.make_state(s.dims());
    REQUIRE_THROWS_WITH(other.restore(snap), Catch::Contains("configuration"));
    auto other_dims = p.make_state({2, 4, 4, 8, 5});
    REQUIRE_THROWS_AS(other_dims.restore(snap), longctx::invalid_argument);
    REQUIRE(b.snapshot() == before);
    });
  }
  // A snapshot of another rule is another kind.
  auto t = tova{.budget = 12}.make_state(s.dims());
  auto h = h2o_cache{.budget = 12}.make_state(s.dims());
  REQUIRE_THROWS_WITH(h.restore(t.snapshot()), Catch::Contains("kind"));
}

TEST_CASE("tova: bad configurations and shapes are rejected", "[policies][tova]") {
  const attention_dims dm{1, 4, 2, 8, 8};
  using Catch::Contains;
  REQUIRE_THROWS_WITH(tova{}.make_state(dm), Contains("budget"));  // no silent budget 0
  REQUIRE_THROWS_WITH(tova{.budget = -1}.make_state(dm), Contains("budget"));
  REQUIRE_THROWS_WITH((tova{.budget = 0, .current = current_token::kept}.make_state(dm)), Contains("current"));
  REQUIRE_THROWS_WITH((h2o_cache{.budget = 4, .rule = {.recent = 5}}.make_state(dm)), Contains("recent"));
  REQUIRE_THROWS_WITH((h2o_cache{.budget = 4, .rule = {.recent = -2}}.make_state(dm)), Contains("recent"));
  REQUIRE_THROWS_WITH((sinks_cache{.budget = 4, .current = current_token::kept}.make_state(dm)), Contains("sinks"));
  REQUIRE_THROWS_WITH((sinks_cache{.budget = 4, .rule = {.sinks = -1}}.make_state(dm)), Contains("sinks"));
  REQUIRE_THROWS_WITH((tova{.budget = 4, .aggregation = score_aggregation::per_head}.make_state(dm)),
                      Contains("per_head"));
  REQUIRE_THROWS_WITH((tova{.budget = 4, .prefill = prefill_mode::chunked}.make_state(dm)), Contains("chunk"));
  REQUIRE_THROWS_WITH((tova{.budget = 4, .scale = std::numeric_limits<float>::infinity()}.make_state(dm)),
                      Contains("scale"));
  REQUIRE_THROWS_WITH(tova{.budget = 4}.make_state({1, 3, 2, 8, 8}), Contains("h_kv"));
  REQUIRE_THROWS_WITH((tova{.budget = 4, .positions = position_mode::cache_relative}.make_state({1, 4, 2, 7, 8})),
                      Contains("even head dim"));
  REQUIRE_THROWS_WITH(
      (tova{.budget = 4, .positions = position_mode::cache_relative, .rope_theta = 0}.make_state(dm)),
      Contains("rope_theta"));
  REQUIRE_THROWS_WITH(tova{.budget = 4}.make_state({1, 4, 2, 0, 8}), Contains("dims"));
  REQUIRE_NOTHROW(dense{}.make_state(dm));  // keeps everything: no budget needed

  const tova p{.budget = 4};
  auto st = p.make_state(dm);
  std::vector<float> q(64, 0.1f), k(32, 0.1f), v(32, 0.1f), o(64);
  const auto q1 = from_bhnd<dynamic_extent, const float>(q.data(), 1, 4, 1, 8);
  const auto k1 = from_bhnd<dynamic_extent, const float>(k.data(), 1, 2, 1, 8);
  const auto v1 = from_bhnd<dynamic_extent, const float>(v.data(), 1, 2, 1, 8);
  const auto o1 = from_bhnd(o.data(), 1, 4, 1, 8);
  REQUIRE_NOTHROW(p.forward(st, {q1, k1, v1}, o1));
  const auto before = st.snapshot();
  REQUIRE_THROWS_WITH(p.forward(st, {from_bhnd<dynamic_extent, const float>(q.data(), 1, 2, 1, 8), k1, v1}, o1),
                      Contains("'q'") && Contains("(1, 2, 1, 8)"));
  REQUIRE_THROWS_WITH(p.forward(st, {q1, from_bhnd<dynamic_extent, const float>(k.data(), 1, 1, 1, 8), v1}, o1),
                      Contains("'k'"));
  REQUIRE_THROWS_WITH(p.forward(st, {q1, k1, from_bhnd<dynamic_extent, const float>(v.data(), 1, 2, 1, 4)}, o1),
                      Contains("'v'"));
  REQUIRE_THROWS_WITH(p.forward(st, {q1, k1, v1}, from_bhnd(o.data(), 1, 4, 2, 8)), Contains("'out'"));
  // Null data is rejected before the cache appends anything.
  REQUIRE_THROWS_WITH(p.forward(st, {q1, from_bhnd<dynamic_extent, const float>(nullptr, 1, 2, 1, 8), v1}, o1),
                      Contains("'k'") && Contains("null"));
  REQUIRE_THROWS_WITH(p.forward(st, {from_bhnd<dynamic_extent, const float>(nullptr, 1, 4, 1, 8), k1, v1}, o1),
                      Contains("'q'") && Contains("null"));
  REQUIRE_THROWS_WITH((tova{.budget = 5}.forward(st, {q1, k1, v1}, o1)), Contains("other parameters"));
  REQUIRE(st.size() == 1);  // rejected calls changed nothing
  REQUIRE(st.snapshot() == before);
}

TEST_CASE("tova: non-finite input is not hidden", "[policies][tova]") {
  // A NaN key poisons that step's output (never a silent number); the
  // eviction stays defined (NaN scores rank lowest, ties by age).
  std::vector<float> keys{1, 0, std::numeric_limits<float>::quiet_NaN(), 0.5f};
  std::vector<float> o;
  const auto s = run_scalar({.budget = 2}, keys, &o);
  REQUIRE(std::isnan(o[2]));
  REQUIRE(s[2].size() == 2);
}
