// dot, dot_rows, axpy, scale, sum, max_value against double for every backend and
// every length 0..3W+1 (all tail cases) plus long odd lengths.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "../support/support.hpp"

using namespace longctx;

TEMPLATE_LIST_TEST_CASE("blas1 against double", "[simd]", test::tested_archs) {
  constexpr int W = TestType::width;
  std::vector<int> lengths;
  for (int n = 0; n <= 4 * W + 1; ++n) lengths.push_back(n);
  for (int n : {97, 128, 1000, 4099}) lengths.push_back(n);
  test::rng_t g(test::seed_for(2, 0));
  for (int n : lengths) {
    INFO("arch " << TestType::name << " n " << n);
    auto x = test::random_floats(g, std::size_t(n) + 1), y = test::random_floats(g, std::size_t(n) + 1);
    const float sentinel = y[std::size_t(n)];
    double d = 0, s = 0, abs_sum = 0, m = -std::numeric_limits<double>::infinity();
    for (int i = 0; i < n; ++i) {
      d += double(x[i]) * y[i];
      abs_sum += std::abs(double(x[i]) * y[i]);
      s += x[i];
      m = std::max<double>(m, x[i]);
    }
    // Summation error bound: n eps sum|terms| (any order).
    CHECK(std::abs(dot<TestType>(x.data(), y.data(), n) - d) <= (n + 1) * test::eps_f32 * abs_sum);
    double xs = 0;
    for (int i = 0; i < n; ++i) xs += std::abs(double(x[i]));
    CHECK(std::abs(sum<TestType>(x.data(), n) - s) <= (n + 1) * test::eps_f32 * xs);
    CHECK(max_value<TestType>(x.data(), n) == float(m));

    auto y2 = y;
    axpy<TestType>(0.75f, x.data(), y2.data(), n);
    for (int i = 0; i < n; ++i) CHECK(y2[i] == std::fma(0.75f, x[i], y[i]));
    CHECK(y2[std::size_t(n)] == sentinel);  // nothing written past n
    auto y3 = y;
    scale<TestType>(-1.5f, y3.data(), n);
    for (int i = 0; i < n; ++i) CHECK(y3[i] == -1.5f * y[i]);
    CHECK(y3[std::size_t(n)] == sentinel);
  }
  CHECK(max_value<TestType>(nullptr, 0) == -std::numeric_limits<float>::infinity());
}

// dot_rows: R dots of one vector against R rows of a padded matrix, each
// within the summation bound of its own dot, for every tail length; rows are
// read only up to n (the padding holds NaN, which would poison a sum).
TEMPLATE_LIST_TEST_CASE("dot_rows against double", "[simd]", test::tested_archs) {
  constexpr int W = TestType::width, R = 4;
  test::rng_t g(test::seed_for(2, 1));
  std::vector<int> lengths;
  for (int n = 0; n <= 4 * W + 1; ++n) lengths.push_back(n);
  for (int n : {59, 128, 1001}) lengths.push_back(n);
  for (int n : lengths) {
    INFO("arch " << TestType::name << " n " << n);
    const int ld = n + 3;
    auto a = test::random_floats(g, std::size_t(n)), b = test::random_floats(g, std::size_t(R * ld));
    for (int r = 0; r < R; ++r)
      for (int i = n; i < ld; ++i) b[std::size_t(r * ld + i)] = std::numeric_limits<float>::quiet_NaN();
    float out[R];
    dot_rows<R, TestType>(a.data(), b.data(), ld, n, out);
    for (int r = 0; r < R; ++r) {
      double d = 0, abs_sum = 0;
      for (int i = 0; i < n; ++i) {
        d += double(a[std::size_t(i)]) * b[std::size_t(r * ld + i)];
        abs_sum += std::abs(double(a[std::size_t(i)]) * b[std::size_t(r * ld + i)]);
      }
      CHECK(std::abs(out[r] - d) <= (n + 1) * test::eps_f32 * abs_sum);
    }
    prefetch(b.data(), n);  // a hint only: must not fault or change anything
  }
}
