// RMT mask descriptors: hand-written bitmaps of each convention, the block
// oracle on random layouts (XL cache, partial write block, n_q < packed rows),
// classify and keys_for_rows against brute force, conventions 2 and 3 equal
// without an XL cache, the exact kernel with the descriptors against the
// double oracle for every arch, position ids, and rejected layouts.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <longctx/kernels.hpp>
#include <longctx/kernels/rmt_mask.hpp>
#include <longctx/reference.hpp>
#include <longctx/reference/rmt.hpp>

#include "../support/support.hpp"

using namespace longctx;

namespace {

// rows[i][j] == '1': query i sees key j.
template <class Bound>
void require_bitmap(const Bound& b, const std::vector<std::string>& rows) {
  for (std::size_t i = 0; i < rows.size(); ++i)
    for (std::size_t j = 0; j < rows[i].size(); ++j) {
      INFO("row " << i << " key " << j);
      REQUIRE(b.visible(index_t(i), index_t(j)) == (rows[i][j] == '1'));
    }
}

// Every tile of every size agrees with brute force; classify is exact here.
template <class Bound>
void require_tiles_exact(const Bound& b, index_t n_q, index_t n_kv, test::rng_t& g, int trials) {
  for (int t = 0; t < trials; ++t) {
    const index_t i0 = test::uniform_int(g, 0, int(n_q) - 1), i1 = test::uniform_int(g, int(i0) + 1, int(n_q));
    const index_t j0 = test::uniform_int(g, 0, int(n_kv) - 1), j1 = test::uniform_int(g, int(j0) + 1, int(n_kv));
    bool any = false, all = true;
    index_t uncovered = 0;  // visible keys outside keys_for_rows
    const key_interval keys = b.keys_for_rows(i0, i1);
    for (index_t i = i0; i < i1; ++i)
      for (index_t j = 0; j < n_kv; ++j) {
        const bool v = b.visible(i, j);
        if (j >= j0 && j < j1) {
          any |= v;
          all &= v;
        }
        uncovered += v && !(j >= keys.lo && j < keys.hi);
      }
    const tile_kind k = b.classify(i0, i1, j0, j1);
    INFO("tile rows [" << i0 << ", " << i1 << ") keys [" << j0 << ", " << j1 << ") kind " << int(k));
    REQUIRE(uncovered == 0);
    REQUIRE((k == tile_kind::full) == all);
    REQUIRE((k == tile_kind::empty) == !any);
  }
}

}  // namespace

