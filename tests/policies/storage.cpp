// Bounded caches (every eviction rule, and dense) storing K/V as bf16 or
// f16: step by step against the double oracle attending the stored values
// (fp32 tolerances: the conversion on load is exact, the rounding on store
// is the oracle's too), and budget >= n equal, bit for bit, to dense
// attention over the stored rows. The storage's own error against float
// K/V is checked in tests/kernels/storage.cpp; the split, snapshot and
// thread properties in protocol.cpp.
#include <catch2/catch.hpp>

#include "../support/support.hpp"
#include "cache_spec.hpp"

using namespace cache_test;

TEMPLATE_LIST_TEST_CASE("bounded caches in bf16 and f16: every rule against the double oracle",
                        "[policies][storage]", compiled_archs) {
  oracle_sweep<TestType, bf16>(93, test::scaled(60));
  oracle_sweep<TestType, f16>(94, test::scaled(60));
}

TEMPLATE_LIST_TEST_CASE("bounded caches in bf16 and f16: budget >= n is dense attention over the stored rows",
                        "[policies][storage]", compiled_archs) {
  dense_sweep<TestType, bf16>(95, test::scaled(12));
  dense_sweep<TestType, f16>(96, test::scaled(12));
}

TEST_CASE("bounded caches in bf16 and f16: footprint counts 2-byte rows", "[policies][storage]") {
  const attention_dims dm{1, 4, 2, 64, 64};
  const auto f32 = tova{.budget = 100}.make_state(dm);
  const auto b16 = bounded_cache<tova_rule, bf16>{.budget = 100}.make_state(dm);
  const auto h16 = bounded_cache<tova_rule, f16>{.budget = 100}.make_state(dm);
  // K and V are 256 of the 264 bytes per float row (with the position).
  REQUIRE(b16.footprint() == h16.footprint());
  REQUIRE(double(b16.footprint()) / double(f32.footprint()) == Approx((128 * 2 + 8) / double(128 * 4 + 8)));
  // A snapshot of one type is not restored into another.
  auto copy = b16;
  REQUIRE_THROWS_AS(copy.restore(h16.snapshot()), longctx::invalid_argument);
  REQUIRE_THROWS_AS(copy.restore(f32.snapshot()), longctx::invalid_argument);
}
