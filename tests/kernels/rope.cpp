// RoPE (kernels/rope.hpp), the library's only implementation: the row
// rotation against a long-double formula, delta 0 an exact copy, rotation
// by a then b equal to rotation by a + b to rounding, odd d (last component
// untouched), in place equal to out of place, the matrix form's positions.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <longctx/kernels/rope.hpp>

#include "../support/support.hpp"

using namespace longctx;

namespace {

// R(delta) in, every step in long double.
std::vector<long double> rope_ld(const std::vector<float>& in, long double delta, long double base) {
  const index_t d = index_t(in.size()), half = d / 2;
  std::vector<long double> out(in.begin(), in.end());
  for (index_t i = 0; i < half; ++i) {
    const long double a = delta * std::pow(base, -2.0L * (long double)i / (long double)d);
    const long double x = in[std::size_t(i)], y = in[std::size_t(i + half)];
    out[std::size_t(i)] = x * std::cos(a) - y * std::sin(a);
    out[std::size_t(i + half)] = y * std::cos(a) + x * std::sin(a);
  }
  return out;
}

// Each output rounds once to float (half an ulp of |x| + |y|) from a double
// expression: products and sum cost a few double eps, the angle
// delta * base^(-2i/d) 2 double eps relative, i.e. |delta| 2 eps_f64
// radians (0.5 float ulp at |delta| = 2^28; negligible at real positions).
double pair_bound(const std::vector<float>& in, index_t c, double delta = 0) {
  const index_t d = index_t(in.size()), half = d / 2;
  if (c >= 2 * half) return 0;  // unrotated: exact
  const index_t o = c < half ? c + half : c - half;
  const double mag = std::abs(double(in[std::size_t(c)])) + std::abs(double(in[std::size_t(o)]));
  constexpr double eps_f64 = std::numeric_limits<double>::epsilon();
  return (test::eps_f32 + (4 + 2 * std::abs(delta)) * eps_f64) * mag;
}

}  // namespace

TEST_CASE("rope_rotate_row: against long double, any d, large and negative deltas", "[rope]") {
  for (int cs = 0; cs < test::scaled(200); ++cs) {
    const auto seed = test::seed_for(301, std::uint64_t(cs));
    test::rng_t g(seed);
    const index_t d = test::uniform_int(g, 1, 160);
    const double base = cs % 5 == 0 ? 500000.0 : 10000.0;
    const double delta = cs % 4 == 0   ? double(test::uniform_int(g, 0, 1 << 30)) * 2.0
                         : cs % 4 == 1 ? -double(test::uniform_int(g, 1, 5000))
                                       : double(test::uniform_int(g, 1, 70000));
    INFO("seed " << seed << " d " << d << " delta " << delta << " base " << base);
    const std::vector<float> in = test::random_floats(g, std::size_t(d), -3.0f, 3.0f);
    std::vector<float> out(static_cast<std::size_t>(d), -7.0f);
    rope_rotate_row(in.data(), out.data(), d, delta, base);
    const auto want = rope_ld(in, delta, base);
    for (index_t c = 0; c < d; ++c)
      REQUIRE(std::abs((long double)out[std::size_t(c)] - want[std::size_t(c)]) <= pair_bound(in, c, delta));
    if (d % 2) REQUIRE(out.back() == in.back());  // odd d: the last component is not rotated
    // In place gives the same bits.
    std::vector<float> inplace = in;
    rope_rotate_row(inplace.data(), inplace.data(), d, delta, base);
    REQUIRE(inplace == out);
  }
}

TEST_CASE("rope_rotate_row: delta 0 copies bit for bit", "[rope]") {
  test::rng_t g(test::seed_for(302, 0));
  for (index_t d : {1, 2, 7, 64, 129}) {
    std::vector<float> in = test::random_floats(g, std::size_t(d));
    in[0] = -0.0f;  // signed zero, denormal and NaN survive the copy
    if (d > 2) in[1] = 1e-40f, in[2] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> out(static_cast<std::size_t>(d), 5.0f);
    rope_rotate_row(in.data(), out.data(), d, 0.0, 10000.0);
    REQUIRE(std::memcmp(in.data(), out.data(), sizeof(float) * std::size_t(d)) == 0);
  }
}

TEST_CASE("rope_rotate_row: rotating by a then b equals rotating by a + b to rounding", "[rope]") {
  for (int cs = 0; cs < test::scaled(100); ++cs) {
    const auto seed = test::seed_for(303, std::uint64_t(cs));
    test::rng_t g(seed);
    const index_t d = test::uniform_int(g, 1, 130);
    const double a = double(test::uniform_int(g, -100000, 100000)), b = double(test::uniform_int(g, -100000, 100000));
    INFO("seed " << seed << " d " << d << " a " << a << " b " << b);
    const std::vector<float> in = test::random_floats(g, std::size_t(d));
    std::vector<float> ab(static_cast<std::size_t>(d)), once(static_cast<std::size_t>(d));
    rope_rotate_row(in.data(), ab.data(), d, a, 10000.0);
    rope_rotate_row(ab.data(), ab.data(), d, b, 10000.0);
    rope_rotate_row(in.data(), once.data(), d, a + b, 10000.0);
    // Two roundings against one: at most ~2 ulps of the pair's magnitude.
    for (index_t c = 0; c < d; ++c) REQUIRE(std::abs(double(ab[std::size_t(c)]) - double(once[std::size_t(c)])) <=
                                            3 * pair_bound(in, c) + 1e-45);
    // And back: R(-a) R(a) is the identity to rounding.
    std::vector<float> back(static_cast<std::size_t>(d));
    rope_rotate_row(in.data(), back.data(), d, a, 10000.0);
    rope_rotate_row(back.data(), back.data(), d, -a, 10000.0);
    for (index_t c = 0; c < d; ++c)
      REQUIRE(std::abs(double(back[std::size_t(c)]) - double(in[std::size_t(c)])) <= 2 * pair_bound(in, c));
  }
}

TEST_CASE("rope_rotate: row r of the matrix is rope_rotate_row by position0 + r", "[rope]") {
  test::rng_t g(test::seed_for(304, 0));
  for (index_t d : {1, 2, 5, 64, 127}) {
    const index_t n = 9, p0 = index_t(1) << 24;  // past float's exact integers
    const std::vector<float> x0 = test::random_floats(g, std::size_t(n * d));
    std::vector<float> x = x0;
    rope_rotate(make_matrix(x.data(), n, d), p0, 10000.0);
    for (index_t r = 0; r < n; ++r) {
      std::vector<float> row(static_cast<std::size_t>(d));
      rope_rotate_row(x0.data() + r * d, row.data(), d, double(p0 + r), 10000.0);
      REQUIRE(std::equal(row.begin(), row.end(), x.begin() + r * d));
    }
  }
  std::vector<float> bad(4);
  CHECK_THROWS_AS(rope_rotate(make_matrix(bad.data(), 1, 4), 0, 0.0), invalid_argument);
}
