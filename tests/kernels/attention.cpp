// Exact attention (tiled prefill and split-KV decode) against the double
// oracle on random shapes for every compiled backend: odd lengths, head dims
// 1..128, GQA, every mask, n_q != n_kv in both alignments, both memory
// layouts, logit scales up to 30x. Plus edge cases and thread invariance.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <longctx/kernels.hpp>
#include <longctx/reference.hpp>

#include "../support/masks.hpp"
#include "../support/support.hpp"

using namespace longctx;

namespace {

using test::any_mask;

// Head-major storage for a (b, heads, n, d) tensor in either memory layout,
// with optional row padding (a non-trivial stride).
// A random tensor at a cache-line-aligned address, or one float past it:
// the prefill reads V in place only when its rows are vector-aligned.
struct tensor4 {
  std::vector<float> data;
  tensor4_view<float> view;
  tensor4(test::rng_t& g, index_t b, index_t h, index_t n, index_t d, bool bnhd, index_t pad, bool aligned = true,
          float lo = -1, float hi = 1) {
    const index_t dp = d + pad;
    // The values are drawn first and placed at the chosen address, so they do
    // not depend on where the allocator put `data` (they did: the test's
    // inputs changed with the heap, and with the tests run before it).
    const std::vector<float> values = test::random_floats(g, std::size_t(std::max<index_t>(1, b * h * n * dp)), lo, hi);
    data.assign(values.size() + 17, 0.0f);
    const auto addr = reinterpret_cast<std::uintptr_t>(data.data());
    float* base = data.data() + (64 - addr % 64) % 64 / sizeof(float) + (aligned ? 0 : 1);
    std::copy(values.begin(), values.end(), base);
    using E = tensor4_view<float>::extents_type;
    view = bnhd ? tensor4_view<float>(base, E(b, h, n, d), {n * h * dp, dp, h * dp, 1})
                : tensor4_view<float>(base, E(b, h, n, d), {h * n * dp, n * dp, dp, 1});
  }
  // The view's elements in logical order (where the view sits in data varies).
  std::vector<float> values() const {
    std::vector<float> r;
    for (index_t i = 0; i < view.extent(0); ++i)
      for (index_t j = 0; j < view.extent(1); ++j)
        for (index_t t = 0; t < view.extent(2); ++t)
          for (index_t c = 0; c < view.extent(3); ++c) r.push_back(view(i, j, t, c));
    return r;
  }
};

struct shape {
  index_t b, h_kv, group, n_q, n_kv, d, d_v;
  bool bnhd, aligned;
  index_t pad;
  float scale;
  any_mask mask;
};

std::string describe(const shape& s) {
  return detail::concat("b ", s.b, " h_kv ", s.h_kv, " group ", s.group, " n_q ", s.n_q, " n_kv ", s.n_kv, " d ",
                        s.d, " d_v ", s.d_v, s.bnhd ? " bnhd" : " bhnd", s.aligned ? " aligned" : " unaligned", " pad ", s.pad, " scale ", s.scale,
                        " mask#", s.mask.index());
}

shape random_shape(test::rng_t& g, bool decode) {
  static const std::vector<int> lens = test::odd_sizes({attention_blocking<default_arch>::block_q, attention_blocking<default_arch>::block_kv}, 260);
  static const std::vector<int> dims{1, 2, 7, 8, 16, 17, 59, 64, 111, 128};
  shape s{};
  s.b = test::uniform_int(g, 1, 2);
  s.h_kv = test::uniform_int(g, 1, 2);
  s.group = std::vector<index_t>{1, 1, 2, 3, 4}[std::size_t(test::uniform_int(g, 0, 4))];
  s.n_kv = test::random_size(g, lens, 200);
  s.n_q = decode ? test::uniform_int(g, 1, 3) : test::random_size(g, lens, 200);
  if (!decode && test::uniform_int(g, 0, 3) == 0) s.n_q = s.n_kv;
  s.d = dims[std::size_t(test::uniform_int(g, 0, int(dims.size()) - 1))];
  s.d_v = test::uniform_int(g, 0, 2) ? s.d : dims[std::size_t(test::uniform_int(g, 0, int(dims.size()) - 1))];
  s.bnhd = test::uniform_int(g, 0, 1);
  s.aligned = test::uniform_int(g, 0, 1);
  s.pad = test::uniform_int(g, 0, 3) == 0 ? test::uniform_int(g, 1, 5) : 0;
  const float boost = std::vector<float>{1, 1, 3, 10, 30}[std::size_t(test::uniform_int(g, 0, 4))];
  s.scale = boost / std::sqrt(float(s.d));
  s.mask = test::random_mask(g);
  return s;
}

// Runs the kernel and the oracle on one shape; returns the number of rows checked.
template <class Arch>
void check_shape(test::rng_t& g, const shape& s, bool decode_path) {
  const index_t h = s.h_kv * s.group;
  tensor4 q(g, s.b, h, s.n_q, s.d, s.bnhd, s.pad, s.aligned), k(g, s.b, s.h_kv, s.n_kv, s.d, s.bnhd, s.pad, s.aligned),
      v(g, s.b, s.h_kv, s.n_kv, s.d_v, s.bnhd, s.pad, s.aligned, -2, 2),
      o(g, s.b, h, s.n_q, s.d_v, s.bnhd, s.pad, s.aligned);
  std::vector<float> lse_buf(std::size_t(s.b * h * s.n_q), 123.0f);
  lse_view lse(lse_buf.data(), dextents<index_t, 3>(s.b, h, s.n_q));
  std::visit(
      [&](const auto& m) {
        if (decode_path)
          decode<Arch>(q.view, k.view, v.view, o.view, s.scale, m, lse);
        else
          attention<Arch>(q.view, k.view, v.view, o.view, s.scale, m, lse);
      },
      s.mask);
  for (index_t bi = 0; bi < s.b; ++bi)
    for (index_t hi = 0; hi < h; ++hi) {
      const index_t hk = hi / s.group;
      const auto ref = std::visit(
          [&](const auto& m) {
            return reference::attention_head(matrix_view<const float>(q.view.head(bi, hi)),
                                             matrix_view<const float>(k.view.head(bi, hk)),
                                             matrix_view<const float>(v.view.head(bi, hk)), double(s.scale), m);
          },
          s.mask);
      double max_logit = 0, max_v = 0;
      for (double x : ref.logits)
        if (std::isfinite(x)) max_logit = std::max(max_logit, std::abs(x));
      for (index_t j = 0; j < s.n_kv; ++j)
        for (index_t c = 0; c < s.d_v; ++c) max_v = std::max(max_v, double(std::abs(v.view(bi, hk, j, c))));
      const double tol = test::attention_tolerance(max_logit, max_v);
      // The LSE is a float of magnitude |lse| (log of the visible count when
      // logits are small): its rounding and that of the running sum scale with it.
      for (index_t i = 0; i < s.n_q; ++i) {
        INFO(describe(s) << " batch " << bi << " head " << hi << " row " << i << " tol " << tol);
        const double rl = ref.lse[std::size_t(i)];
        if (std::isinf(rl)) {
          REQUIRE(lse(bi, hi, i) == neg_inf);
          for (index_t c = 0; c < s.d_v; ++c) REQUIRE(o.view(bi, hi, i, c) == 0.0f);
          continue;
        }
        // Plus the running sum of the row's n visible exp terms: n float
        // additions, relative error up to n u (the scalar backend adds them
        // one by one; a decode case over 107 keys under a sinks-window mask
        // reached 17 eps, above the bound without this term).
        index_t visible = 0;
        for (index_t j = 0; j < s.n_kv; ++j) visible += std::isfinite(ref.logits[std::size_t(i * s.n_kv + j)]);
        REQUIRE(std::abs(lse(bi, hi, i) - rl) <=
                test::attention_tolerance(max_logit + std::abs(rl), 1.0) + 0.5 * test::eps_f32 * double(visible));
        double err = 0;
        for (index_t c = 0; c < s.d_v; ++c)
          err = std::max(err, std::abs(o.view(bi, hi, i, c) - ref.o[std::size_t(i * s.d_v + c)]));
        REQUIRE(err <= tol);
      }
    }
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("attention: random shapes against the double oracle", "[kernels]",
                        test::tested_archs) {
  const int cases = test::scaled(1000);
  for (int c = 0; c < cases; ++c) {
    test::rng_t g(test::seed_for(10, std::uint64_t(c)));
    const shape s = random_shape(g, false);
    INFO("arch " << TestType::name << " case " << c << " seed " << test::seed_for(10, std::uint64_t(c)));
    check_shape<TestType>(g, s, false);
  }
}

TEMPLATE_LIST_TEST_CASE("decode: random shapes against the double oracle", "[kernels]",
                        test::tested_archs) {
  const int cases = test::scaled(400);
  for (int c = 0; c < cases; ++c) {
    test::rng_t g(test::seed_for(11, std::uint64_t(c)));
    shape s = random_shape(g, true);
    if (c % 10 == 0) s.n_kv = test::uniform_int(g, 600, 3000);  // several decode chunks
    INFO("arch " << TestType::name << " case " << c);
    check_shape<TestType>(g, s, true);
  }
}

TEMPLATE_LIST_TEST_CASE("decode of the last row equals the prefill's last row", "[kernels]",
                        test::tested_archs) {
  for (index_t n : {1, 63, 64, 65, 700, 1500}) {
    test::rng_t g(test::seed_for(12, std::uint64_t(n)));
    const index_t d = 64, h = 4, h_kv = 2;
    tensor4 q(g, 1, h, n, d, false, 0), k(g, 1, h_kv, n, d, false, 0), v(g, 1, h_kv, n, d, false, 0),
        o(g, 1, h, n, d, false, 0), od(g, 1, h, 1, d, false, 0);
    attention<TestType>(q.view, k.view, v.view, o.view, 0.125f, causal{});
    decode<TestType>(q.view.tokens(n - 1, 1), k.view, v.view, od.view, 0.125f, causal{});
    for (index_t hi = 0; hi < h; ++hi)
      for (index_t c = 0; c < d; ++c) {
        INFO("n " << n << " head " << hi << " col " << c);
        REQUIRE(std::abs(od.view(0, hi, 0, c) - o.view(0, hi, n - 1, c)) <= test::attention_tolerance(10, 1));
      }
  }
}

TEMPLATE_LIST_TEST_CASE("attention and decode are bit-identical for any thread count", "[kernels]",
                        test::tested_archs) {
  test::rng_t g(test::seed_for(13, 0));
  const index_t b = 2, h = 4, h_kv = 2, n = 301, d = 59;
  tensor4 q(g, b, h, n, d, true, 0), k(g, b, h_kv, n, d, true, 0), v(g, b, h_kv, n, d, true, 0),
      o1(g, b, h, n, d, true, 0), o2(g, b, h, n, d, true, 0), d1(g, b, h, 1, d, true, 0), d2(g, b, h, 1, d, true, 0);
  tensor4 kl(g, b, h_kv, 5000, d, false, 0), vl(g, b, h_kv, 5000, d, false, 0);
  attention<TestType>(q.view, k.view, v.view, o1.view, 0.2f, causal{});
  decode<TestType>(q.view.tokens(0, 1), kl.view, vl.view, d1.view, 0.2f);
  for (std::size_t threads : {1, 2, 3, 5}) {
    thread_pool pool(threads);
    attention<TestType>(q.view, k.view, v.view, o2.view, 0.2f, causal{}, {}, pool);
    decode<TestType>(q.view.tokens(0, 1), kl.view, vl.view, d2.view, 0.2f, no_mask{}, {}, pool);
    INFO("threads " << threads);
    CHECK(o1.values() == o2.values());
    CHECK(d1.values() == d2.values());
  }
}

TEMPLATE_LIST_TEST_CASE("decode logits and LSE give the softmax probabilities", "[kernels]",
                        test::tested_archs) {
  test::rng_t g(test::seed_for(14, 0));
  const index_t h = 2, n = 777, d = 17;
  tensor4 q(g, 1, h, 1, d, false, 0), k(g, 1, 1, n, d, false, 0), v(g, 1, 1, n, d, false, 0),
      o(g, 1, h, 1, d, false, 0), lg(g, 1, h, 1, n, false, 0);
  std::vector<float> lse_buf(h);
  lse_view lse(lse_buf.data(), dextents<index_t, 3>(1, h, 1));
  decode<TestType>(q.view, k.view, v.view, o.view, 0.7f, sinks_window{3, 200}, lse, serial_executor{}, lg.view);
  for (index_t hi = 0; hi < h; ++hi) {
    const auto ref = reference::attention_head(matrix_view<const float>(q.view.head(hi ? 0 : 0, hi)),
                                               matrix_view<const float>(k.view.head(0, 0)),
                                               matrix_view<const float>(v.view.head(0, 0)), 0.7, sinks_window{3, 200});
    std::vector<float> p(static_cast<std::size_t>(n));
    probabilities_from_logits<TestType>(&lg.view(0, hi, 0, 0), lse(0, hi, 0), p.data(), n);
    double total = 0;
    for (index_t j = 0; j < n; ++j) {
      const double rp = std::isinf(ref.logits[std::size_t(j)]) ? 0.0 : std::exp(ref.logits[std::size_t(j)] - ref.lse[0]);
      INFO("head " << hi << " key " << j);
      REQUIRE(std::abs(p[std::size_t(j)] - rp) <= 16 * test::eps_f32 * std::max(rp, 1e-3));
      total += p[std::size_t(j)];
    }
    CHECK(total == Approx(1.0).epsilon(1e-5));
  }
}

TEST_CASE("attention: edge cases", "[kernels]") {
  test::rng_t g(test::seed_for(15, 0));
  SECTION("no keys: output 0, LSE -inf") {
    tensor4 q(g, 1, 2, 3, 8, false, 0), k(g, 1, 1, 0, 8, false, 0), v(g, 1, 1, 0, 8, false, 0),
        o(g, 1, 2, 3, 8, false, 0);
    std::vector<float> lb(6, 1.0f);
    lse_view lse(lb.data(), dextents<index_t, 3>(1, 2, 3));
    attention(q.view, k.view, v.view, o.view, 1.0f, no_mask{}, lse);
    for (index_t i = 0; i < 3; ++i) {
      CHECK(lse(0, 1, i) == neg_inf);
      CHECK(o.view(0, 1, i, 7) == 0.0f);
    }
    decode(q.view, k.view, v.view, o.view, 1.0f, no_mask{}, lse);
    CHECK(lse(0, 0, 0) == neg_inf);
    CHECK(o.view(0, 0, 0, 0) == 0.0f);
  }
  SECTION("no queries is a no-op") {
    tensor4 q(g, 1, 2, 0, 8, false, 0), k(g, 1, 1, 5, 8, false, 0), v(g, 1, 1, 5, 8, false, 0),
        o(g, 1, 2, 0, 8, false, 0);
    CHECK_NOTHROW(attention(q.view, k.view, v.view, o.view, 1.0f));
  }
  SECTION("huge logits stay finite; -inf rows are exactly zero") {
    tensor4 q(g, 1, 1, 4, 4, false, 0, true, 50, 60), k(g, 1, 1, 9, 4, false, 0, true, 50, 60), v(g, 1, 1, 9, 4, false, 0),
        o(g, 1, 1, 4, 4, false, 0);
    attention(q.view, k.view, v.view, o.view, 10.0f, causal{alignment::top_left});
    for (float x : o.data) CHECK(std::isfinite(x));
  }
  SECTION("non-finite inputs are not hidden: a NaN query row gives NaN output") {
    tensor4 q(g, 1, 1, 2, 4, false, 0), k(g, 1, 1, 3, 4, false, 0), v(g, 1, 1, 3, 4, false, 0),
        o(g, 1, 1, 2, 4, false, 0);
    q.view(0, 0, 1, 2) = std::numeric_limits<float>::quiet_NaN();
    attention(q.view, k.view, v.view, o.view, 1.0f);
    CHECK(std::isnan(o.view(0, 0, 1, 0)));
    CHECK(std::isfinite(o.view(0, 0, 0, 0)));
  }
}

TEST_CASE("attention: bad input is rejected with the argument and the shapes", "[kernels]") {
  test::rng_t g(test::seed_for(16, 0));
  tensor4 q(g, 1, 4, 5, 8, false, 0), k(g, 1, 2, 7, 8, false, 0), v(g, 1, 2, 7, 6, false, 0), o(g, 1, 4, 5, 6, false, 0);
  tensor4 k3(g, 1, 3, 7, 8, false, 0), kd(g, 1, 2, 7, 9, false, 0), ob(g, 1, 4, 5, 5, false, 0);
  CHECK_NOTHROW(attention(q.view, k.view, v.view, o.view, 1.0f));
  CHECK_THROWS_WITH(attention(q.view, kd.view, v.view, o.view, 1.0f),
                    Catch::Contains("'k'") && Catch::Contains("head dim 9 != q head dim 8") &&
                        Catch::Contains("q (1, 4, 5, 8)"));
  CHECK_THROWS_WITH(attention(q.view, k3.view, v.view, o.view, 1.0f), Catch::Contains("not a multiple of KV heads 3"));
  CHECK_THROWS_WITH(attention(q.view, k.view, v.view, ob.view, 1.0f), Catch::Contains("'o'"));
  CHECK_THROWS_WITH(attention(q.view, k.view, v.view, o.view, std::numeric_limits<float>::infinity()),
                    Catch::Contains("'scale'"));
  CHECK_THROWS_WITH(attention(q.view, k.view, v.view, o.view, 1.0f, sliding_window{0}), Catch::Contains("window"));
  tensor4_view<float> strided(k.data.data(), k.view.extents(), {112, 56, 8, 2});
  CHECK_THROWS_WITH(attention(q.view, strided, v.view, o.view, 1.0f), Catch::Contains("contiguous"));
  tensor4_view<float> null_k(nullptr, k.view.extents());
  CHECK_THROWS_WITH(attention(q.view, null_k, v.view, o.view, 1.0f), Catch::Contains("null data"));
  std::vector<float> lb(3);
  CHECK_THROWS_WITH(attention(q.view, k.view, v.view, o.view, 1.0f, no_mask{}, lse_view(lb.data(), dextents<index_t, 3>(1, 1, 3))),
                    Catch::Contains("'lse'"));
  tensor4 zero_d(g, 1, 4, 5, 0, false, 0), k0(g, 1, 2, 7, 0, false, 0);
  CHECK_THROWS_WITH(attention(zero_d.view, k0.view, v.view, o.view, 1.0f), Catch::Contains("d must be > 0"));
}

// ---- Prefill's row logits (row_logits): the pre-softmax logits of a range of
// query rows, for SnapKV / TOVA / H2O scores without a second Q K^T. ---------

namespace {

// Which rows a case asks for, biased to what the policies ask and to the
// 48-row query block edges.
std::pair<index_t, index_t> random_rows(test::rng_t& g, index_t n_q, index_t bq) {
  switch (test::uniform_int(g, 0, 4)) {
    case 0: {  // SnapKV: the last w prompt rows
      const index_t w = test::uniform_int(g, 1, int(std::min<index_t>(n_q, 64)));
      return {n_q - w, w};
    }
    case 1: return {n_q - 1, 1};  // TOVA: the last prompt row
    case 2: {  // straddling a block edge (or ending on one)
      const index_t edge = std::min(n_q, bq * test::uniform_int(g, 1, int(std::max<index_t>(1, n_q / bq))));
      const index_t first = std::max<index_t>(0, edge - test::uniform_int(g, 0, 3));
      return {first, std::min(n_q - first, index_t(test::uniform_int(g, 0, 6)))};
    }
    case 3: return {0, n_q};  // every row (H2O)
    default: {
      const index_t first = test::uniform_int(g, 0, int(n_q));
      return {first, test::uniform_int(g, 0, int(n_q - first))};
    }
  }
}

// One prefill with and without a row_logits request for rows [first, first + w):
//  - o and lse are bit-identical with and without it;
//  - the logits match the double oracle within the dot-product bound
//    (d + 2) eps |scale| |q_i| |k_j| (the kernel rounds scale q, then sums d
//    products), and are -inf exactly where the oracle's mask hides the key;
//  - nothing outside the logits view is written;
//  - probabilities_from_logits(row, lse) is the oracle's softmax row, and sums
//    to 1 to within the rounding of the kernel's own running sum: the logits
//    are the floats its LSE was computed from.
template <class Arch>
void check_row_logits(test::rng_t& g, const shape& s, index_t first, index_t w) {
  const index_t h = s.h_kv * s.group;
  tensor4 q(g, s.b, h, s.n_q, s.d, s.bnhd, s.pad, s.aligned), k(g, s.b, s.h_kv, s.n_kv, s.d, s.bnhd, s.pad, s.aligned),
      v(g, s.b, s.h_kv, s.n_kv, s.d_v, s.bnhd, s.pad, s.aligned, -2, 2),
      o(g, s.b, h, s.n_q, s.d_v, s.bnhd, s.pad, s.aligned), o2 = o,
      lg(g, s.b, h, w, s.n_kv, s.bnhd, s.pad, s.aligned);
  o2.view = tensor4_view<float>(o2.data.data() + (o.view.data() - o.data.data()), o.view.extents(), o.view.strides());
  constexpr float unwritten = 777.0f;  // no logit or input value comes near it
  std::fill(lg.data.begin(), lg.data.end(), unwritten);
  std::vector<float> lse_buf(std::size_t(s.b * h * s.n_q), 123.0f), lse_buf2 = lse_buf;
  lse_view lse(lse_buf.data(), dextents<index_t, 3>(s.b, h, s.n_q)),
      lse2(lse_buf2.data(), dextents<index_t, 3>(s.b, h, s.n_q));
  std::visit(
      [&](const auto& m) {
        attention<Arch>(q.view, k.view, v.view, o.view, s.scale, m, lse);
        attention<Arch>(q.view, k.view, v.view, o2.view, s.scale, m, lse2, serial_executor{},
                        row_logits{first, lg.view});
      },
      s.mask);
  INFO(describe(s) << " rows [" << first << ", " << first + w << ")");
  REQUIRE(o.values() == o2.values());
  REQUIRE(lse_buf == lse_buf2);
  REQUIRE(std::count(lg.data.begin(), lg.data.end(), unwritten) == std::ptrdiff_t(lg.data.size()) - lg.view.size());

  const auto norm = [](const auto& row, index_t n) {
    double t = 0;
    for (index_t p = 0; p < n; ++p) t += double(row(p)) * double(row(p));
    return std::sqrt(t);
  };
  std::vector<float> p(std::size_t(s.n_kv));
  for (index_t bi = 0; bi < s.b; ++bi)
    for (index_t hi = 0; hi < h; ++hi) {
      const index_t hk = hi / s.group;
      const auto qh = matrix_view<const float>(q.view.head(bi, hi)), kh = matrix_view<const float>(k.view.head(bi, hk));
      // The oracle for rows [first, first + w) only, the mask bound to the whole call.
      const auto ref = std::visit(
          [&](const auto& m) {
            const auto bound = m.bind(s.n_q, s.n_kv);
            return reference::attention_head(qh.rows(first, w), kh, matrix_view<const float>(v.view.head(bi, hk)),
                                             double(s.scale),
                                             [&](index_t i, index_t j) { return bound.visible(first + i, j); });
          },
          s.mask);
      std::vector<double> k_norm(std::size_t(s.n_kv));
      for (index_t j = 0; j < s.n_kv; ++j) k_norm[std::size_t(j)] = norm(kh.row(j), s.d);
      // Per row, the first bad key is reported: a REQUIRE per element would
      // dominate the run time.
      std::string bad;
      for (index_t r = 0; r < w && bad.empty(); ++r) {
        const index_t i = first + r;
        INFO("batch " << bi << " head " << hi << " row " << i);
        const double q_norm = norm(qh.row(i), s.d);
        const float* row = &lg.view(bi, hi, r, 0);
        const double* ref_row = &ref.logits[std::size_t(r * s.n_kv)];
        std::vector<double> tol(std::size_t(s.n_kv));
        double max_logit = 0, max_tol = 0;
        for (index_t j = 0; j < s.n_kv && bad.empty(); ++j) {
          const double rl = ref_row[j];
          tol[std::size_t(j)] = (s.d + 2) * test::eps_f32 * std::abs(double(s.scale)) * q_norm * k_norm[std::size_t(j)];
          if (std::isinf(rl) ? row[j] != neg_inf : !(std::abs(row[j] - rl) <= tol[std::size_t(j)]))
            bad = detail::concat("key ", j, ": logit ", row[j], ", oracle ", rl, ", tol ", tol[std::size_t(j)]);
          if (std::isfinite(rl)) {
            max_logit = std::max(max_logit, std::abs(rl));
            max_tol = std::max(max_tol, tol[std::size_t(j)]);
          }
        }
        INFO(bad);
        REQUIRE(bad.empty());
        const double rlse = ref.lse[std::size_t(r)];
        const float klse = lse2(bi, hi, i);
        probabilities_from_logits<Arch>(row, klse, p.data(), s.n_kv);
        if (std::isinf(rlse)) {  // fully masked row
          REQUIRE(klse == neg_inf);
          REQUIRE(std::all_of(p.begin(), p.end(), [](float x) { return x == 0.0f; }));
          continue;
        }
        // LSE error: the existing bound plus the largest logit error it sums.
        const double lse_tol = test::attention_tolerance(max_logit + std::abs(rlse), 1.0) + max_tol;
        REQUIRE(std::abs(klse - rlse) <= lse_tol);
        double total = 0, max_gap = 0;
        index_t visible = 0;
        for (index_t j = 0; j < s.n_kv && bad.empty(); ++j) {
          const double rl = ref_row[j], pj = p[std::size_t(j)];
          total += pj;
          if (std::isinf(rl)) {
            if (pj != 0.0) bad = detail::concat("key ", j, ": p ", pj, " where masked");
            continue;
          }
          ++visible;
          max_gap = std::max(max_gap, std::abs(double(row[j]) - double(klse)));
          // p = exp(fl(logit - lse)) (exp within 2 ulp): its relative error is
          // the logit's and the LSE's errors, the subtraction's rounding and exp's.
          const double rp = std::exp(rl - rlse);
          const double e = tol[std::size_t(j)] + lse_tol + test::eps_f32 * (std::abs(rl - rlse) + 3);
          const double p_tol = std::expm1(e) * rp + 2 * double(std::numeric_limits<float>::min());
          if (!(std::abs(pj - rp) <= p_tol))
            bad = detail::concat("key ", j, ": p ", pj, ", oracle ", rp, ", tol ", p_tol);
        }
        INFO(bad);
        REQUIRE(bad.empty());
        // Sums to 1 far tighter than the oracle comparison allows: the
        // kernel's l = sum exp(s - m) in float (error ~ n eps), LSE = m + log l
        // rounded (eps |lse|), then exp(fl(s - lse)) per key.
        const double sum_tol = test::eps_f32 * double(visible + 8 + 4 * (std::abs(klse) + max_gap));
        INFO("sum " << total << " tol " << sum_tol);
        REQUIRE(std::abs(total - 1.0) <= sum_tol);
      }
    }
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("attention: row logits against the double oracle on random shapes",
                        "[kernels]", test::tested_archs) {
  const int cases = test::scaled(300);
  for (int c = 0; c < cases; ++c) {
    test::rng_t g(test::seed_for(17, std::uint64_t(c)));
    const shape s = random_shape(g, false);
    const auto [first, w] = random_rows(g, s.n_q, attention_blocking<TestType>::block_q);
    INFO("arch " << TestType::name << " case " << c << " seed " << test::seed_for(17, std::uint64_t(c)));
    check_row_logits<TestType>(g, s, first, w);
  }
}

TEMPLATE_LIST_TEST_CASE("attention: row logits at block and tile edges, every mask", "[kernels]",
                        test::tested_archs) {
  constexpr index_t BQ = attention_blocking<TestType>::block_q, BKV = attention_blocking<TestType>::block_kv;
  // Windows shorter than a tile (whole tiles skipped left of the window, and
  // between sinks and window), longer than one, and chunks on and off the
  // tile grid; causal with n_q < n_kv, n_q > n_kv (fully masked rows) and top-left.
  const std::vector<any_mask> masks{no_mask{},
                                    causal{},
                                    causal{alignment::top_left},
                                    sliding_window{20},
                                    sliding_window{BKV + 3},
                                    sinks_window{4, 20},
                                    sinks_window{1, BKV},
                                    chunk_local{50},
                                    chunk_local{BKV}};
  int c = 0;
  for (index_t n_q : {index_t(1), BQ - 1, BQ, BQ + 1, 2 * BQ + 1})
    for (index_t n_kv : {index_t(1), BKV - 1, BKV, BKV + 1, 2 * BKV + 1, 3 * BKV - 20})
      for (std::size_t mi = 0; mi < masks.size(); ++mi) {
        test::rng_t g(test::seed_for(18, std::uint64_t(c)));
        const shape s{1, 2, 2, n_q, n_kv, 16, 8, c % 2 == 0, c % 3 != 0, c % 5 == 0 ? 3 : 0, 0.7f, masks[mi]};
        // The last row, the last rows across the last block edge, rows
        // around the first block edge, and all of them.
        const index_t around = std::min(BQ - 2, n_q - 1);
        for (auto [first, w] : {std::pair<index_t, index_t>{n_q - 1, 1},
                                {std::max<index_t>(0, n_q - BQ - 2), std::min(n_q, BQ + 2)},
                                {around, std::min<index_t>(4, n_q - around)},
                                {0, n_q}}) {
          INFO("arch " << TestType::name << " case " << c);
          check_row_logits<TestType>(g, s, first, w);
        }
        ++c;
      }
}

TEMPLATE_LIST_TEST_CASE("attention: row logits are bit-identical for any thread count", "[kernels]",
                        test::tested_archs) {
  test::rng_t g(test::seed_for(19, 0));
  const index_t b = 2, h = 4, h_kv = 2, n = 301, d = 59, first = 40, w = 70;
  tensor4 q(g, b, h, n, d, true, 0), k(g, b, h_kv, n, d, true, 0), v(g, b, h_kv, n, d, true, 0),
      o(g, b, h, n, d, true, 0), l1(g, b, h, w, n, true, 0), l2(g, b, h, w, n, true, 0);
  attention<TestType>(q.view, k.view, v.view, o.view, 0.2f, sinks_window{4, 100}, {}, serial_executor{},
                      row_logits{first, l1.view});
  for (std::size_t threads : {2, 3, 5}) {
    thread_pool pool(threads);
    attention<TestType>(q.view, k.view, v.view, o.view, 0.2f, sinks_window{4, 100}, {}, pool, row_logits{first, l2.view});
    INFO("threads " << threads);
    CHECK(l1.values() == l2.values());
  }
}

TEST_CASE("attention: bad row logits are rejected naming 'logits'", "[kernels]") {
  test::rng_t g(test::seed_for(20, 0));
  tensor4 q(g, 1, 4, 5, 8, false, 0), k(g, 1, 2, 7, 8, false, 0), v(g, 1, 2, 7, 6, false, 0), o(g, 1, 4, 5, 6, false, 0);
  tensor4 lg(g, 1, 4, 2, 7, false, 0), wrong_h(g, 1, 2, 2, 7, false, 0), wrong_n(g, 1, 4, 2, 6, false, 0),
      all(g, 1, 4, 5, 7, false, 0), too_many(g, 1, 4, 6, 7, false, 0), none(g, 1, 4, 0, 7, false, 0);
  const auto run = [&](index_t first, tensor4_view<float> view) {
    attention(q.view, k.view, v.view, o.view, 1.0f, causal{}, {}, serial_executor{}, row_logits{first, view});
  };
  CHECK_NOTHROW(run(3, lg.view));
  CHECK_NOTHROW(run(0, all.view));
  CHECK_NOTHROW(run(5, none.view));                   // w = 0 at the end: a no-op
  CHECK_NOTHROW(run(0, tensor4_view<float>{}));       // the default: not requested
  CHECK_NOTHROW(run(2, tensor4_view<float>(nullptr, none.view.extents())));  // empty, null
  const auto bad = Catch::Contains("argument 'logits'");
  CHECK_THROWS_WITH(run(0, wrong_h.view), bad && Catch::Contains("(1, 4, w, 7)") && Catch::Contains("(1, 2, 2, 7)"));
  CHECK_THROWS_WITH(run(0, wrong_n.view), bad && Catch::Contains("n_kv"));
  CHECK_THROWS_WITH(run(-1, lg.view), bad && Catch::Contains("n_q = 5"));
  CHECK_THROWS_WITH(run(4, lg.view), bad && Catch::Contains("n_q = 5"));
  CHECK_THROWS_WITH(run(0, too_many.view), bad && Catch::Contains("n_q = 5"));
  CHECK_THROWS_WITH(run(std::numeric_limits<index_t>::max(), lg.view), bad);  // first + w would overflow
  CHECK_THROWS_WITH(run(2, tensor4_view<float>{}), bad);  // a first without a view
  CHECK_THROWS_WITH(run(0, tensor4_view<float>(lg.data.data(), lg.view.extents(), {56, 14, 7, 2})),
                    bad && Catch::Contains("contiguous"));
  CHECK_THROWS_WITH(run(0, tensor4_view<float>(nullptr, lg.view.extents())), bad && Catch::Contains("null data"));
  // decode() keeps its own (b, h, n_q, n_kv) logits.
  CHECK_THROWS_WITH(decode(q.view, k.view, v.view, o.view, 1.0f, causal{}, {}, serial_executor{}, lg.view),
                    Catch::Contains("'logits'"));
}