TEST_CASE("rmt masks equal hand-written bitmaps of each convention", "[rmt][kernels]") {
  // m = 2, s = 3: rows R R S S S W W.
  const auto causal_bits = std::vector<std::string>{"1000000", "1100000", "1110000", "1111000",
                                                    "1111100", "1111110", "1111111"};
  const auto block_bits = std::vector<std::string>{"1100000", "1100000", "1110000", "1111000",
                                                   "1111100", "1111111", "1111111"};
  require_bitmap(rmt_decoder_mask{.memory = 2, .convention = rmt_convention::causal}.bind(7, 7), causal_bits);
  require_bitmap(rmt_decoder_mask{.memory = 2, .convention = rmt_convention::block_visible}.bind(7, 7), block_bits);
  require_bitmap(rmt_decoder_mask{.memory = 2, .convention = rmt_convention::isolated_read}.bind(7, 7), block_bits);
  // m = 1, s = 2: R S S W.
  require_bitmap(rmt_decoder_mask{.memory = 1, .convention = rmt_convention::causal}.bind(4, 4),
                 {"1000", "1100", "1110", "1111"});
  require_bitmap(rmt_decoder_mask{.memory = 1}.bind(4, 4), {"1000", "1100", "1110", "1111"});
  // m = 3, s = 1: R R R S W W W.
  require_bitmap(rmt_decoder_mask{.memory = 3}.bind(7, 7),
                 {"1110000", "1110000", "1110000", "1111000", "1111111", "1111111", "1111111"});
  require_bitmap(rmt_decoder_mask{.memory = 3, .convention = rmt_convention::causal}.bind(7, 7),
                 {"1000000", "1100000", "1110000", "1111000", "1111100", "1111110", "1111111"});

  // XL cache of 2 keys in front: X X R R S S S W W (queries: the 7 packed rows).
  const rmt_decoder_mask xl{.memory = 2, .segment = 3, .xl = 2};
  require_bitmap(xl.bind(7, 9), {"001100000", "001100000", "111110000", "111111000", "111111100", "001111111",
                                 "001111111"});
  auto with = [&](rmt_convention c, rmt_xl v) {
    rmt_decoder_mask d = xl;
    d.convention = c;
    d.xl_visibility = v;
    return d.bind(7, 9);
  };
  require_bitmap(with(rmt_convention::block_visible, rmt_xl::visible_to_memory),
                 {"111100000", "111100000", "111110000", "111111000", "111111100", "111111111", "111111111"});
  require_bitmap(with(rmt_convention::isolated_read, rmt_xl::visible_to_memory),
                 {"001100000", "001100000", "111110000", "111111000", "111111100", "111111111", "111111111"});
  require_bitmap(with(rmt_convention::isolated_read, rmt_xl::hidden_from_memory),
                 {"001100000", "001100000", "111110000", "111111000", "111111100", "001111111", "001111111"});
  require_bitmap(with(rmt_convention::causal, rmt_xl::hidden_from_memory),
                 {"001000000", "001100000", "111110000", "111111000", "111111100", "001111110", "001111111"});

  // Every combination of convention, XL size (0, 2), xl_visibility and
  // read_sees_xl, each against its hand-written bitmap. Without an XL cache
  // the two flags change nothing; read_sees_xl changes isolated_read alone.
  struct expected {
    rmt_convention conv;
    rmt_xl vis;
    bool read_xl;
    std::vector<std::string> bits;  // X X R R S S S W W
  };
  const std::string S0 = "111110000", S1 = "111111000", S2 = "111111100";
  const std::vector<expected> table = {
      {rmt_convention::causal, rmt_xl::hidden_from_memory, false, {"001000000", "001100000", S0, S1, S2, "001111110", "001111111"}},
      {rmt_convention::causal, rmt_xl::hidden_from_memory, true, {"001000000", "001100000", S0, S1, S2, "001111110", "001111111"}},
      {rmt_convention::causal, rmt_xl::visible_to_memory, false, {"111000000", "111100000", S0, S1, S2, "111111110", "111111111"}},
      {rmt_convention::causal, rmt_xl::visible_to_memory, true, {"111000000", "111100000", S0, S1, S2, "111111110", "111111111"}},
      {rmt_convention::block_visible, rmt_xl::hidden_from_memory, false, {"001100000", "001100000", S0, S1, S2, "001111111", "001111111"}},
      {rmt_convention::block_visible, rmt_xl::hidden_from_memory, true, {"001100000", "001100000", S0, S1, S2, "001111111", "001111111"}},
      {rmt_convention::block_visible, rmt_xl::visible_to_memory, false, {"111100000", "111100000", S0, S1, S2, "111111111", "111111111"}},
      {rmt_convention::block_visible, rmt_xl::visible_to_memory, true, {"111100000", "111100000", S0, S1, S2, "111111111", "111111111"}},
      {rmt_convention::isolated_read, rmt_xl::hidden_from_memory, false, {"001100000", "001100000", S0, S1, S2, "001111111", "001111111"}},
      {rmt_convention::isolated_read, rmt_xl::hidden_from_memory, true, {"001100000", "001100000", S0, S1, S2, "001111111", "001111111"}},
      {rmt_convention::isolated_read, rmt_xl::visible_to_memory, false, {"001100000", "001100000", S0, S1, S2, "111111111", "111111111"}},
      {rmt_convention::isolated_read, rmt_xl::visible_to_memory, true, {"111100000", "111100000", S0, S1, S2, "111111111", "111111111"}},
  };
  for (const expected& e : table) {
    INFO("conv " << int(e.conv) << " xl_visibility " << int(e.vis) << " read_sees_xl " << e.read_xl);
    rmt_decoder_mask d{.memory = 2, .segment = 3, .xl = 2, .convention = e.conv, .xl_visibility = e.vis,
                       .read_sees_xl = e.read_xl};
    require_bitmap(d.bind(7, 9), e.bits);
    for (index_t q = 0; q < 7; ++q)  // the oracle the random sweeps use agrees
      for (index_t j = 0; j < 9; ++j)
        REQUIRE(reference::rmt_decoder_visible(e.conv, e.vis, 2, 2, 3, 2 + q, j, e.read_xl) ==
                (e.bits[std::size_t(q)][std::size_t(j)] == '1'));
    d.xl = 0;  // no XL cache: the convention's own bitmap, whatever the flags
    require_bitmap(d.bind(7, 7), e.conv == rmt_convention::causal ? causal_bits : block_bits);
  }

  // Streaming binds: the read block alone, a growing segment, then the write rows.
  require_bitmap(rmt_decoder_mask{.memory = 2, .segment = 0}.bind(2, 2), {"11", "11"});
  require_bitmap(rmt_decoder_mask{.memory = 2, .segment = 2}.bind(1, 4), {"1111"});
  require_bitmap(rmt_decoder_mask{.memory = 2, .segment = 2}.bind(2, 4), {"1110", "1111"});
  require_bitmap(rmt_decoder_mask{.memory = 2, .segment = 2}.bind(2, 6), {"111111", "111111"});

  // Encoder [M M S S S]: bidirectional.
  require_bitmap(rmt_encoder_mask{.memory = 2}.bind(5, 5),
                 {"11111", "11111", "11111", "11111", "11111"});
}

