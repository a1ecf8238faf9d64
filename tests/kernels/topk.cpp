// argmin / top_k against brute force for every compiled backend: random
// lengths around the vector width, many exact ties (values from a small set),
// order keys that are a random permutation (the slots layout), NaN and +-inf.
#include <catch2/catch.hpp>

#include <algorithm>
#include <limits>
#include <numeric>
#include <vector>

#include <longctx/kernels/topk.hpp>

#include "../support/support.hpp"

using namespace longctx;

namespace {

// The rule, literally: NaN lowest, then value, then order key.
bool rule_less(float a, index_t oa, float b, index_t ob) {
  if (std::isnan(a) != std::isnan(b)) return std::isnan(a);
  if (!std::isnan(a) && a != b) return a < b;
  return oa < ob;
}

std::vector<float> tied_values(test::rng_t& g, index_t n, int distinct, bool specials) {
  std::vector<float> x(static_cast<std::size_t>(n));
  for (auto& v : x) v = float(test::uniform_int(g, 0, distinct - 1)) * 0.25f - 1.0f;
  if (specials && n > 0) {
    const float sp[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity()};
    for (int t = test::uniform_int(g, 1, 3); t > 0; --t)
      x[std::size_t(test::uniform_int(g, 0, int(n) - 1))] = sp[test::uniform_int(g, 0, 2)];
  }
  return x;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("argmin: first minimum by (value, order) against brute force",
                        "[kernels][topk]", test::tested_archs) {
  using Arch = TestType;
  const int cases = test::scaled(400);
  for (int c = 0; c < cases; ++c) {
    test::rng_t g(test::seed_for(71, std::uint64_t(c)));
    const index_t n = test::uniform_int(g, 0, 3) == 0 ? test::uniform_int(g, 1, 40) : test::uniform_int(g, 1, 3000);
    const bool specials = c % 5 == 4;
    const auto x = tied_values(g, n, test::uniform_int(g, 1, 6), specials);
    std::vector<index_t> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), index_t(100));
    std::shuffle(order.begin(), order.end(), g);
    INFO("case " << c << " n " << n << " specials " << specials);
    index_t want = 0, want_ordered = 0;
    for (index_t j = 1; j < n; ++j) {
      if (rule_less(x[std::size_t(j)], j, x[std::size_t(want)], want)) want = j;
      if (rule_less(x[std::size_t(j)], order[std::size_t(j)], x[std::size_t(want_ordered)],
                    order[std::size_t(want_ordered)]))
        want_ordered = j;
    }
    REQUIRE(argmin<Arch>(x.data(), n) == want);
    REQUIRE(argmin<Arch>(x.data(), n, order.data()) == want_ordered);
  }
}

TEST_CASE("top_k keeps what repeated argmin eviction keeps, in temporal order", "[kernels][topk]") {
  const int cases = test::scaled(200);
  for (int c = 0; c < cases; ++c) {
    test::rng_t g(test::seed_for(72, std::uint64_t(c)));
    const index_t n = test::uniform_int(g, 1, 300), k = test::uniform_int(g, 0, int(n) + 2);
    const auto x = tied_values(g, n, test::uniform_int(g, 1, 5), c % 4 == 3);
    std::vector<index_t> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), index_t(0));
    std::shuffle(order.begin(), order.end(), g);
    INFO("case " << c << " n " << n << " k " << k);
    // Brute force: evict argmin one at a time.
    std::vector<index_t> alive(static_cast<std::size_t>(n));
    std::iota(alive.begin(), alive.end(), index_t(0));
    while (index_t(alive.size()) > k) {
      std::size_t best = 0;
      for (std::size_t t = 1; t < alive.size(); ++t)
        if (rule_less(x[std::size_t(alive[t])], order[std::size_t(alive[t])], x[std::size_t(alive[best])],
                      order[std::size_t(alive[best])]))
          best = t;
      alive.erase(alive.begin() + std::ptrdiff_t(best));
    }
    std::sort(alive.begin(), alive.end(), [&](index_t a, index_t b) { return order[std::size_t(a)] < order[std::size_t(b)]; });
    std::vector<index_t> keep(static_cast<std::size_t>(n));
    const index_t m = top_k(x.data(), n, k, keep.data(), order.data());
    REQUIRE(m == std::min(k, n));
    keep.resize(std::size_t(m));
    REQUIRE(keep == alive);
  }
}
