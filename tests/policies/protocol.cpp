// The generic property suite of the sequence-policy protocol (DESIGN.md
// section 7), instantiated over every sequence policy on every compiled
// backend (its storage and compute variants on the default one): any split of a stream into calls gives the same bits; snapshot,
// restore into a fresh state and continue gives the bits of the
// uninterrupted run; 1, 2 and 3 threads give the same bits; footprint() is
// constant once a bounded state is full; bad shapes throw invalid_argument
// naming the argument and leave the state unchanged. A new policy joins by
// adding one line to `cases` below (a variant: to `variant_cases`).
#include <catch2/catch.hpp>

#include <tuple>
#include <vector>

#include <longctx/policies/dense.hpp>
#include <longctx/policies/flash.hpp>
#include <longctx/policies/infini.hpp>
#include <longctx/policies/tova.hpp>

#include "../support/support.hpp"

using namespace longctx;

namespace {

// Each case: a policy configured for a short stream (small segments and
// budgets, so splits cross every boundary the policy has).
struct tova_case {
  static tova make() { return {.budget = 9}; }
  static constexpr bool bounded = true;
};
struct h2o_case {
  static h2o_cache make() { return {.budget = 9, .rule = {.recent = 3}}; }
  static constexpr bool bounded = true;
};
struct window_case {
  static window_cache make() { return {.budget = 7, .layout = kv_layout::compacted}; }
  static constexpr bool bounded = true;
};
struct sinks_case {
  static sinks_cache make() { return {.budget = 8, .rule = {.sinks = 2}}; }
  static constexpr bool bounded = true;
};
struct snapkv_case {
  static snapkv make() { return {.budget = 9, .rule = {.window = 3, .kernel = 3}}; }
  static constexpr bool bounded = true;
};
struct snapkv_reselect_case {
  static snapkv make() { return {.budget = 9, .rule = {.window = 3, .kernel = 3, .reselect_every = 4}}; }
  static constexpr bool bounded = true;
};
// 16-bit storage: the same properties hold for every storage type.
struct tova_bf16_case {
  static bounded_cache<tova_rule, bf16> make() { return {.budget = 9}; }
  static constexpr bool bounded = true;
};
struct sinks_f16_relative_case {  // re-rotation of 16-bit keys
  static bounded_cache<sinks_rule, f16> make() {
    return {.budget = 8, .rule = {.sinks = 2}, .positions = position_mode::cache_relative};
  }
  static constexpr bool bounded = true;
};
struct tova_q8_relative_case {  // int8 rows re-quantised as they re-rotate
  static bounded_cache<tova_rule, q8> make() { return {.budget = 9, .positions = position_mode::cache_relative}; }
  static constexpr bool bounded = true;
};
struct tova_q8_channels_case {  // per-channel key scales, calibrated on the first call
  static bounded_cache<tova_rule, q8> make() {
    return {.budget = 9, .positions = position_mode::cache_relative, .keys = key_scales::per_channel};
  }
  static constexpr bool bounded = true;
};
struct dense_f16_case {
  static bounded_cache<full_rule, f16> make() { return {}; }
  static constexpr bool bounded = false;
};
struct infini_bf16_case {
  static basic_infini<float, bf16> make() { return {.segment = 6, .update = update_rule::delta}; }
  static constexpr bool bounded = true;
};
struct infini_q8_case {  // int8 segment buffer: rows with their scales
  static basic_infini<float, q8> make() { return {.segment = 6, .update = update_rule::linear}; }
  static constexpr bool bounded = true;
};
struct infini_bf16_compute_case {  // bf16 products in the local attention (f32 where no 16-bit engine)
  static basic_infini<float, bf16> make() {
    // An engine this CPU cannot run (the amx build without AMX) throws
    // unsupported, which the engines test checks; here it is f32.
    compute_precision c = compute_precision::bf16;
    try {
      require_engine<default_arch>(c);
    } catch (const unsupported&) {
      c = compute_precision::f32;
    }
    return {.segment = 6, .update = update_rule::delta, .compute = c};
  }
  static constexpr bool bounded = true;
};
struct dense_case {
  static dense make() { return {}; }
  static constexpr bool bounded = false;
};
struct infini_case {
  static infini make() { return {.segment = 6, .update = update_rule::delta}; }
  static constexpr bool bounded = true;
};

struct flash_case {
  static flash make() { return {.chunk = 5}; }
  static constexpr bool bounded = true;
};
struct flash_bf16_compute_case {  // bf16 products in the quadratic part (f32 where no 16-bit engine)
  static flash make() {
    compute_precision c = compute_precision::bf16;
    try {
      require_engine<default_arch>(c);
    } catch (const unsupported&) {
      c = compute_precision::f32;
    }
    return {.chunk = 5, .compute = c};
  }
  static constexpr bool bounded = true;
};

// Every policy on every compiled backend; its storage and compute variants
// on the default backend only. What a variant changes (conversions, the
// 16-bit engines) is backend code the kernel suites test on every backend,
// and the properties here are the policy's bookkeeping, which no backend
// changes; the avx2 and aarch64 configurations run the variants on their
// own default backends. (All 17 cases on 3 backends made this the slowest
// file of every configuration to compile.)
using cases = std::tuple<tova_case, h2o_case, window_case, sinks_case, snapkv_case, snapkv_reselect_case, dense_case,
                         infini_case, flash_case>;
using variant_cases =
    std::tuple<tova_bf16_case, sinks_f16_relative_case, tova_q8_relative_case, tova_q8_channels_case, dense_f16_case,
               infini_bf16_case, infini_q8_case, infini_bf16_compute_case, flash_bf16_compute_case>;

// (case, arch) pairs for TEMPLATE_LIST_TEST_CASE.
template <class C, class A>
struct pair_of {
  using policy_case = C;
  using arch = A;
};
template <class Cs, class As>
struct product;
template <class... Cs, class... As>
struct product<std::tuple<Cs...>, std::tuple<As...>> {
  template <class C>
  using row = std::tuple<pair_of<C, As>...>;
  using type = decltype(std::tuple_cat(row<Cs>{}...));
};
using pairs =
    decltype(std::tuple_cat(typename product<cases, test::tested_archs>::type{},
                            typename product<variant_cases, std::tuple<default_arch>>::type{}));

struct token_stream {
  attention_dims dims{2, 4, 2, 16, 8};
  index_t t = 41;
  std::vector<float> q, k, v;
  explicit token_stream(std::uint64_t seed) {
    test::rng_t g(seed);
    q = test::random_floats(g, std::size_t(dims.b * dims.h * t * dims.d));
    k = test::random_floats(g, std::size_t(dims.b * dims.h_kv * t * dims.d));
    v = test::random_floats(g, std::size_t(dims.b * dims.h_kv * t * dims.d_v));
    // One key channel 30x the others, as LLM keys have: per_channel key
    // scales then differ from 1.
    for (std::size_t r = 0; r < k.size() / std::size_t(dims.d); ++r) k[r * std::size_t(dims.d) + 5] *= 30;
  }
  template <class Input>
  Input tokens(index_t i, index_t n) const {
    return Input{from_bhnd<dynamic_extent, const float>(q.data(), dims.b, dims.h, t, dims.d).tokens(i, n),
                 from_bhnd<dynamic_extent, const float>(k.data(), dims.b, dims.h_kv, t, dims.d).tokens(i, n),
                 from_bhnd<dynamic_extent, const float>(v.data(), dims.b, dims.h_kv, t, dims.d_v).tokens(i, n)};
  }
};

// Runs the stream through fresh state in calls of the given lengths; returns
// every output, (b, h, t, d_v) contiguous.
template <class Arch, class P, class Exec = serial_executor>
std::vector<float> run(const P& p, const token_stream& s, const std::vector<index_t>& calls, Exec&& exec = {},
                       typename P::state_type* keep = nullptr) {
  auto st = p.make_state(s.dims);
  std::vector<float> out(std::size_t(s.dims.b * s.dims.h * s.t * s.dims.d_v), -1.0f);
  const auto o = from_bhnd(out.data(), s.dims.b, s.dims.h, s.t, s.dims.d_v);
  index_t at = 0;
  for (index_t n : calls) {
    p.template forward<Arch>(st, s.tokens<typename P::input_type>(at, n), o.tokens(at, n), exec);
    at += n;
  }
  if (keep) *keep = std::move(st);
  return out;
}

std::vector<index_t> random_split(test::rng_t& g, index_t t) {
  std::vector<index_t> calls;
  for (index_t at = 0; at < t;) {
    const index_t n = std::min<index_t>(t - at, test::uniform_int(g, 1, 12));
    calls.push_back(n);
    at += n;
  }
  return calls;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("protocol: any split of the stream gives the same bits", "[policies][protocol]", pairs) {
  using Arch = typename TestType::arch;
  const auto p = TestType::policy_case::make();
  const token_stream s(7);
  // The reference is one token per call (the recurrence's own definition).
  // A cache's default prefill (full_then_top_k) is by definition another
  // selection, and dense prefill and decode run different kernels (equal to
  // rounding), so caches are split-tested with prefill_mode::token_by_token;
  // Infini and FLASH run segments of every length here.
  auto single = p;
  if constexpr (requires { single.prefill; }) single.prefill = prefill_mode::token_by_token;
  const auto want = run<Arch>(single, s, std::vector<index_t>(std::size_t(s.t), 1));
  for (int c = 0; c < 6; ++c) {
    test::rng_t g(test::seed_for(301, std::uint64_t(c)));
    const auto calls = random_split(g, s.t);
    INFO("split " << c);
    REQUIRE(run<Arch>(single, s, calls) == want);
  }
  REQUIRE(run<Arch>(single, s, {s.t}) == want);
}

TEMPLATE_LIST_TEST_CASE("protocol: snapshot, restore, continue is the uninterrupted run", "[policies][protocol]",
                        pairs) {
  using Arch = typename TestType::arch;
  using P = decltype(TestType::policy_case::make());
  const P p = TestType::policy_case::make();
  const token_stream s(8);
  const std::vector<index_t> calls{5, 1, 7, 1, 1, 9, 3, 14};
  const auto want = run<Arch>(p, s, calls);
  for (std::size_t cut = 1; cut < calls.size(); ++cut) {
    INFO("snapshot after call " << cut);
    typename P::state_type a;
    const std::vector<index_t> head(calls.begin(), calls.begin() + std::ptrdiff_t(cut));
    auto out = run<Arch>(p, s, head, serial_executor{}, &a);
    const auto bytes = a.snapshot();
    auto b = p.make_state(s.dims);
    b.restore(bytes);
    REQUIRE(b.snapshot() == bytes);
    const auto o = from_bhnd(out.data(), s.dims.b, s.dims.h, s.t, s.dims.d_v);
    index_t at = 0;
    for (std::size_t i = 0; i < cut; ++i) at += calls[i];
    for (std::size_t i = cut; i < calls.size(); ++i) {
      p.template forward<Arch>(b, s.tokens<typename P::input_type>(at, calls[i]), o.tokens(at, calls[i]));
      at += calls[i];
    }
    REQUIRE(out == want);
  }
}

TEMPLATE_LIST_TEST_CASE("protocol: 1, 2 and 3 threads give the same bits", "[policies][protocol]", pairs) {
  using Arch = typename TestType::arch;
  const auto p = TestType::policy_case::make();
  const token_stream s(9);
  const std::vector<index_t> calls{17, 1, 1, 6, 16};
  const auto want = run<Arch>(p, s, calls);
  for (std::size_t threads : {1, 2, 3}) {
    thread_pool pool(threads);
    INFO("threads " << threads);
    REQUIRE(run<Arch>(p, s, calls, pool) == want);
  }
}

TEMPLATE_LIST_TEST_CASE("protocol: the footprint stays constant over a long stream", "[policies][protocol]",
                        pairs) {
  using Arch = typename TestType::arch;
  using C = typename TestType::policy_case;
  const auto p = C::make();
  const token_stream s(10);
  auto st = p.make_state(s.dims);
  std::vector<float> out(std::size_t(s.dims.b * s.dims.h * s.dims.d_v));
  const auto o = from_bhnd(out.data(), s.dims.b, s.dims.h, 1, s.dims.d_v);
  std::vector<std::size_t> sizes;
  for (int round = 0; round < 6; ++round)
    for (index_t i = 0; i < s.t; ++i) {
      p.template forward<Arch>(st, s.tokens<typename decltype(p)::input_type>(i, 1), o);
      sizes.push_back(st.footprint());
    }
  REQUIRE(sizes.back() > 0);
  if constexpr (C::bounded) {
    // Full after the first pass: from then on the bytes never change.
    for (std::size_t i = std::size_t(s.t); i < sizes.size(); ++i) REQUIRE(sizes[i] == sizes.back());
  } else {
    REQUIRE(sizes.back() > sizes.front());  // dense grows with the stream
  }
}

TEMPLATE_LIST_TEST_CASE("protocol: bad shapes throw naming the argument, the state unchanged", "[policies][protocol]",
                        pairs) {
  using Arch = typename TestType::arch;
  using P = decltype(TestType::policy_case::make());
  const P p = TestType::policy_case::make();
  const token_stream s(11);
  auto st = p.make_state(s.dims);
  std::vector<float> out(std::size_t(s.dims.b * s.dims.h * s.t * s.dims.d_v));
  const auto o = from_bhnd(out.data(), s.dims.b, s.dims.h, s.t, s.dims.d_v);
  p.template forward<Arch>(st, s.tokens<typename P::input_type>(0, 5), o.tokens(0, 5));
  const auto before = st.snapshot();
  using Catch::Contains;
  auto in = s.tokens<typename P::input_type>(5, 2);
  auto bad_q = in;
  bad_q.q = from_bhnd<dynamic_extent, const float>(s.q.data(), s.dims.b, s.dims.h - 1, 2, s.dims.d);
  REQUIRE_THROWS_WITH(p.template forward<Arch>(st, bad_q, o.tokens(5, 2)), Contains("'q'"));
  auto bad_k = in;
  bad_k.k = from_bhnd<dynamic_extent, const float>(s.k.data(), s.dims.b, s.dims.h_kv, 3, s.dims.d);
  REQUIRE_THROWS_WITH(p.template forward<Arch>(st, bad_k, o.tokens(5, 2)), Contains("'k'"));
  auto bad_v = in;
  bad_v.v = from_bhnd<dynamic_extent, const float>(s.v.data(), s.dims.b, s.dims.h_kv, 2, s.dims.d_v + 1);
  REQUIRE_THROWS_WITH(p.template forward<Arch>(st, bad_v, o.tokens(5, 2)), Contains("'v'"));
  auto null_k = in;
  null_k.k = from_bhnd<dynamic_extent, const float>(nullptr, s.dims.b, s.dims.h_kv, 2, s.dims.d);
  REQUIRE_THROWS_WITH(p.template forward<Arch>(st, null_k, o.tokens(5, 2)), Contains("'k'"));
  REQUIRE_THROWS_WITH(p.template forward<Arch>(st, in, o.tokens(5, 3)), Contains("out"));
  REQUIRE_THROWS_AS(p.make_state(attention_dims{1, 3, 2, 16, 8}), longctx::invalid_argument);
  REQUIRE_THROWS_AS(p.make_state(attention_dims{1, 4, 2, 0, 8}), longctx::invalid_argument);
  REQUIRE(st.snapshot() == before);
}