TEST_CASE("rmt masks: random layouts against the block oracle; tiles exact", "[rmt][kernels]") {
  const int cases = test::scaled(400);
  for (int c = 0; c < cases; ++c) {
    const auto seed = test::seed_for(600, std::uint64_t(c));
    test::rng_t g(seed);
    const index_t m = test::uniform_int(g, 0, 12), s = test::uniform_int(g, 0, 80);
    const index_t X = test::uniform_int(g, 0, 3) == 0 ? test::uniform_int(g, 1, 40) : 0;
    const index_t w = test::uniform_int(g, 0, 1) ? m : test::uniform_int(g, 0, int(m));
    const index_t n_kv = X + m + s + w;
    if (n_kv - X == 0) continue;
    const index_t n_q = test::uniform_int(g, 0, 2) ? n_kv - X : test::uniform_int(g, 1, int(n_kv - X));
    const auto conv = rmt_convention(test::uniform_int(g, 0, 2));
    const auto xv = rmt_xl(test::uniform_int(g, 0, 1));
    const bool rx = test::uniform_int(g, 0, 1) == 1;
    const rmt_decoder_mask d{.memory = m, .segment = (w == m && test::uniform_int(g, 0, 1)) ? -1 : s, .xl = X,
                             .convention = conv, .xl_visibility = xv, .read_sees_xl = rx};
    INFO("seed " << seed << " m " << m << " s " << s << " xl " << X << " w " << w << " n_q " << n_q << " conv "
                 << int(conv) << " xl_vis " << int(xv) << " read_sees_xl " << rx);
    const auto b = d.bind(n_q, n_kv);
    index_t wrong = 0, first = -1;
    for (index_t i = 0; i < n_q; ++i)
      for (index_t j = 0; j < n_kv; ++j)
        if (b.visible(i, j) != reference::rmt_decoder_visible(conv, xv, X, m, s, n_kv - n_q + i, j, rx)) {
          if (wrong++ == 0) first = i * n_kv + j;
        }
    INFO("first wrong (row, key) = (" << first / std::max<index_t>(1, n_kv) << ", " << first % std::max<index_t>(1, n_kv) << ")");
    REQUIRE(wrong == 0);
    require_tiles_exact(b, n_q, n_kv, g, 40);
  }
}

TEST_CASE("rmt masks: conventions 2 and 3 agree without an XL cache, differ with one", "[rmt][kernels]") {
  for (index_t m : {0, 1, 2, 5, 10})
    for (index_t s : {1, 2, 7, 64, 65, 130}) {
      const index_t n = 2 * m + s;
      const auto a = rmt_decoder_mask{.memory = m, .convention = rmt_convention::block_visible}.bind(n, n);
      const auto b = rmt_decoder_mask{.memory = m, .convention = rmt_convention::isolated_read}.bind(n, n);
      for (index_t i = 0; i < n; ++i)
        for (index_t j = 0; j < n; ++j)
          if (a.visible(i, j) != b.visible(i, j)) FAIL("m " << m << " s " << s << " row " << i << " key " << j);
    }
  // With an XL cache visible to memory, the port's read block still sees only itself.
  const rmt_decoder_mask base{.memory = 2, .segment = 3, .xl = 4, .xl_visibility = rmt_xl::visible_to_memory};
  rmt_decoder_mask port = base;
  port.convention = rmt_convention::isolated_read;
  CHECK(base.bind(7, 11).visible(0, 0));
  CHECK_FALSE(port.bind(7, 11).visible(0, 0));
}

