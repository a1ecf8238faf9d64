// Restore checks the stored rows and normalisers, not only the counts: an
// int8 row whose scale or values store_row cannot write (a scale past
// FLT_MAX / 127 made the kernels' scaled values infinite), Infini's z below
// 0, a FLASH state's unfinished chunk with a non-finite value. Each was
// accepted before and then decoded non-finite outputs (found by
// tests/fuzz/restore.cpp); each is now rejected naming the field, the
// state unchanged.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <longctx/policies/flash.hpp>
#include <longctx/policies/infini.hpp>
#include <longctx/policies/tova.hpp>

#include "../support/snapshot_edit.hpp"
#include "../support/support.hpp"

using namespace longctx;
using test::poked;

namespace {

const attention_dims dims{1, 2, 1, 8, 6};

// n tokens of random input through p into st.
template <class P>
void feed(const P& p, typename P::state_type& st, index_t n, std::uint64_t seed) {
  test::rng_t g(seed);
  const auto q = test::random_floats(g, std::size_t(2 * n * 8)), k = test::random_floats(g, std::size_t(n * 8)),
             v = test::random_floats(g, std::size_t(n * 6));
  std::vector<float> o(std::size_t(2 * n * 6));
  const sequence_input in{from_bhnd<dynamic_extent, const float>(q.data(), 1, 2, n, 8),
                          from_bhnd<dynamic_extent, const float>(k.data(), 1, 1, n, 8),
                          from_bhnd<dynamic_extent, const float>(v.data(), 1, 1, n, 6)};
  using In = typename P::input_type;
  if constexpr (std::is_same_v<In, sequence_input>)
    p.forward(st, in, from_bhnd(o.data(), 1, 2, n, 6));
  else
    p.forward(st, In{in.q, in.k, in.v}, from_bhnd(o.data(), 1, 2, n, 6));
}

template <class State>
void rejects(State& st, const snapshot_bytes& bad, const char* field) {
  const snapshot_bytes before = st.snapshot();
  INFO(field);
  CHECK_THROWS_WITH(st.restore(bad), Catch::Contains(field));
  CHECK(st.snapshot() == before);
}

constexpr float flt_max = std::numeric_limits<float>::max();

}  // namespace

TEST_CASE("snapshot rows: an int8 cache's rows must be what store_row writes", "[policies][snapshot]") {
  const bounded_cache<tova_rule, q8> p{.budget = 6};
  auto st = p.make_state(dims);
  feed(p, st, 9, test::seed_for(960, 0));
  const snapshot_bytes snap = st.snapshot();
  // Payload: size, next position (8 bytes each), then lane 0's key rows of
  // 4 + 8 bytes (scale, values), then its value rows of 4 + 6.
  constexpr std::size_t key0 = 16, value0 = key0 + 6 * 12;
  auto fresh = p.make_state(dims);
  fresh.restore(snap);  // unedited: accepted
  REQUIRE(fresh.snapshot() == snap);
  for (float scale : {flt_max, flt_max / 100, -1.0f, std::numeric_limits<float>::infinity()}) {
    CAPTURE(scale);
    rejects(st, poked(snap, key0, scale), "keys");
    rejects(st, poked(snap, value0 + 10, scale), "values");
  }
  rejects(st, poked(snap, key0 + 4, std::int8_t(-128)), "keys");
  // A zero scale stores zeros: a non-zero value under it was never written.
  rejects(st, poked(poked(snap, key0, 0.0f), key0 + 4, std::int8_t(3)), "keys");
  // What store_row does write is accepted: a NaN scale (a row with a
  // non-finite value, read as NaN) over zeros, the largest finite scale.
  snapshot_bytes nan_row = poked(snap, value0, std::numeric_limits<float>::quiet_NaN());
  for (std::size_t i = 0; i < 6; ++i) nan_row = poked(nan_row, value0 + 4 + i, std::int8_t(0));
  fresh.restore(nan_row);
  fresh.restore(poked(snap, key0, std::nextafter(flt_max / 127.0f, 0.0f)));
  // A row reaching FLT_MAX stores a scale whose 127 multiple is finite (it
  // rounded up to inf: fuzz finding policies-q8-flt-max), and reads back finite.
  std::vector<q8> row(4 + 2);
  const float x[2] = {0.5f, -flt_max};
  kv_storage_traits<q8>::store_row<default_arch>(x, row.data() + 4, 2);
  REQUIRE(kv_storage_traits<q8>::row_valid(row.data() + 4, 2));
  float back[2];
  kv_storage_traits<q8>::load_row<default_arch>(row.data() + 4, back, 2);
  REQUIRE(std::isfinite(back[1]));
  REQUIRE(back[1] <= -0.99f * flt_max);
}

TEST_CASE("snapshot rows: Infini's z is never negative; int8 segment rows are checked", "[policies][snapshot]") {
  const basic_infini<float, q8> p{.segment = 5};
  auto st = p.make_state(dims);
  feed(p, st, 8, test::seed_for(960, 1));  // one segment folded, 3 rows buffered
  const snapshot_bytes snap = st.snapshot();
  // Payload: position, tokens, segments (8 bytes each), M (d x d_v floats
  // per memory head), z (d floats per memory head), then the K rows.
  const std::size_t m_at = 24, z_at = m_at + 4 * std::size_t(p.memory_heads(dims) * 8 * 6),
                    rows_at = z_at + 4 * std::size_t(p.memory_heads(dims) * 8);
  rejects(st, poked(snap, z_at + 4, -1e-30f), "'z'");
  rejects(st, poked(snap, rows_at, flt_max), "rows");
  rejects(st, poked(snap, rows_at + 4, std::int8_t(-128)), "rows");
  auto fresh = p.make_state(dims);
  fresh.restore(snap);
  REQUIRE(fresh.snapshot() == snap);
}

