// Views: extents, strides, conversions, slicing, both attention layouts.
#include <catch2/catch.hpp>

#include <numeric>
#include <type_traits>
#include <vector>

#include <longctx/tensor.hpp>

using namespace longctx;

TEST_CASE("extents: static and dynamic, conversions", "[tensor]") {
  using E = extents<index_t, dynamic_extent, 64>;
  STATIC_REQUIRE(E::rank() == 2);
  STATIC_REQUIRE(E::rank_dynamic() == 1);
  STATIC_REQUIRE(E::static_extent(1) == 64);
  const E a(10);      // dynamic extents only
  const E b(10, 64);  // all extents
  CHECK(a == b);
  CHECK(a.extent(0) == 10);
  CHECK(a.extent(1) == 64);
  CHECK_THROWS_AS(E(10, 63), longctx::invalid_argument);
  CHECK_THROWS_AS(E(-1), longctx::invalid_argument);
  // static -> dynamic implicit; dynamic -> static explicit and checked.
  dextents<index_t, 2> d = a;
  CHECK(d.extent(1) == 64);
  STATIC_REQUIRE(!std::is_convertible_v<dextents<index_t, 2>, E>);
  CHECK(E(d) == a);
  CHECK_THROWS_WITH(E(dextents<index_t, 2>(10, 32)), Catch::Contains("static extent is 64"));
}

TEST_CASE("strided_view: element access, strides, const and extent conversion", "[tensor]") {
  std::vector<float> buf(6 * 8);
  std::iota(buf.begin(), buf.end(), 0.0f);
  auto m = make_matrix<8>(buf.data(), 6, 8);  // (6, 8) static cols
  STATIC_REQUIRE(std::is_trivially_copyable_v<decltype(m)>);
  STATIC_REQUIRE(decltype(m)::static_extent(1) == 8);
  CHECK(m.stride(0) == 8);
  CHECK(m.stride(1) == 1);
  CHECK(m(2, 3) == 19.0f);
  m(2, 3) = -1.0f;
  CHECK(buf[19] == -1.0f);
  matrix_view<const float> c = m;  // T -> const T and static -> dynamic at once
  CHECK(c(2, 3) == -1.0f);
  CHECK(c.extent(1) == 8);
  STATIC_REQUIRE(!std::is_convertible_v<matrix_view<const float>, matrix_view<float>>);
  STATIC_REQUIRE(!std::is_convertible_v<matrix_view<const float>, matrix_view<const float, 8>>);
  matrix_view<const float, 8> back(c);  // explicit, checked
  CHECK(back(5, 7) == 47.0f);
  CHECK_THROWS_AS((matrix_view<const float, 4>(c)), longctx::invalid_argument);
  CHECK(m.size() == 48);
  CHECK(!m.empty());
  CHECK(make_matrix(buf.data(), 0, 8).empty());
  // Padded rows: ld > cols.
  auto padded = make_matrix(buf.data(), 4, 5, 8);
  CHECK(padded(3, 4) == buf[3 * 8 + 4]);
  CHECK_THROWS_AS(make_matrix(buf.data(), 4, 5, 3), longctx::invalid_argument);
}

TEST_CASE("strided_view: rows, row and token slicing share memory", "[tensor]") {
  std::vector<float> buf(10 * 4);
  std::iota(buf.begin(), buf.end(), 0.0f);
  auto m = make_matrix(buf.data(), 10, 4);
  auto seg = m.rows(3, 5);
  CHECK(seg.extent(0) == 5);
  CHECK(seg(0, 0) == 12.0f);
  CHECK(seg.data() == buf.data() + 12);
  CHECK(m.rows(10, 0).empty());
  CHECK_THROWS_WITH(m.rows(8, 3), Catch::Contains("rows") && Catch::Contains("[8, 11)") &&
                                      Catch::Contains("[0, 10)"));
  CHECK_THROWS_AS(m.rows(-1, 1), longctx::invalid_argument);
  auto r = m.row(7);
  STATIC_REQUIRE(decltype(r)::rank() == 1);
  CHECK(r(2) == 30.0f);
}

TEST_CASE("tensor4_view: (b, h, n, d) and (b, n, h, d) memory give the same logical view", "[tensor]") {
  const index_t B = 2, H = 3, N = 5, D = 4;
  std::vector<float> bhnd(B * H * N * D), bnhd(B * H * N * D);
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < H; ++h)
      for (index_t n = 0; n < N; ++n)
        for (index_t d = 0; d < D; ++d) {
          const float v = float(1000 * b + 100 * h + 10 * n + d);
          bhnd[((b * H + h) * N + n) * D + d] = v;
          bnhd[((b * N + n) * H + h) * D + d] = v;
        }
  auto t1 = from_bhnd(bhnd.data(), B, H, N, D);
  auto t2 = from_bnhd<4>(bnhd.data(), B, N, H, D);
  STATIC_REQUIRE(decltype(t2)::static_extent(3) == 4);
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < H; ++h) {
      auto m1 = t1.head(b, h);
      auto m2 = t2.head(b, h);  // (n, d) with row stride h*d: no copy
      CHECK(m2.stride(0) == H * D);
      CHECK(m1.stride(0) == D);
      for (index_t n = 0; n < N; ++n)
        for (index_t d = 0; d < D; ++d) CHECK(m1(n, d) == m2(n, d));
    }
  auto s = t2.tokens(1, 3);
  CHECK(s.extent(2) == 3);
  CHECK(s(1, 2, 0, 1) == t2(1, 2, 1, 1));
  CHECK(detail::concat(shape_of(t1)) == "(2, 3, 5, 4)");
}

TEST_CASE("boundary checks: unit inner stride and null data", "[tensor]") {
  std::vector<float> buf(20);
  auto m = make_matrix(buf.data(), 4, 5);
  CHECK_NOTHROW(require_unit_inner_stride(m, "f", "q"));
  matrix_view<float> strided(buf.data(), dextents<index_t, 2>(4, 2), {5, 2});
  CHECK_THROWS_WITH(require_unit_inner_stride(strided, "attention", "k"),
                    Catch::Contains("attention") && Catch::Contains("'k'") && Catch::Contains("stride 2"));
  matrix_view<float> null_view(nullptr, dextents<index_t, 2>(3, 4));
  CHECK_THROWS_WITH(require_data(null_view, "attention", "v"), Catch::Contains("null data with 12"));
  matrix_view<float> null_empty(nullptr, dextents<index_t, 2>(0, 4));
  CHECK_NOTHROW(require_data(null_empty, "attention", "v"));
}
