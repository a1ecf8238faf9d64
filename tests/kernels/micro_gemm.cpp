// block_gemm (the register-blocked micro-kernel swept over a tile, with row
// and vector tails) against double on every shape class, every backend.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include <longctx/kernels/micro_gemm.hpp>

#include "../support/support.hpp"

using namespace longctx;

TEMPLATE_LIST_TEST_CASE("block_gemm against double, overwrite and accumulate", "[kernels]",
                        test::tested_archs) {
  constexpr index_t W = TestType::width;
  test::rng_t g(test::seed_for(20, 0));
  for (int rep = 0; rep < test::scaled(300); ++rep) {
    const index_t m = test::uniform_int(g, 1, 20), n = W * test::uniform_int(g, 1, 12), k = test::uniform_int(g, 0, 70);
    const index_t lda = k + test::uniform_int(g, 0, 3), ldb = n + W * test::uniform_int(g, 0, 2),
                  ldc = n + W * test::uniform_int(g, 0, 2);
    auto a = test::random_floats(g, std::size_t(m * lda + 1)), b = test::random_floats(g, std::size_t(k * ldb + 1)),
         c = test::random_floats(g, std::size_t(m * ldc + 1)), rs = test::random_floats(g, std::size_t(m));
    for (bool acc : {false, true}) {
      auto out = c;
      if (acc)
        block_gemm<TestType, true>(m, n, k, a.data(), lda, b.data(), ldb, out.data(), ldc, rs.data());
      else
        block_gemm<TestType, false>(m, n, k, a.data(), lda, b.data(), ldb, out.data(), ldc);
      for (index_t i = 0; i < m; ++i)
        for (index_t j = 0; j < n; ++j) {
          double ref = acc ? double(rs[std::size_t(i)]) * c[std::size_t(i * ldc + j)] : 0.0, mag = std::abs(ref);
          for (index_t p = 0; p < k; ++p) {
            ref += double(a[std::size_t(i * lda + p)]) * b[std::size_t(p * ldb + j)];
            mag += std::abs(double(a[std::size_t(i * lda + p)]) * b[std::size_t(p * ldb + j)]);
          }
          INFO("arch " << TestType::name << " m " << m << " n " << n << " k " << k << " acc " << acc);
          // Sequential FMA chain: error <= (k + 2) eps sum |terms|.
          REQUIRE(std::abs(out[std::size_t(i * ldc + j)] - ref) <= (k + 2) * test::eps_f32 * mag + 1e-30);
        }
      // Padding columns of C beyond n untouched.
      for (index_t i = 0; i < m; ++i)
        for (index_t j = n; j < ldc; ++j) REQUIRE(out[std::size_t(i * ldc + j)] == c[std::size_t(i * ldc + j)]);
    }
  }
}
