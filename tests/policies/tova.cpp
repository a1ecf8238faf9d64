// TOVA and the bounded-cache baselines (window, sinks, h2o, full): the decode
// step and segment prefill against the double oracle (outputs and the exact
// kept sets, the evicted row being the brute-force argmin), budget >= n equal
// to dense attention bit for bit, hand-checked sequences for every policy,
// budgets 0/1, H2O new-token protection, layouts, snapshot/restore, bad input.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <optional>
#include <set>
#include <vector>

#include <longctx/policies/tova.hpp>
#include <longctx/reference/tova.hpp>

#include "../support/support.hpp"
#include "cache_spec.hpp"

using namespace longctx;
using reference::eviction;
using reference::eviction_name;
using namespace cache_test;

TEMPLATE_LIST_TEST_CASE("tova: every policy, random shapes, step by step against the double oracle",
                        "[policies][tova]", test::tested_archs) {
  oracle_sweep<TestType, float>(91, test::scaled(150));
}

TEMPLATE_LIST_TEST_CASE("tova: budget >= n is dense attention, bit for bit", "[policies][tova]",
                        test::tested_archs) {
  dense_sweep<TestType, float>(92, test::scaled(25));
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

TEMPLATE_LIST_TEST_CASE("tova: prefill modes and layouts agree", "[policies][tova]",
                        test::tested_archs) {
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

// A restored cache gets the capacity make_state gives (budget + 1 rows per
// lane), so its footprint stays that of the uninterrupted run; it was sized
// to exactly its rows and doubled to 2 x budget on the next step.
TEST_CASE("tova: a restored full cache keeps the steady-state capacity", "[tova][snapshot]") {
  const tova p{.budget = 4};
  const attention_dims dm{1, 2, 1, 8, 8};
  std::vector<float> q(16), k(8), v(8), o(16);
  auto st = p.make_state(dm);
  const auto step = [&](auto& s, int t) {
    for (std::size_t i = 0; i < q.size(); ++i) q[i] = std::sin(float(t * 16 + int(i)));
    for (std::size_t i = 0; i < k.size(); ++i) k[i] = std::cos(float(t * 8 + int(i))), v[i] = float(i);
    p.forward(s, {from_bhnd<dynamic_extent, const float>(q.data(), 1, 2, 1, 8),
                  from_bhnd<dynamic_extent, const float>(k.data(), 1, 1, 1, 8),
                  from_bhnd<dynamic_extent, const float>(v.data(), 1, 1, 1, 8)},
              from_bhnd(o.data(), 1, 2, 1, 8));
  };
  for (int t = 0; t < 10; ++t) step(st, t);
  const index_t cap = st.cache().capacity();
  REQUIRE(cap == p.budget + 1);
  auto fresh = p.make_state(dm);
  fresh.restore(st.snapshot());
  REQUIRE(fresh.cache().capacity() == cap);
  step(st, 10);
  step(fresh, 10);
  REQUIRE(fresh.cache().capacity() == cap);
  REQUIRE(fresh.snapshot() == st.snapshot());
}
