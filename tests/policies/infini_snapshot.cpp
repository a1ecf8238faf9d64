// Infini-attention's sequence_policy protocol edges: a state made by
// another policy, corrupt or inconsistent snapshots (each rejected with the
// state unchanged).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <span>
#include <vector>

#include <longctx/policies/infini.hpp>

#include "../support/snapshot_edit.hpp"
#include "../support/support.hpp"
#include "infini_problem.hpp"

using namespace longctx;
using infini_test::problem;
using infini_test::tensor4;

namespace {
using test::poked;
using test::resealed;

// Written against the concept only: the one-line swap of DESIGN.md 5.
template <sequence_policy P>
snapshot_bytes run_generic(const P& pol, const attention_dims& d, const problem& pr, tensor4_view<float> out) {
  auto st = pol.make_state(d);
  pol.forward(st, typename P::input_type{pr.q.view, pr.k.view, pr.v.view}, out);
  return st.snapshot();
}
}  // namespace

TEST_CASE("infini: a state made by another policy is rejected by forward and by restore", "[policies][infini]") {
  STATIC_REQUIRE(sequence_policy<basic_infini<double>>);
  test::rng_t g(test::seed_for(59, 0));
  const attention_dims d{1, 2, 2, 8, 8};
  const infini pol{.segment = 4, .beta = {0.5f, -1}};
  problem pr(g, d, 6, false, false);
  tensor4 out(g, 1, 2, 6, 8, false), out2(g, 1, 2, 6, 8, false);
  auto st = pol.make_state(d);
  pol.forward(st, pr.input(0, 6), out.view);
  const snapshot_bytes snap = st.snapshot();
  // The same parameters written again, the default scale spelled out, d_v
  // = 0 for d: the same configuration.
  const infini same{.segment = 4, .scale = default_scale(8), .beta = {0.5f, -1}};
  CHECK(same.fingerprint({1, 2, 2, 8, 0}) == st.fingerprint());
  auto st2 = same.make_state({1, 2, 2, 8, 0});
  CHECK_NOTHROW(st2.restore(snap));
  CHECK_NOTHROW(same.forward(st2, pr.input(0, 6), out2.view));
  // One parameter changed at a time (h == h_kv: the sharing gives the same
  // memory heads, only the fingerprint tells the states apart).
  std::vector<infini> others(9, pol);
  others[0].segment = 5, others[1].scale = 0.5f, others[2].beta = {0.5f, -2};
  others[3].beta.assign(16, 0.5f);  // per value column
  others[4].update = update_rule::delta, others[5].phi = feature_map::identity;
  others[6].sharing = memory_sharing::per_query_head, others[7].epsilon = 1e-5f;
  others[8].memory = memory_mode::read_only;
  const snapshot_bytes before = st.snapshot();
  for (std::size_t i = 0; i < others.size(); ++i) {
    INFO("variant " << i);
    CHECK(others[i].fingerprint(d) != st.fingerprint());
    CHECK_THROWS_WITH(others[i].forward(st, pr.input(0, 6), out.view), Catch::Contains("'state'"));
    auto theirs = others[i].make_state(d);
    CHECK_THROWS_WITH(theirs.restore(snap), Catch::Contains("'configuration'"));
    CHECK_THROWS_WITH(st.restore(theirs.snapshot()), Catch::Contains("'configuration'"));
  }
  CHECK(st.snapshot() == before);
  // Other dims or scalar type; a policy mutated after make_state.
  CHECK_THROWS_WITH(pol.make_state({1, 2, 2, 8, 4}).restore(snap), Catch::Contains("'configuration'"));
  auto dbl = basic_infini<double>{.segment = 4, .beta = {0.5f, -1}}.make_state(d);
  CHECK_THROWS_WITH(dbl.restore(snap), Catch::Contains("'configuration'"));
  infini mutated = pol;
  mutated.beta[1] = -1.5f;
  CHECK_THROWS_WITH(mutated.forward(st, pr.input(0, 6), out.view), Catch::Contains("other parameters"));
  // Generic code over the concept gives the policy's own bits.
  tensor4 o3(g, 1, 2, 6, 8, false), o4(g, 1, 2, 6, 8, false);
  const snapshot_bytes generic = run_generic(pol, d, pr, o3.view);
  auto direct = pol.make_state(d);
  pol.forward(direct, infini_input{pr.q.view, pr.k.view, pr.v.view}, o4.view);
  CHECK(o3.data == o4.data);
  CHECK(generic == direct.snapshot());
}

TEST_CASE("infini: corrupt or inconsistent snapshots are rejected with the state unchanged", "[policies][infini]") {
  test::rng_t g(test::seed_for(60, 0));
  const attention_dims d{2, 2, 1, 4, 3};
  const infini pol{.segment = 5, .update = update_rule::delta};
  problem pr(g, d, 13, false, true);
  tensor4 out(g, 2, 2, 13, 3, false);
  auto src = pol.make_state(d), st = pol.make_state(d);
  pol.forward(src, pr.input(0, 13), out.view);
  const snapshot_bytes snap = src.snapshot();  // position 3, 13 tokens, 2 segments folded
  pol.forward(st, pr.input(0, 7), out.view.tokens(0, 7));
  const snapshot_bytes before = st.snapshot();
  const auto rejected = [&](const snapshot_bytes& bad, const char* what) {
    CHECK_THROWS_WITH(st.restore(bad), Catch::Contains(what));
    CHECK(st.snapshot() == before);  // the strong guarantee
  };
  SECTION("any flipped byte, header or payload") {
    int checksum = 0;
    for (std::size_t i = 0; i < snap.size(); ++i)
      for (unsigned flip : {0x01u, 0x80u, 0xFFu}) {
        snapshot_bytes bad = snap;
        bad[i] ^= std::byte(flip);
        try {
          st.restore(bad);
          FAIL("byte " << i << " ^ " << flip << " accepted");
        } catch (const longctx::invalid_argument& e) {
          checksum += std::string(e.what()).find("'checksum'") != std::string::npos;
        }
      }
    CHECK(checksum >= 3 * int(snap.size() - detail::snapshot_header_bytes));  // the CRC catches the payload
    CHECK(st.snapshot() == before);
  }
  SECTION("a valid checksum over fields that contradict each other") {
    const std::size_t m_at = 24, m_count = 2 * 1 * 4 * 3, z_at = m_at + 4 * m_count;
    rejected(poked(snap, 0, std::int64_t(5)), "'position'");
    rejected(poked(snap, 0, std::int64_t(-1)), "'position'");
    rejected(poked(snap, 8, std::uint64_t(14)), "'tokens'");
    rejected(poked(snap, 16, std::uint64_t(3)), "'segments'");
    rejected(poked(snap, m_at + 4 * (m_count - 1), std::numeric_limits<float>::quiet_NaN()), "'M'");
    rejected(poked(snap, z_at + 4, std::numeric_limits<float>::infinity()), "'z'");
    // A position whose rows are not there: the reader stops at the payload.
    rejected(poked(poked(snap, 0, std::int64_t(4)), 8, std::uint64_t(14)), "rows'");
    rejected(resealed({snap.begin(), snap.end() - 8}), "'V rows'");  // the last V row cut short
    snapshot_bytes longer = snap;
    longer.insert(longer.end() - 4, std::byte{0});
    rejected(resealed(longer), "unread trailing");
  }
  st.restore(snap);
  CHECK(st.snapshot() == snap);
  CHECK(st.position_in_segment() == 3);
  CHECK(st.segments_folded() == 2);
}
