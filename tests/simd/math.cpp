// exp against double over the whole range softmax uses, for every backend:
// a strided sweep of every float bit pattern in [-104, 88.73], the subnormal
// region and the special values. The bounds are the ones math.hpp states.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "../support/support.hpp"

using namespace longctx;

namespace {
float from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
std::uint32_t to_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("exp: accuracy against double over [-104, 88.7]", "[simd]",
                        test::tested_archs) {
  using V = vec<float, TestType>;
  constexpr int W = V::width;
  constexpr double min_normal = std::numeric_limits<float>::min();
  constexpr double denorm_ulp = std::numeric_limits<float>::denorm_min();
  // Walk the float bit patterns: negative side from -0 down to -104, positive
  // side up to 88.72. Stride keeps the sweep ~10^7 points at scale 1.
  const std::uint32_t stride = static_cast<std::uint32_t>(std::max(1.0, 97 / test::scale()));
  std::vector<float> xs;
  for (std::uint32_t u = to_bits(-0.0f); u <= to_bits(-104.0f); u += stride) xs.push_back(from_bits(u));
  for (std::uint32_t u = 0; u <= to_bits(88.72f); u += stride) xs.push_back(from_bits(u));
  for (float x : {-87.3365f, -87.33655f, -87.34f, -103.97f, -103.972f, -104.0f, -88.0f, 88.72f,
                  88.7228f, -0.0f, 0.0f, 1e-30f, -1e-30f})
    xs.push_back(x);
  while (xs.size() % W) xs.push_back(0.0f);

  std::vector<float> ys(xs.size());
  for (std::size_t i = 0; i < xs.size(); i += W) exp(V::load(&xs[i])).store(&ys[i]);

  double max_ulp = 0, max_sub_abs = 0;
  float worst_x = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const double ref = std::exp(double(xs[i]));
    if (ref >= min_normal) {
      if (ref > std::numeric_limits<float>::max()) {
        CHECK(std::isinf(ys[i]));
        continue;
      }
      const double ulp = std::ldexp(1.0, std::ilogb(ref) - 23);
      const double e = std::abs(ys[i] - ref) / ulp;
      if (e > max_ulp) max_ulp = e, worst_x = xs[i];
    } else {
      max_sub_abs = std::max(max_sub_abs, std::abs(ys[i] - ref));
    }
  }
  INFO("arch " << TestType::name << " points " << xs.size() << " max ulp " << max_ulp << " at x = "
               << worst_x << ", subnormal max abs error " << max_sub_abs);
  CHECK(max_ulp <= 2.0);
  CHECK(max_sub_abs <= denorm_ulp);
  WARN("exp on " << TestType::name << ": max " << max_ulp << " ulp over " << xs.size()
                 << " points; subnormal abs error <= " << max_sub_abs);
}

TEMPLATE_LIST_TEST_CASE("exp: special values", "[simd]", test::tested_archs) {
  using V = vec<float, TestType>;
  constexpr float inf = std::numeric_limits<float>::infinity();
  auto e = [](float x) {
    float r[V::width];
    exp(V::broadcast(x)).store(r);
    return r[0];
  };
  CHECK(e(0.0f) == 1.0f);
  CHECK(e(-0.0f) == 1.0f);
  CHECK(e(-inf) == 0.0f);
  CHECK(e(-104.0f) == 0.0f);
  CHECK(e(-1e30f) == 0.0f);
  CHECK(e(inf) == inf);
  CHECK(e(89.0f) == inf);
  CHECK(std::isnan(e(std::numeric_limits<float>::quiet_NaN())));
  CHECK(!std::signbit(e(-200.0f)));
  // Scalar convenience has the same numerics as the vector path.
  CHECK(exp_scalar(-3.25f) == e(-3.25f));
}

TEMPLATE_LIST_TEST_CASE("exp2_weight: accuracy over [-126.5, 0], zero or normal below, NaN",
                        "[simd]", test::tested_archs) {
  using V = vec<float, TestType>;
  constexpr int W = V::width;
  constexpr float inf = std::numeric_limits<float>::infinity();
  const std::uint32_t stride = static_cast<std::uint32_t>(std::max(1.0, 37 / test::scale()));
  std::vector<float> xs;
  for (std::uint32_t u = to_bits(-0.0f); u <= to_bits(-130.0f); u += stride) xs.push_back(from_bits(u));
  for (float x : {0.0f, -0.0f, -0.5f, -1.0f, -1.5f, -125.5f, -126.0f, -126.25f, -126.5f, -126.75f, -127.0f,
                  -200.0f, -1e30f, -inf})
    xs.push_back(x);
  while (xs.size() % W) xs.push_back(0.0f);
  std::vector<float> ys(xs.size());
  for (std::size_t i = 0; i < xs.size(); i += W) exp2_weight(V::load(&xs[i])).store(&ys[i]);
  double max_ulp = 0;
  float worst_x = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    INFO("x = " << xs[i] << " -> " << ys[i]);
    // Never a subnormal: 0 or >= 2^-126.
    REQUIRE((ys[i] == 0.0f || ys[i] >= std::numeric_limits<float>::min()));
    REQUIRE(!std::signbit(ys[i]));
    if (xs[i] < -126.5f) {  // below the clamp: 0 (as 2^-126.5 itself rounds to)
      REQUIRE(ys[i] == 0.0f);
      continue;
    }
    const double ref = std::exp2(double(xs[i]));
    if (ys[i] == 0.0f) {  // flushed: only just above the clamp, where the true value is below 2^-126
      REQUIRE(ref < double(std::numeric_limits<float>::min()));
      continue;
    }
    const double ulp = std::ldexp(1.0, std::max(std::ilogb(ref), -126) - 23);
    const double e = std::abs(ys[i] - ref) / ulp;
    if (e > max_ulp) max_ulp = e, worst_x = xs[i];
  }
  INFO("arch " << TestType::name << " max ulp " << max_ulp << " at x = " << worst_x);
  CHECK(max_ulp <= 2.0);
  float one[W], nan[W];
  for (int i = 0; i < W; ++i) one[i] = 0.0f, nan[i] = std::numeric_limits<float>::quiet_NaN();
  exp2_weight(V::load(one)).store(one);
  exp2_weight(V::load(nan)).store(nan);
  CHECK(one[0] == 1.0f);  // the row's largest key weighs exactly 1
  CHECK(std::isnan(nan[0]));
  // Outside the domain (x > 0: a NaN logit hid from the row max): clamped to
  // weight 1, never a float-to-int overflow (UBSan fails this in scalar).
  for (float x : {1e-30f, 0.75f, 200.0f, 9.34e27f, std::numeric_limits<float>::max(), inf}) {
    float w[W];
    for (int i = 0; i < W; ++i) w[i] = x;
    exp2_weight(V::load(w)).store(w);
    INFO("x = " << x);
    CHECK(w[0] == 1.0f);
  }
}
