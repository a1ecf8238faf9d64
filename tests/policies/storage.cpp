// Bounded caches (every eviction rule, and dense) storing K/V as bf16 or
// f16: step by step against the double oracle attending the stored values
// (fp32 tolerances: the conversion on load is exact, the rounding on store
// is the oracle's too), and budget >= n equal, bit for bit, to dense
// attention over the stored rows. The storage's own error against float
// K/V is checked in tests/kernels/storage.cpp; the split, snapshot and
// thread properties in protocol.cpp.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include <longctx/policies/infini.hpp>

#include "../support/support.hpp"
#include "cache_spec.hpp"

using namespace cache_test;

TEMPLATE_LIST_TEST_CASE("bounded caches in bf16 and f16: every rule against the double oracle",
                        "[policies][storage]", test::tested_archs) {
  oracle_sweep<TestType, bf16>(93, test::scaled(60));
  oracle_sweep<TestType, f16>(94, test::scaled(60));
}

TEMPLATE_LIST_TEST_CASE(
    "bounded caches in bf16 and f16: budget >= n is dense attention over the stored rows",
    "[policies][storage]", test::tested_archs) {
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

namespace {

// x rounded to T and back: the values a T cache stores, as floats.
template <class T>
std::vector<float> rounded(const std::vector<float>& x) {
  std::vector<float> r(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) r[i] = T::from_float(x[i]).to_float();
  return r;
}

// The stream through a fresh state of p, in the given calls; every output.
template <class Arch, class P>
std::vector<float> outputs(const P& p, const attention_dims& dm, index_t t, const std::vector<float>& q,
                           const std::vector<float>& k, const std::vector<float>& v, const std::vector<index_t>& calls) {
  auto st = p.make_state(dm);
  const index_t dv = value_dim(dm);
  std::vector<float> out(std::size_t(dm.b * dm.h * t * dv));
  const auto o = from_bhnd(out.data(), dm.b, dm.h, t, dv);
  index_t at = 0;
  for (index_t n : calls) {
    using In = typename P::input_type;
    p.template forward<Arch>(st,
                             In{from_bhnd<dynamic_extent, const float>(q.data(), dm.b, dm.h, t, dm.d).tokens(at, n),
                                from_bhnd<dynamic_extent, const float>(k.data(), dm.b, dm.h_kv, t, dm.d).tokens(at, n),
                                from_bhnd<dynamic_extent, const float>(v.data(), dm.b, dm.h_kv, t, dv).tokens(at, n)},
                             o.tokens(at, n));
    at += n;
  }
  return out;
}

// Loads convert exactly and the kernels run the same arithmetic on the same
// values, so a T policy fed float K/V equals the float policy fed K/V
// already rounded to T, bit for bit (absolute positions: cache_relative
// also rounds the re-rotated keys).
template <class Arch, class T, class Make>
void equals_float_on_rounded(Make make) {
  test::rng_t g(test::seed_for(97, 0));
  const attention_dims dm{2, 4, 2, 32, 24};
  const index_t t = 70;
  const auto q = test::random_floats(g, std::size_t(dm.b * dm.h * t * dm.d));
  const auto k = test::random_floats(g, std::size_t(dm.b * dm.h_kv * t * dm.d));
  const auto v = test::random_floats(g, std::size_t(dm.b * dm.h_kv * t * dm.d_v), -2, 2);
  const std::vector<index_t> calls{23, 1, 1, 9, 1, 12, 1, 1, 1, 20};
  const auto p16 = make(T{});
  const auto p32 = make(float{});
  REQUIRE(outputs<Arch>(p16, dm, t, q, k, v, calls) == outputs<Arch>(p32, dm, t, q, rounded<T>(k), rounded<T>(v), calls));
}

}  // namespace

TEMPLATE_LIST_TEST_CASE(
    "16-bit K/V: a policy equals its float twin fed the rounded K/V, bit for bit",
    "[policies][storage]", test::tested_archs) {
  using Arch = TestType;
  const auto each = [&]<class T>(T) {
    INFO("storage " << kv_storage_traits<T>::name);
    equals_float_on_rounded<Arch, T>([]<class KV>(KV) { return bounded_cache<tova_rule, KV>{.budget = 17}; });
    equals_float_on_rounded<Arch, T>(
        []<class KV>(KV) { return bounded_cache<h2o_rule, KV>{.budget = 17, .rule = {.recent = 5}}; });
    equals_float_on_rounded<Arch, T>(
        []<class KV>(KV) { return bounded_cache<snapkv_rule, KV>{.budget = 17, .rule = {.window = 4, .reselect_every = 3}}; });
    equals_float_on_rounded<Arch, T>([]<class KV>(KV) { return bounded_cache<full_rule, KV>{}; });
    equals_float_on_rounded<Arch, T>([]<class KV>(KV) { return basic_infini<float, KV>{.segment = 16, .beta = {0.3f, -1, 2, 0}}; });
  };
  each(bf16{});
  each(f16{});
}

TEMPLATE_LIST_TEST_CASE(
    "bounded caches in int8: every rule against the double oracle; budget >= n is dense",
    "[policies][storage]", test::tested_archs) {
  oracle_sweep<TestType, q8>(98, test::scaled(60));
  dense_sweep<TestType, q8>(99, test::scaled(12));
}

namespace {

// Rows of dim values of x stored as int8 and read back: the values a q8
// buffer holds, as floats.
std::vector<float> dequantised(const std::vector<float>& x, index_t dim) {
  std::vector<float> r(x.size());
  stored_rows<q8> row(1, dim);
  for (std::size_t i = 0; i < x.size() / std::size_t(dim); ++i) {
    kv_storage_traits<q8>::store_row<scalar>(x.data() + i * std::size_t(dim), row.row(0), dim);
    kv_storage_traits<q8>::load_row<scalar>(row.row(0), r.data() + i * std::size_t(dim), dim);
  }
  return r;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE(
    "int8 Infini: the memory of the stored K/V bit for bit, outputs to fp32 rounding",
    "[policies][storage]", test::tested_archs) {
  using Arch = TestType;
  // The segment buffer stores int8 rows; a finished segment folds the
  // values they hold (exactly what a float Infini fed those values folds),
  // and local attention reads them with the row scales applied in the
  // kernel's order (fp32 rounding apart from the float twin).
  for (int c = 0; c < test::scaled(6); ++c) {
    test::rng_t g(test::seed_for(102, std::uint64_t(c)));
    const index_t hk = test::uniform_int(g, 1, 2), d = std::vector<index_t>{4, 17, 32, 64}[std::size_t(c % 4)];
    const attention_dims dm{test::uniform_int(g, 1, 2), hk * test::uniform_int(g, 1, 2), hk, d, d};
    const index_t t = 53, seg = test::uniform_int(g, 3, 16);
    const auto q = test::random_floats(g, std::size_t(dm.b * dm.h * t * d));
    const auto k = test::random_floats(g, std::size_t(dm.b * dm.h_kv * t * d));
    const auto v = test::random_floats(g, std::size_t(dm.b * dm.h_kv * t * d), -2, 2);
    const std::vector<index_t> calls{11, 1, 1, 7, 2, 31};
    const std::vector<float> beta = test::random_floats(g, std::size_t(dm.h), -2, 2);
    const basic_infini<float, q8> p8{.segment = seg, .beta = beta, .update = c % 2 ? update_rule::delta : update_rule::linear};
    const basic_infini<float, float> p32{.segment = seg, .beta = beta, .update = p8.update};
    INFO("case " << c << " d " << d << " segment " << seg);
    const auto o8 = outputs<Arch>(p8, dm, t, q, k, v, calls);
    const auto o32 = outputs<Arch>(p32, dm, t, q, dequantised(k, d), dequantised(v, d), calls);
    double lb = 0;  // |logit| <= scale |q|_1 max|k| (|k| <= 1)
    for (std::size_t r = 0; r < q.size() / std::size_t(d); ++r) {
      double a = 0;
      for (index_t i = 0; i < d; ++i) a += std::abs(q[r * std::size_t(d) + std::size_t(i)]);
      lb = std::max(lb, double(default_scale(d)) * a);
    }
    REQUIRE(test::max_abs_diff(o8, o32) <= test::attention_tolerance(lb, 2.0));
    // The memories, after the same stream: equal bits.
    auto s8 = p8.make_state(dm);
    auto s32 = p32.make_state(dm);
    const auto dk = dequantised(k, d), dv = dequantised(v, d);
    const auto view = [&](const std::vector<float>& x, index_t heads) {
      return from_bhnd<dynamic_extent, const float>(x.data(), dm.b, heads, t, d);
    };
    std::vector<float> out(std::size_t(dm.b * dm.h * t * d));
    p8.template forward<Arch>(s8, {view(q, dm.h), view(k, dm.h_kv), view(v, dm.h_kv)}, from_bhnd(out.data(), dm.b, dm.h, t, d));
    p32.template forward<Arch>(s32, {view(q, dm.h), view(dk, dm.h_kv), view(dv, dm.h_kv)}, from_bhnd(out.data(), dm.b, dm.h, t, d));
    REQUIRE(s8.segments_folded() == std::uint64_t(t / seg));
    for (index_t bi = 0; bi < dm.b; ++bi)
      for (index_t m = 0; m < s8.memory_heads(); ++m) {
        const auto a = s8.memory(bi, m), b = s32.memory(bi, m);
        REQUIRE(std::memcmp(a.m, b.m, sizeof(float) * std::size_t(a.d_k * a.ld_m)) == 0);
        REQUIRE(std::memcmp(a.z, b.z, sizeof(float) * std::size_t(a.d_k)) == 0);
      }
  }
}

TEST_CASE("int8 Infini: footprint counts 1-byte values and a 4-byte scale per buffered row", "[policies][storage]") {
  const attention_dims dm{1, 4, 2, 64, 64};
  const basic_infini<float, q8> p8{.segment = 32};
  const basic_infini<float, float> p32{.segment = 32};
  const auto m8 = p8.memory_footprint(dm), m32 = p32.memory_footprint(dm);
  REQUIRE(m8.buffer_values == m32.buffer_values);
  const std::uint64_t rows = 2 * 32 * 3;  // K, K_mem, V of each KV head
  REQUIRE(m32.bytes - m8.bytes == m32.buffer_values * 3 - rows * 4);
  REQUIRE(p8.make_state(dm).footprint() == p8.footprint(dm));
}