TEMPLATE_LIST_TEST_CASE("attention with rmt masks against the double oracle", "[rmt][kernels]",
                        test::tested_archs) {
  const int cases = test::scaled(120);
  static const std::vector<int> lens = test::odd_sizes({48, 64}, 200);
  for (int c = 0; c < cases; ++c) {
    const auto seed = test::seed_for(601, std::uint64_t(c));
    test::rng_t g(seed);
    const index_t m = test::uniform_int(g, 0, 16), s = test::random_size(g, lens, 200);
    const index_t X = test::uniform_int(g, 0, 3) == 0 ? test::uniform_int(g, 1, 70) : 0;
    const bool encoder = test::uniform_int(g, 0, 4) == 0;
    const index_t n_kv = encoder ? m + s : X + 2 * m + s;
    const index_t n_q = test::uniform_int(g, 0, 2) ? n_kv - (encoder ? 0 : X) : test::uniform_int(g, 1, int(s));
    const index_t d = std::vector<index_t>{1, 8, 17, 64}[std::size_t(test::uniform_int(g, 0, 3))];
    const rmt_decoder_mask dm{.memory = m, .xl = X, .convention = rmt_convention(test::uniform_int(g, 0, 2)),
                              .xl_visibility = rmt_xl(test::uniform_int(g, 0, 1)),
                              .read_sees_xl = test::uniform_int(g, 0, 1) == 1};
    const rmt_encoder_mask em{.memory = m};
    INFO("arch " << TestType::name << " seed " << seed << " m " << m << " s " << s << " xl " << X << " n_q " << n_q
                 << " d " << d << (encoder ? " encoder" : " decoder"));
    auto q = test::random_floats(g, std::size_t(n_q * d)), k = test::random_floats(g, std::size_t(n_kv * d)),
         v = test::random_floats(g, std::size_t(n_kv * d), -2, 2);
    std::vector<float> o(std::size_t(n_q * d), 7.0f);
    const float scale = 2.0f / std::sqrt(float(d));
    auto t4 = [&](auto* p, index_t n) { return from_bhnd(p, 1, 1, n, d); };
    if (encoder) attention<TestType>(t4(q.data(), n_q), t4(k.data(), n_kv), t4(v.data(), n_kv), t4(o.data(), n_q), scale, em);
    else attention<TestType>(t4(q.data(), n_q), t4(k.data(), n_kv), t4(v.data(), n_kv), t4(o.data(), n_q), scale, dm);
    const auto mq = make_matrix<dynamic_extent, const float>(q.data(), n_q, d);
    const auto mk = make_matrix<dynamic_extent, const float>(k.data(), n_kv, d);
    const auto mv = make_matrix<dynamic_extent, const float>(v.data(), n_kv, d);
    const auto ref = encoder ? reference::attention_head(mq, mk, mv, double(scale), em)
                             : reference::attention_head(mq, mk, mv, double(scale), [&](index_t i, index_t j) {
                                 return reference::rmt_decoder_visible(dm.convention, dm.xl_visibility, X, m, s,
                                                                       n_kv - n_q + i, j, dm.read_sees_xl);
                               });
    double max_logit = 0;
    for (double x : ref.logits)
      if (std::isfinite(x)) max_logit = std::max(max_logit, std::abs(x));
    const double tol = test::attention_tolerance(max_logit, 2.0);
    double err = 0;
    for (index_t i = 0; i < n_q * d; ++i) err = std::max(err, std::abs(o[std::size_t(i)] - ref.o[std::size_t(i)]));
    INFO("tol " << tol);
    REQUIRE(err <= tol);
  }
}

TEST_CASE("rmt position ids", "[rmt][kernels]") {
  const index_t m = 3, s = 4;
  const rmt_positions seq{}, zero{rmt_position_mode::zero}, off{rmt_position_mode::offset, 1000};
  for (index_t k = 0; k < m; ++k) {
    CHECK(seq(rmt_block::read, k, m, s) == k);
    CHECK(seq(rmt_block::write, k, m, s) == m + s + k);
    CHECK(zero(rmt_block::read, k, m, s) == 0);
    CHECK(zero(rmt_block::write, k, m, s) == 0);
    CHECK(off(rmt_block::read, k, m, s) == 1000 + k);
    CHECK(off(rmt_block::write, k, m, s) == 1000 + k);
  }
  for (index_t k = 0; k < s; ++k) {
    CHECK(seq(rmt_block::segment, k, m, s) == m + k);
    CHECK(zero(rmt_block::segment, k, m, s) == k);
    CHECK(off(rmt_block::segment, k, m, s) == k);
    CHECK(seq(rmt_block::segment, k, 0, s) == k);  // m = 0: the backbone's own positions
  }
  // content_offset (the port: memory at 0, content at 10000 + c), here with
  // the memory at 7: every memory row at 7, token c at 10000 + c.
  const rmt_positions port{.mode = rmt_position_mode::content_offset, .offset = 10000, .memory_position = 7};
  std::vector<index_t> read, segment, write;
  for (index_t k = 0; k < m; ++k) read.push_back(port(rmt_block::read, k, m, s));
  for (index_t k = 0; k < s; ++k) segment.push_back(port(rmt_block::segment, k, m, s));
  for (index_t k = 0; k < m; ++k) write.push_back(port(rmt_block::write, k, m, s));
  CHECK(read == std::vector<index_t>{7, 7, 7});
  CHECK(segment == std::vector<index_t>{10000, 10001, 10002, 10003});
  CHECK(write == std::vector<index_t>{7, 7, 7});
  CHECK(port(rmt_block::segment, 2, 0, s) == 10002);  // m = 0: the content still starts at the offset
}

