// Every vec<float, Arch> primitive against scalar double arithmetic, for every
// compiled backend, including partial loads/stores at every tail length.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "../support/support.hpp"

using namespace longctx;

TEMPLATE_LIST_TEST_CASE("vec: load, store and partial tails", "[simd]", test::tested_archs) {
  using V = vec<float, TestType>;
  constexpr int W = V::width;
  std::vector<float> src(W), dst(W + 1, -7.0f);
  for (int i = 0; i < W; ++i) src[i] = float(i + 1);
  V::load(src.data()).store(dst.data());
  for (int i = 0; i < W; ++i) CHECK(dst[i] == src[i]);
  CHECK(dst[W] == -7.0f);
  for (int n = 0; n <= W; ++n) {
    INFO("arch " << TestType::name << " n " << n);
    std::vector<float> out(W + 1, -7.0f);
    V::load_partial(src.data(), n).store(out.data());
    for (int i = 0; i < W; ++i) CHECK(out[i] == (i < n ? src[i] : 0.0f));
    std::vector<float> part(W + 1, -7.0f);
    V::broadcast(3.0f).store_partial(part.data(), n);
    for (int i = 0; i <= W; ++i) CHECK(part[i] == (i < n ? 3.0f : -7.0f));
  }
}

TEMPLATE_LIST_TEST_CASE("vec: arithmetic, fma and reductions match double", "[simd]",
                        test::tested_archs) {
  using V = vec<float, TestType>;
  constexpr int W = V::width;
  test::rng_t g(test::seed_for(1, 0));
  for (int rep = 0; rep < 200; ++rep) {
    auto a = test::random_floats(g, W, -100, 100), b = test::random_floats(g, W, -100, 100),
         c = test::random_floats(g, W, -100, 100);
    const V va = V::load(a.data()), vb = V::load(b.data()), vc = V::load(c.data());
    std::vector<float> r(W);
    auto check = [&](V v, auto expected) {
      v.store(r.data());
      for (int i = 0; i < W; ++i) CHECK(r[i] == expected(i));
    };
    check(va + vb, [&](int i) { return a[i] + b[i]; });
    check(va - vb, [&](int i) { return a[i] - b[i]; });
    check(va * vb, [&](int i) { return a[i] * b[i]; });
    check(va / vb, [&](int i) { return a[i] / b[i]; });
    check(-va, [&](int i) { return -a[i]; });
    // Fused: one rounding of the exact a*b+c; std::fma is correctly rounded.
    check(fma(va, vb, vc), [&](int i) { return std::fma(a[i], b[i], c[i]); });
    check(fnma(va, vb, vc), [&](int i) { return std::fma(-a[i], b[i], c[i]); });
    check(max(va, vb), [&](int i) { return std::max(a[i], b[i]); });
    check(min(va, vb), [&](int i) { return std::min(a[i], b[i]); });
    check(round_nearest(va), [&](int i) { return std::nearbyint(a[i]); });
    check(round_down(va), [&](int i) { return std::floor(a[i]); });
    check(select(cmp_lt(va, vb), va, vc), [&](int i) { return a[i] < b[i] ? a[i] : c[i]; });
    double s = 0, m = -1e300;
    for (int i = 0; i < W; ++i) s += a[i], m = std::max<double>(m, a[i]);
    CHECK(std::abs(reduce_add(va) - s) <= 4 * W * test::eps_f32 * 100);
    CHECK(reduce_max(va) == float(m));
  }
  for (int e = -126; e <= 127; ++e) {
    std::vector<float> r(W);
    pow2i(V::broadcast(float(e))).store(r.data());
    CHECK(r[0] == std::ldexp(1.0f, e));
  }
  // round_nearest breaks ties to even, like the default rounding mode.
  std::vector<float> r(W);
  round_nearest(V::broadcast(2.5f)).store(r.data());
  CHECK(r[0] == 2.0f);
  // round_down: toward -inf, integers and signed zeros unchanged.
  for (float x : {-2.5f, -2.0f, -1e-30f, -0.0f, 0.0f, 0.75f, -126.5f}) {
    round_down(V::broadcast(x)).store(r.data());
    INFO("x = " << x);
    CHECK(r[0] == std::floor(x));
    CHECK(std::signbit(r[0]) == std::signbit(std::floor(x)));
  }
}

TEST_CASE("arch: default and compiled backends are consistent", "[simd]") {
  bool has_default = false;
  std::apply([&](auto... a) { ((has_default |= std::is_same_v<decltype(a), default_arch>), ...); },
             test::tested_archs{});
  CHECK(has_default);
  CHECK(std::is_same_v<std::tuple_element_t<0, compiled_archs>, scalar>);
  STATIC_REQUIRE(arch_tag<scalar>);
  STATIC_REQUIRE(vec<float, default_arch>::width == default_arch::width);
}