TEST_CASE("snapshot rows: a FLASH state's unfinished chunk holds finite rows", "[policies][snapshot]") {
  const flash p{.chunk = 4};
  auto st = p.make_state(dims);
  feed(p, st, 6, test::seed_for(960, 2));  // one chunk folded, 2 rows buffered
  const snapshot_bytes snap = st.snapshot();
  // Payload: chunks folded, position (8 each), consumed flag (1), S (s x e
  // floats per lane), then K_quad (2 x 8), K_lin (2 x 8) and V (2 x 6) rows.
  const std::size_t kq = 17 + 4 * 8 * 6, kl = kq + 4 * 16, v = kl + 4 * 16;
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  rejects(st, poked(snap, kq + 8, nan), "K_quad rows");
  rejects(st, poked(snap, kl, inf), "K_lin rows");
  rejects(st, poked(snap, v + 4 * 11, -inf), "V rows");
  auto fresh = p.make_state(dims);
  fresh.restore(snap);
  REQUIRE(fresh.snapshot() == snap);
}

namespace {
template <class P>
void round_trip(const P& p, const attention_dims& a, index_t n) {
  auto st = p.make_state(a);
  test::rng_t g(test::seed_for(961, std::uint64_t(n)));
  const auto q = test::random_floats(g, std::size_t(a.b * a.h * n * a.d)),
             k = test::random_floats(g, std::size_t(a.b * a.h_kv * n * a.d)),
             v = test::random_floats(g, std::size_t(a.b * a.h_kv * n * a.d));
  std::vector<float> o(q.size());
  const sequence_input in{from_bhnd<dynamic_extent, const float>(q.data(), a.b, a.h, n, a.d),
                          from_bhnd<dynamic_extent, const float>(k.data(), a.b, a.h_kv, n, a.d),
                          from_bhnd<dynamic_extent, const float>(v.data(), a.b, a.h_kv, n, a.d)};
  using In = typename P::input_type;
  if constexpr (std::is_same_v<In, sequence_input>)
    p.forward(st, in, from_bhnd(o.data(), a.b, a.h, n, a.d));
  else
    p.forward(st, In{in.q, in.k, in.v}, from_bhnd(o.data(), a.b, a.h, n, a.d));
  const snapshot_bytes snap = st.snapshot();
  auto fresh = p.make_state(a);
  fresh.restore(snap);
  REQUIRE(fresh.snapshot() == snap);
}
template <class Rule>
void every_storage(index_t budget = 5) {
  for (const attention_dims& a : {attention_dims{1, 2, 1, 8, 8}, attention_dims{0, 2, 1, 8, 8}}) {
    CAPTURE(a.b);
    round_trip(bounded_cache<Rule, float>{.budget = budget}, a, budget + 4);
    round_trip(bounded_cache<Rule, bf16>{.budget = budget}, a, budget + 4);
    round_trip(bounded_cache<Rule, f16>{.budget = budget}, a, budget + 4);
    round_trip(bounded_cache<Rule, q8>{.budget = budget}, a, budget + 4);
  }
}
}  // namespace

// Kinds are "kv:<rule>/<storage>" (a compile-time check keeps them within
// the 16-byte field): "cache:snapkv/bf16" was 17 and overflowed the header's
// stack buffer (fuzz finding policies-snapshot-kind). b = 0 (no lanes):
// a cache that has seen tokens restores its own snapshot (it rejected it,
// fuzz finding policies-b0-restore), and no view offsets a null pointer
// (policies-b0-null-offset; UBSan in the asan configuration).
TEST_CASE("snapshot rows: every rule in every storage, b = 1 and b = 0, round-trips", "[policies][snapshot]") {
  every_storage<tova_rule>();
  every_storage<h2o_rule>();
  every_storage<window_rule>();
  every_storage<sinks_rule>();
  every_storage<snapkv_rule>(40);  // its default window is 32
  every_storage<full_rule>();
  for (const attention_dims& a : {attention_dims{1, 2, 1, 8, 8}, attention_dims{0, 2, 1, 8, 8}}) {
    round_trip(bounded_cache<tova_rule, q8>{.budget = 5, .positions = position_mode::cache_relative,
                                           .keys = key_scales::per_channel},
               a, 9);
    round_trip(basic_infini<float, q8>{.segment = 4}, a, 9);
    round_trip(infini{.segment = 4}, a, 9);
  }
}

// The kind field is compared whole, NUL padding included: a byte changed
// after the name's NUL was accepted and the state then re-snapshotted to
// other bytes (fuzz finding layers-snapshot-kind-padding).
TEST_CASE("snapshot rows: the kind field's padding is part of the kind", "[policies][snapshot]") {
  const tova p{.budget = 4};
  auto st = p.make_state(dims);
  feed(p, st, 3, test::seed_for(962, 0));
  snapshot_bytes snap = st.snapshot();
  constexpr std::size_t kind_at = 8 + 4 + 4;  // after magic, version, byte order
  snap[kind_at + detail::snapshot_kind_bytes - 1] = std::byte{'x'};
  snap = test::resealed(snap);
  rejects(st, snap, "kind");
}
