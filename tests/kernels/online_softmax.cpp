// Online softmax: blocks folded one at a time, and two halves merged through
// their LSE, both equal the one-shot softmax in double; the exact-row
// fallback's finiteness test.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <longctx/kernels/exact_row.hpp>
#include <longctx/kernels/online_softmax.hpp>

#include "../support/support.hpp"

using namespace longctx;

TEMPLATE_LIST_TEST_CASE("softmax_block and merge_partial against double", "[kernels]",
                        test::tested_archs) {
  constexpr index_t W = TestType::width;
  test::rng_t g(test::seed_for(21, 0));
  for (int rep = 0; rep < test::scaled(200); ++rep) {
    const index_t blocks = test::uniform_int(g, 1, 6), bw = W * test::uniform_int(g, 1, 4), n = blocks * bw;
    const index_t d_v = test::uniform_int(g, 1, 40);
    const float spread = std::vector<float>{1, 10, 80}[std::size_t(rep % 3)];
    auto logits = test::random_floats(g, std::size_t(n), -spread, spread);
    auto v = test::random_floats(g, std::size_t(n * d_v));
    for (index_t j = 0; j < n; ++j)
      if (test::uniform_int(g, 0, 5) == 0) logits[std::size_t(j)] = neg_inf;  // masked keys
    // Reference.
    double m = -INFINITY, l = 0;
    for (float x : logits) m = std::max(m, double(x));
    std::vector<double> ref(std::size_t(d_v), 0.0);
    for (index_t j = 0; j < n; ++j) {
      if (logits[std::size_t(j)] == neg_inf) continue;
      const double p = std::exp(double(logits[std::size_t(j)]) - m);
      l += p;
      for (index_t c = 0; c < d_v; ++c) ref[std::size_t(c)] += p * v[std::size_t(j * d_v + c)];
    }
    // Online over blocks, with the first half and the second half as two partials.
    const index_t half = blocks / 2;
    softmax_state parts[2];
    std::vector<float> acc[2] = {std::vector<float>(std::size_t(d_v), 0.0f), std::vector<float>(std::size_t(d_v), 0.0f)};
    for (index_t blk = 0; blk < blocks; ++blk) {
      const int which = blk < half ? 0 : 1;
      std::vector<float> s(logits.begin() + blk * bw, logits.begin() + (blk + 1) * bw);
      const float alpha = softmax_block<TestType>(parts[which], s.data(), bw);
      for (auto& x : acc[which]) x *= alpha;
      for (index_t j = 0; j < bw; ++j)
        for (index_t c = 0; c < d_v; ++c)
          acc[which][std::size_t(c)] += s[std::size_t(j)] * v[std::size_t((blk * bw + j) * d_v + c)];
    }
    merge_partial<TestType>(parts[0], acc[0].data(), parts[1], acc[1].data(), d_v);
    INFO("arch " << TestType::name << " n " << n << " spread " << spread);
    if (l == 0) {
      CHECK(parts[0].lse() == neg_inf);
      CHECK(parts[0].inv_l() == 0.0f);
      continue;
    }
    CHECK(std::abs(parts[0].lse() - (m + std::log(l))) <= 8 * test::eps_f32 * (1 + spread + std::log(double(n))));
    for (index_t c = 0; c < d_v; ++c)
      REQUIRE(std::abs(acc[0][std::size_t(c)] * parts[0].inv_l() - ref[std::size_t(c)] / l) <=
              8 * test::eps_f32 * (1 + spread) * 1.0);
  }
}

// A NaN logit poisons its row in every position of a block, including where
// the max reduction drops it (x86 max returns one operand when the other is
// NaN), and huge logits beside it stay defined behaviour (fuzz-scalar found
// exp2_weight(+inf) reaching a float-to-int cast when the max missed the NaN).
TEMPLATE_LIST_TEST_CASE("softmax_block: a NaN anywhere in a block poisons the row", "[kernels]",
                        test::tested_archs) {
  constexpr index_t W = TestType::width;
  const float big = std::numeric_limits<float>::max(), inf = std::numeric_limits<float>::infinity();
  for (index_t n : {W, 2 * W, 3 * W})
    for (index_t at = 0; at < n; ++at)
      for (float first : {neg_inf, 0.0f, 3.0f})
        for (float other : {big, inf, 1e28f, 5.0f}) {
          softmax_state st;
          std::vector<float> s0(std::size_t(W), neg_inf);
          s0[0] = first;
          softmax_block<TestType>(st, s0.data(), W);
          std::vector<float> s(std::size_t(n), other);
          s[std::size_t(at)] = std::numeric_limits<float>::quiet_NaN();
          softmax_block<TestType>(st, s.data(), n);
          INFO("arch " << TestType::name << " n " << n << " NaN at " << at << " first " << first << " other " << other);
          CHECK(std::isnan(st.l));
          CHECK(std::isnan(st.lse()));
        }
}

