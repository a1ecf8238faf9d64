// RMT driver + example backbone: against the double oracle on random shapes
// for every arch (decoder in each convention and position mode, encoder,
// partial last segment), m = 0 equals the backbone alone, the memory handoff
// is exactly the write rows, token-by-token equals whole segments, memory stays
// constant-size over thousands of segments, snapshot/restore, bad configs.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include <longctx/models/rmt.hpp>
#include <longctx/models/rmt_backbone.hpp>
#include <longctx/reference/rmt.hpp>

#include "../support/support.hpp"

using namespace longctx;

namespace {

struct rows {
  index_t n, w;
  std::vector<float> data;
  rows(index_t n_, index_t w_, float fill = 0.0f) : n(n_), w(w_), data(std::size_t(std::max<index_t>(1, n_ * w_)), fill) {}
  rows(test::rng_t& g, index_t n_, index_t w_) : n(n_), w(w_), data(test::random_floats(g, std::size_t(std::max<index_t>(1, n_ * w_)))) {}
  matrix_view<float> view() { return make_matrix(data.data(), n, w); }
  matrix_view<const float> cview() const { return make_matrix<dynamic_extent, const float>(data.data(), n, w); }
  std::vector<double> as_double() const { return {data.begin(), data.begin() + n * w}; }
};

template <class A, class B>
double max_diff(const A& a, const B& b, std::size_t n) {
  double e = 0;
  for (std::size_t i = 0; i < n; ++i) e = std::max(e, std::abs(double(a[i]) - double(b[i])));
  return e;
}

// fp32 through a few pre-norm blocks against double: every output is a
// LayerNorm (unit scale); rounding of the width-long dot products and of the
// normalisation compounds over layers and, through the memory, over segments.
// Measured at most 5e-6 on these shapes (3 segments); 2e-5 per layer-segment
// leaves a 10x margin while a wrong mask or position gives O(0.1) errors.
double backbone_tolerance(index_t layers, index_t segments) {
  return 2e-5 * double(layers) * double(std::max<index_t>(1, segments));
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("rmt: random shapes against the double oracle", "[rmt][policies]",
                        test::tested_archs) {
  const int cases = test::scaled(24);
  for (int c = 0; c < cases; ++c) {
    const auto seed = test::seed_for(700, std::uint64_t(c));
    test::rng_t g(seed);
    const index_t heads = test::uniform_int(g, 1, 3), width = heads * std::vector<index_t>{1, 4, 8, 17}[std::size_t(test::uniform_int(g, 0, 3))];
    const index_t layers = test::uniform_int(g, 1, 2);
    rmt p{};
    p.layout = test::uniform_int(g, 0, 3) == 0 ? rmt_layout::encoder : rmt_layout::decoder;
    p.memory = test::uniform_int(g, 0, 5);
    p.segment_budget = p.memory * (p.layout == rmt_layout::decoder ? 2 : 1) + test::uniform_int(g, 1, 70);
    p.convention = rmt_convention(test::uniform_int(g, 0, 2));
    p.positions = {rmt_position_mode(test::uniform_int(g, 0, 3)), test::uniform_int(g, 0, 50), test::uniform_int(g, 0, 9)};
    // A Transformer-XL cache in half the decoder cases, shorter or longer
    // than a segment (then it spans several), with every visibility.
    if (p.layout == rmt_layout::decoder && test::uniform_int(g, 0, 1)) {
      p.xl = test::uniform_int(g, 1, int(2 * p.content() + 3));
      p.xl_visibility = rmt_xl(test::uniform_int(g, 0, 1));
      p.read_sees_xl = test::uniform_int(g, 0, 1) == 1;
    }
    const index_t n = test::uniform_int(g, 1, int(3 * p.content() + 5));
    INFO("arch " << TestType::name << " seed " << seed << " width " << width << " heads " << heads << " layers "
                 << layers << " m " << p.memory << " L " << p.segment_budget << " n " << n << " layout "
                 << int(p.layout) << " conv " << int(p.convention) << " pos " << int(p.positions.mode) << " xl "
                 << p.xl << " xl_vis " << int(p.xl_visibility) << " read_sees_xl " << p.read_sees_xl);
    rmt_reference_backbone<TestType> bb({.width = width, .heads = heads, .layers = layers, .seed = seed});
    rows mem0(g, p.memory, width), in(g, n, width), out(n, width, 7.0f);
    auto st = p.make_state(bb, mem0.cview());
    // Feed in random pieces: exercises whole-segment and streaming paths. The
    // encoder cuts each call into its own segments: whole segments per call.
    for (index_t i = 0; i < n;) {
      const index_t k = std::min<index_t>(n - i, test::uniform_int(g, 0, 1) || p.layout == rmt_layout::encoder
                                                     ? p.content() * test::uniform_int(g, 1, 2)
                                                     : test::uniform_int(g, 1, 9));
      p.forward(st, in.cview().rows(i, k), out.view().rows(i, k));
      i += k;
    }
    p.flush(st);
    const auto ref = reference::rmt_run(p, bb, mem0.as_double(), in.as_double());
    const index_t segs = (n + p.content() - 1) / p.content();
    CHECK(st.segments() == std::uint64_t(segs));
    const double tol = backbone_tolerance(layers, segs);
    REQUIRE(max_diff(out.data, ref.out, std::size_t(n * width)) <= tol);
    REQUIRE(max_diff(st.memory().data(), ref.memory.back(), std::size_t(p.memory * width)) <= tol);
  }
}

TEMPLATE_LIST_TEST_CASE("rmt with m = 0 equals the backbone alone", "[rmt][policies]",
                        test::tested_archs) {
  for (auto layout : {rmt_layout::decoder, rmt_layout::encoder}) {
    test::rng_t g(test::seed_for(701, std::uint64_t(layout)));
    const index_t width = 24, n = 150;
    rmt_reference_backbone<TestType> bb({.width = width, .heads = 3, .layers = 2});
    const rmt p{.memory = 0, .segment_budget = 64, .layout = layout};
    rows in(g, n, width), out(n, width), alone(n, width);
    auto st = p.make_state(bb, make_matrix<dynamic_extent, const float>(nullptr, 0, width));
    p.forward(st, in.cview(), out.view());
    auto cache = bb.make_cache();
    std::vector<index_t> pos;
    for (index_t i0 = 0; i0 < n; i0 += 64) {
      const index_t s = std::min<index_t>(64, n - i0);
      pos.resize(std::size_t(s));
      for (index_t k = 0; k < s; ++k) pos[std::size_t(k)] = k;
      cache.clear();
      if (layout == rmt_layout::decoder) bb.forward(cache, in.cview().rows(i0, s), pos, causal{}, alone.view().rows(i0, s));
      else bb.forward(cache, in.cview().rows(i0, s), pos, no_mask{}, alone.view().rows(i0, s));
    }
    INFO("layout " << int(layout));
    REQUIRE(out.data == alone.data);  // same calls, same masks' visibility: bit-identical
  }
}

TEMPLATE_LIST_TEST_CASE("rmt memory handoff is exactly the last layer's write rows",
                        "[rmt][policies]", test::tested_archs) {
  test::rng_t g(test::seed_for(702, 0));
  const index_t width = 32, m = 4, L = 40, c = L - 2 * m;
  rmt_reference_backbone<TestType> bb({.width = width, .heads = 4, .layers = 2, .seed = 9});
  for (auto conv : {rmt_convention::causal, rmt_convention::block_visible, rmt_convention::isolated_read}) {
    const rmt p{.memory = m, .segment_budget = L, .convention = conv};
    rows mem0(g, m, width), in(g, c, width), out(c, width);
    auto st = p.make_state(bb, mem0.cview());
    p.forward(st, in.cview(), out.view());
    // The backbone on the packed rows [mem; segment; mem] with the descriptor.
    rows packed(2 * m + c, width), y(2 * m + c, width);
    std::copy(mem0.data.begin(), mem0.data.end(), packed.data.begin());
    std::copy(in.data.begin(), in.data.end(), packed.data.begin() + m * width);
    std::copy(mem0.data.begin(), mem0.data.end(), packed.data.begin() + (m + c) * width);
    std::vector<index_t> pos(std::size_t(2 * m + c));
    for (index_t k = 0; k < 2 * m + c; ++k) pos[std::size_t(k)] = k;  // sequential
    auto cache = bb.make_cache();
    bb.forward(cache, packed.cview(), pos, rmt_decoder_mask{.memory = m, .convention = conv}, y.view());
    INFO("convention " << int(conv));
    REQUIRE(std::equal(st.memory().data(), st.memory().data() + m * width, y.data.begin() + (m + c) * width));
    REQUIRE(std::equal(out.data.begin(), out.data.end(), y.data.begin() + m * width));
    CHECK_FALSE(std::equal(st.memory().data(), st.memory().data() + m * width, mem0.data.begin()));
  }
}

TEMPLATE_LIST_TEST_CASE("rmt token-by-token equals whole segments", "[rmt][policies]",
                        test::tested_archs) {
  for (int conv = 0; conv < 3; ++conv) {
    test::rng_t g(test::seed_for(703, std::uint64_t(conv)));
    const index_t width = 48, m = 5, L = 77, n = 3 * (L - 2 * m) + 11;
    rmt_reference_backbone<TestType> bb({.width = width, .heads = 3, .layers = 2, .seed = 3});
    const rmt p{.memory = m, .segment_budget = L, .convention = rmt_convention(conv)};
    rows mem0(g, m, width), in(g, n, width), whole(n, width), tok(n, width);
    auto a = p.make_state(bb, mem0.cview());
    auto b = p.make_state(bb, mem0.cview());
    p.forward(a, in.cview(), whole.view());
    for (index_t i = 0; i < n; ++i) {
      p.forward(b, in.cview().rows(i, 1), tok.view().rows(i, 1));
      CHECK(b.memory().extent(0) == m);
    }
    CHECK(a.pending() == b.pending());
    p.flush(a);
    p.flush(b);
    INFO("convention " << conv);
    // Same arithmetic except the Eigen products (GEMM for a block, GEMV for a
    // row: different summation order) and the attention tiling per call: rounding only.
    const double tol = 1e-5;  // measured 1.6e-6
    REQUIRE(max_diff(whole.data, tok.data, whole.data.size()) <= tol);
    REQUIRE(max_diff(a.memory().data(), b.memory().data(), std::size_t(m * width)) <= tol);
  }
}

TEMPLATE_LIST_TEST_CASE(
    "rmt with an XL cache: token-by-token equals whole segments, xl = 0 is the plain driver",
    "[rmt][policies]", test::tested_archs) {
  for (int conv = 0; conv < 3; ++conv) {
    test::rng_t g(test::seed_for(708, std::uint64_t(conv)));
    const index_t width = 32, m = 3, L = 41, c = L - 2 * m, n = 4 * c + 9;
    rmt_reference_backbone<TestType> bb({.width = width, .heads = 2, .layers = 2, .seed = 4});
    for (const index_t xl : {index_t(7), c, index_t(2 * c + 5)}) {
      const rmt p{.memory = m, .segment_budget = L, .convention = rmt_convention(conv), .xl = xl,
                  .xl_visibility = rmt_xl::visible_to_memory, .read_sees_xl = conv == 2};
      INFO("convention " << conv << " xl " << xl);
      rows mem0(g, m, width), in(g, n, width), whole(n, width), tok(n, width);
      auto a = p.make_state(bb, mem0.cview());
      auto b = p.make_state(bb, mem0.cview());
      p.forward(a, in.cview(), whole.view());
      for (index_t i = 0; i < n; ++i) p.forward(b, in.cview().rows(i, 1), tok.view().rows(i, 1));
      p.flush(a);
      p.flush(b);
      CHECK(a.xl_rows() == std::min(xl, n));
      CHECK(b.xl_rows() == a.xl_rows());
      REQUIRE(max_diff(whole.data, tok.data, whole.data.size()) <= 1e-5);
      REQUIRE(max_diff(a.memory().data(), b.memory().data(), std::size_t(m * width)) <= 1e-5);
      // The footprint counts the XL rows (constant once the cache is full).
      CHECK(a.xl_bytes() == std::size_t(a.xl_rows()) * 2 * 2 * std::size_t(width) * sizeof(float));
      CHECK(a.footprint() >= a.memory_bytes() + a.xl_bytes());
    }
  }
  // xl = 0 stated explicitly is the default driver, bit for bit.
  test::rng_t g(test::seed_for(708, 9));
  rmt_reference_backbone<TestType> bb({.width = 16, .heads = 2, .layers = 2});
  rows mem0(g, 2, 16), in(g, 100, 16), o1(100, 16), o2(100, 16);
  const rmt plain{.memory = 2, .segment_budget = 20};
  const rmt zero{.memory = 2, .segment_budget = 20, .xl = 0, .xl_visibility = rmt_xl::hidden_from_memory};
  auto s1 = plain.make_state(bb, mem0.cview());
  auto s2 = zero.make_state(bb, mem0.cview());
  plain.forward(s1, in.cview(), o1.view());
  zero.forward(s2, in.cview(), o2.view());
  REQUIRE(o1.data == o2.data);
  CHECK(s2.xl_bytes() == 0);
}

TEST_CASE("rmt with an XL cache: the cache changes the outputs; snapshot/restore carries it", "[rmt][policies]") {
  test::rng_t g(test::seed_for(709, 0));
  const index_t width = 16, m = 2, L = 24, c = L - 2 * m, n = 5 * c;
  rmt_reference_backbone<> bb({.width = width, .heads = 2, .layers = 2, .seed = 2});
  const rmt p{.memory = m, .segment_budget = L, .xl = 12};
  rows mem0(g, m, width), in(g, n, width), o1(n, width), o2(n, width), o0(n, width);
  // Without the cache, segment 2 onwards differ (segment 1 has no XL rows).
  auto s0 = rmt{.memory = m, .segment_budget = L}.make_state(bb, mem0.cview());
  rmt{.memory = m, .segment_budget = L}.forward(s0, in.cview(), o0.view());
  auto a = p.make_state(bb, mem0.cview());
  p.forward(a, in.cview().rows(0, 2 * c), o1.view().rows(0, 2 * c));
  REQUIRE(std::equal(o0.data.begin(), o0.data.begin() + c * width, o1.data.begin()));
  REQUIRE(max_diff(o0.data.data() + c * width, std::vector<double>(o1.data.begin() + c * width, o1.data.begin() + 2 * c * width),
                   std::size_t(c * width)) > 1e-3);
  const auto snap = a.snapshot();
  CHECK(snap.size() > a.memory_bytes() + a.xl_bytes());
  p.forward(a, in.cview().rows(2 * c, n - 2 * c), o1.view().rows(2 * c, n - 2 * c));
  rows other(g, m, width);
  auto b = p.make_state(bb, other.cview());
  b.restore(snap);
  CHECK(b.xl_rows() == 12);
  p.forward(b, in.cview().rows(2 * c, n - 2 * c), o2.view().rows(2 * c, n - 2 * c));
  REQUIRE(std::equal(o1.data.begin() + 2 * c * width, o1.data.end(), o2.data.begin() + 2 * c * width));
  // A snapshot without the XL rows (another xl) or with a damaged count is refused.
  auto q = rmt{.memory = m, .segment_budget = L, .xl = 11}.make_state(bb, mem0.cview());
  CHECK_THROWS_AS(q.restore(snap), invalid_argument);
  auto cut = snap;
  cut.resize(cut.size() - 40);
  CHECK_THROWS_AS(b.restore(cut), invalid_argument);
}

TEST_CASE("rmt memory stays constant-size over thousands of segments", "[rmt][policies]") {
  test::rng_t g(test::seed_for(704, 0));
  const index_t width = 8, m = 2, L = 8, c = L - 2 * m, segments = 3000;
  rmt_reference_backbone<> bb({.width = width, .heads = 2, .layers = 1});
  const rmt p{.memory = m, .segment_budget = L};
  rows mem0(g, m, width), in(g, c * 100, width), out(c * 100, width);
  auto st = p.make_state(bb, mem0.cview());
  const std::size_t bytes = st.memory_bytes(), snap_bytes = st.snapshot().size();
  CHECK(bytes == std::size_t(m * width) * sizeof(float));
  for (index_t s = 0; s < segments / 100; ++s) {
    p.forward(st, in.cview(), out.view());
    REQUIRE(st.memory_bytes() == bytes);
    REQUIRE(st.memory().extent(0) == m);
    for (index_t i = 0; i < m * width; ++i) REQUIRE(std::isfinite(st.memory().data()[i]));
  }
  CHECK(st.segments() == std::uint64_t(segments));
  CHECK(st.snapshot().size() == snap_bytes);
}

TEST_CASE("rmt snapshot/restore is bit-exact and rejects corrupt input", "[rmt][policies]") {
  test::rng_t g(test::seed_for(705, 0));
  const index_t width = 16, m = 3, L = 30, n = 200;
  rmt_reference_backbone<> bb({.width = width, .heads = 2, .layers = 2});
  const rmt p{.memory = m, .segment_budget = L};
  rows mem0(g, m, width), in(g, n, width), o1(n, width), o2(n, width);
  auto a = p.make_state(bb, mem0.cview());
  p.forward(a, in.cview().rows(0, 3 * p.content()), o1.view().rows(0, 3 * p.content()));
  const auto snap = a.snapshot();
  p.forward(a, in.cview().rows(3 * p.content(), n - 3 * p.content()), o1.view().rows(3 * p.content(), n - 3 * p.content()));

  rows other(g, m, width);
  auto b = p.make_state(bb, other.cview());
  b.restore(snap);
  CHECK(b.segments() == 3);
  p.forward(b, in.cview().rows(3 * p.content(), n - 3 * p.content()), o2.view().rows(3 * p.content(), n - 3 * p.content()));
  REQUIRE(std::equal(o1.data.begin() + 3 * p.content() * width, o1.data.end(), o2.data.begin() + 3 * p.content() * width));
  REQUIRE(std::equal(a.memory().data(), a.memory().data() + m * width, b.memory().data()));

  // Pending tokens: flush first.
  CHECK(a.pending() > 0);
  CHECK_THROWS_AS(a.snapshot(), invalid_argument);
  p.flush(a);
  CHECK_NOTHROW(a.snapshot());

  auto corrupt = [&](auto&& edit) {
    auto s = snap;
    edit(s);
    return s;
  };
  CHECK_THROWS_AS(b.restore(corrupt([](auto& s) { s[0] = std::byte{'X'}; })), invalid_argument);
  CHECK_THROWS_AS(b.restore(corrupt([](auto& s) { s[8] = std::byte{99}; })), invalid_argument);  // version
  CHECK_THROWS_AS(b.restore(corrupt([](auto& s) { s.pop_back(); })), invalid_argument);
  CHECK_THROWS_AS(b.restore(corrupt([](auto& s) { s.push_back(std::byte{0}); })), invalid_argument);
  CHECK_THROWS_AS(b.restore(corrupt([](auto& s) { s.resize(5); })), invalid_argument);
  CHECK_THROWS_AS(b.restore(std::span<const std::byte>{}), invalid_argument);
  // A different policy or width.
  const rmt q{.memory = m, .segment_budget = L + 1};
  auto c = q.make_state(bb, mem0.cview());
  CHECK_THROWS_AS(c.restore(snap), invalid_argument);
  rmt_reference_backbone<> wide({.width = 20, .heads = 2, .layers = 1});
  rows mw(g, m, 20);
  auto d = p.make_state(wide, mw.cview());
  CHECK_THROWS_AS(d.restore(snap), invalid_argument);
  // A failed restore leaves the state as it was.
  const std::vector<float> before(b.memory().data(), b.memory().data() + m * width);
  CHECK_THROWS(b.restore(corrupt([](auto& s) { s.pop_back(); })));
  CHECK(std::equal(before.begin(), before.end(), b.memory().data()));
}

TEST_CASE("rmt rejects bad configurations", "[rmt][policies]") {
  test::rng_t g(test::seed_for(706, 0));
  rmt_reference_backbone<> bb({.width = 16, .heads = 2, .layers = 1});
  rows mem(g, 4, 16), mem_w(g, 4, 12), in(g, 10, 16), out(10, 16), out_w(10, 12), out_n(9, 16);
  // Memory larger than the segment budget: decoder needs 2m + 1 <= L, encoder m + 1 <= L.
  CHECK_THROWS_AS((rmt{.memory = 4, .segment_budget = 8}.make_state(bb, mem.cview())), invalid_argument);
  CHECK_THROWS_AS((rmt{.memory = 4, .segment_budget = 4, .layout = rmt_layout::encoder}.make_state(bb, mem.cview())),
                  invalid_argument);
  CHECK_NOTHROW((rmt{.memory = 4, .segment_budget = 5, .layout = rmt_layout::encoder}.make_state(bb, mem.cview())));
  CHECK_THROWS_AS((rmt{.memory = -1, .segment_budget = 8}.make_state(bb, mem.cview())), invalid_argument);
  // Mismatched widths / shapes.
  const rmt p{.memory = 4, .segment_budget = 20};
  CHECK_THROWS_AS(p.make_state(bb, mem_w.cview()), invalid_argument);
  CHECK_THROWS_AS(p.make_state(bb, mem.cview().rows(0, 3)), invalid_argument);
  auto st = p.make_state(bb, mem.cview());
  CHECK_THROWS_AS(p.forward(st, in.cview(), out_w.view()), invalid_argument);
  CHECK_THROWS_AS(p.forward(st, in.cview(), out_n.view()), invalid_argument);
  // A state used with another policy.
  CHECK_THROWS_AS((rmt{.memory = 4, .segment_budget = 21}.forward(st, in.cview(), out.view())), invalid_argument);
  CHECK_THROWS_AS(rmt_reference_backbone<>({.width = 10, .heads = 3}), invalid_argument);
  // An XL cache: decoder only, within bounds, a known visibility.
  CHECK_THROWS_WITH((rmt{.memory = 4, .segment_budget = 20, .layout = rmt_layout::encoder, .xl = 4}.make_state(bb, mem.cview())),
                    Catch::Contains("'xl'") && Catch::Contains("decoder"));
  CHECK_THROWS_WITH((rmt{.memory = 4, .segment_budget = 20, .xl = -1}.make_state(bb, mem.cview())), Catch::Contains("'xl'"));
  CHECK_THROWS_WITH((rmt{.memory = 4, .segment_budget = 20, .xl = 4, .xl_visibility = rmt_xl(5)}.make_state(bb, mem.cview())),
                    Catch::Contains("'xl_visibility'"));
  // Zero-length input is a no-op.
  CHECK_NOTHROW(p.forward(st, in.cview().rows(0, 0), out.view().rows(0, 0)));
  CHECK(st.segments() == 0);
}

TEST_CASE("rmt results do not depend on the backbone's thread count", "[rmt][policies]") {
  test::rng_t g(test::seed_for(707, 0));
  const index_t width = 64, m = 6, L = 300, n = 1000;  // big enough that the pool is used
  const rmt p{.memory = m, .segment_budget = L};
  rows mem0(g, m, width), in(g, n, width), serial_out(n, width), pooled_out(n, width);
  rmt_reference_backbone<> serial_bb({.width = width, .heads = 4, .layers = 2});
  thread_pool pool(3);
  rmt_reference_backbone<> pooled_bb({.width = width, .heads = 4, .layers = 2}, &pool);
  auto a = p.make_state(serial_bb, mem0.cview());
  auto b = p.make_state(pooled_bb, mem0.cview());
  p.forward(a, in.cview(), serial_out.view());
  p.forward(b, in.cview(), pooled_out.view());
  REQUIRE(serial_out.data == pooled_out.data);
  REQUIRE(std::equal(a.memory().data(), a.memory().data() + m * width, b.memory().data()));
}