TEST_CASE("rmt position ids: content_offset puts memory and content about `offset` apart for RoPE",
          "[rmt][kernels]") {
  // RoPE scores depend on the position difference only: with content_offset
  // a memory row and content token c are 10000 + c - p_mem apart, so the
  // score is that of a pair that far apart, and not the zero mode's (c apart).
  const index_t d = 16, m = 2, s = 5;
  test::rng_t g(test::seed_for(701, 0));
  const std::vector<float> q = test::random_floats(g, d), k = test::random_floats(g, d);
  const auto score = [&](index_t pq, index_t pk) {
    std::vector<float> a = q, b = k;
    rope_rotate(make_matrix(a.data(), 1, d), pq);
    rope_rotate(make_matrix(b.data(), 1, d), pk);
    double dot = 0;
    for (index_t i = 0; i < d; ++i) dot += double(a[std::size_t(i)]) * double(b[std::size_t(i)]);
    return dot;
  };
  const rmt_positions port{.mode = rmt_position_mode::content_offset, .offset = 10000, .memory_position = 3};
  const rmt_positions zero{rmt_position_mode::zero};
  double moved = 0;
  for (index_t c = 0; c < s; ++c) {
    const index_t pm = port(rmt_block::read, 0, m, s), pc = port(rmt_block::segment, c, m, s);
    REQUIRE(pc - pm == 10000 + c - 3);
    // Same distance, same score (float RoPE at positions ~1e4: ~1e-4 relative).
    REQUIRE(std::abs(score(pm, pc) - score(0, pc - pm)) <= 1e-3 * (1 + std::abs(score(0, pc - pm))));
    const index_t zm = zero(rmt_block::read, 0, m, s), zc = zero(rmt_block::segment, c, m, s);
    REQUIRE(zc - zm == c);
    moved = std::max(moved, std::abs(score(pm, pc) - score(zm, zc)));
  }
  CHECK(moved > 0.1);  // the memory-content scores change with the mode
}

TEST_CASE("rmt masks reject layouts that do not fit", "[rmt][kernels]") {
  CHECK_THROWS_AS((rmt_decoder_mask{.memory = 4}.bind(7, 7)), invalid_argument);           // 7 < 2m
  CHECK_THROWS_AS((rmt_decoder_mask{.memory = 2, .segment = 1}.bind(6, 6)), invalid_argument);  // w = 3 > m
  CHECK_THROWS_AS((rmt_decoder_mask{.memory = 2, .segment = 5}.bind(6, 6)), invalid_argument);  // s > room
  CHECK_THROWS_AS((rmt_decoder_mask{.memory = 1, .xl = 3}.bind(5, 6)), invalid_argument);  // queries in the XL cache
  CHECK_THROWS_AS((rmt_decoder_mask{.memory = -1}.bind(1, 1)), invalid_argument);
  CHECK_THROWS_AS((rmt_encoder_mask{.memory = 5}.bind(4, 4)), invalid_argument);
  std::vector<float> x(64, 0.0f), o(64);
  CHECK_THROWS_AS(attention(from_bhnd<dynamic_extent, const float>(x.data(), 1, 1, 8, 8),
                            from_bhnd<dynamic_extent, const float>(x.data(), 1, 1, 8, 8),
                            from_bhnd<dynamic_extent, const float>(x.data(), 1, 1, 8, 8),
                            from_bhnd(o.data(), 1, 1, 8, 8), 0.5f, rmt_decoder_mask{.memory = 5}),
                  invalid_argument);
}