// The fused -inf test of an unmasked tile: the same weights, factor and
// state as softmax_block, bit for bit, and saw_neg_inf exactly when a -inf
// is there (the float dot product of a visible key overflowed); with a NaN
// in the block the state is NaN, whatever saw_neg_inf says (needs_exact_row
// flags the row either way).
TEMPLATE_LIST_TEST_CASE(
    "softmax_block_unmasked: softmax_block's results and the -inf test in one pass", "[kernels]",
    test::tested_archs) {
  constexpr index_t W = TestType::width;
  test::rng_t g(test::seed_for(22, 0));
  const float big = std::numeric_limits<float>::max(), inf = std::numeric_limits<float>::infinity();
  for (int rep = 0; rep < test::scaled(400); ++rep) {
    const index_t n = W * test::uniform_int(g, 1, 5);
    auto s = test::random_floats(g, std::size_t(n), -30.0f, 30.0f);
    const int kind =
        rep % 5;  // 0 ordinary, 1 one -inf, 2 all -inf, 3 +inf and FLT_MAX, 4 a NaN (and a -inf)
    const auto at = [&] { return std::size_t(test::uniform_int(g, 0, int(n) - 1)); };
    if (kind == 1) s[at()] = neg_inf;
    if (kind == 2) std::fill(s.begin(), s.end(), neg_inf);
    if (kind == 3) s[at()] = inf, s[at()] = big;
    if (kind == 4) s[at()] = neg_inf, s[at()] = std::numeric_limits<float>::quiet_NaN();
    softmax_state a, b;
    if (rep % 2) {  // a state from an earlier block
      std::vector<float> s0 = test::random_floats(g, std::size_t(W), -30.0f, 30.0f);
      std::vector<float> s1 = s0;
      softmax_block<TestType>(a, s0.data(), W);
      softmax_block<TestType>(b, s1.data(), W);
    }
    std::vector<float> sa = s, sb = s;
    const float fa = softmax_block<TestType>(a, sa.data(), n);
    bool neg = false;
    const float fb = softmax_block_unmasked<TestType>(b, sb.data(), n, neg);
    INFO("arch " << TestType::name << " n " << n << " kind " << kind);
    const bool had_neg_inf = std::find(s.begin(), s.end(), neg_inf) != s.end();
    if (kind == 4) {
      CHECK(std::isnan(a.l));
      CHECK(std::isnan(b.l));
      continue;
    }
    CHECK(neg == had_neg_inf);
    CHECK(std::memcmp(&fa, &fb, sizeof fa) == 0);
    CHECK(std::memcmp(&a, &b, sizeof a) == 0);
    CHECK(std::memcmp(sa.data(), sb.data(), sizeof(float) * sa.size()) == 0);
  }
}

TEMPLATE_LIST_TEST_CASE("probabilities_from_logits", "[kernels]", test::tested_archs) {
  std::vector<float> lg{0.0f, std::log(3.0f), neg_inf, std::log(2.0f), 0.0f};
  const float lse = std::log(7.0f);
  std::vector<float> p(5);
  probabilities_from_logits<TestType>(lg.data(), lse, p.data(), 5);
  CHECK(p[0] == Approx(1.0 / 7).epsilon(1e-6));
  CHECK(p[1] == Approx(3.0 / 7).epsilon(1e-6));
  CHECK(p[2] == 0.0f);
  probabilities_from_logits<TestType>(lg.data(), neg_inf, p.data(), 5);
  for (float x : p) CHECK(x == 0.0f);
}

// row_finite, the exact-row fallback's output test: false exactly when one
// of the n floats is an infinity or a NaN, at every position of every
// length through the unrolled body, the vector tail and the partial tail,
// with the largest finite floats and subnormals counting as finite.
TEMPLATE_LIST_TEST_CASE("row_finite: any non-finite float, anywhere", "[kernels]",
                        test::tested_archs) {
  constexpr index_t W = TestType::width;
  const float big = std::numeric_limits<float>::max(), inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN(),
              tiny = std::numeric_limits<float>::denorm_min();
  for (index_t n = 0; n <= 5 * W + 3; ++n) {
    std::vector<float> x(std::size_t(n) + 1, 0.0f);
    for (index_t i = 0; i < n; ++i) x[std::size_t(i)] = i % 3 == 0 ? big : i % 3 == 1 ? -big : tiny;
    x[std::size_t(n)] = nan;  // one past the row: never read
    INFO("arch " << TestType::name << " n " << n);
    REQUIRE(row_finite<TestType>(x.data(), n));
    for (index_t at = 0; at < n; ++at)
      for (float bad : {inf, -inf, nan}) {
        const float keep = x[std::size_t(at)];
        x[std::size_t(at)] = bad;
        INFO("bad " << bad << " at " << at);
        REQUIRE_FALSE(row_finite<TestType>(x.data(), n));
        x[std::size_t(at)] = keep;
      }
  }
}
