// Exact attention (tiled prefill and split-KV decode) against the double
// oracle on random shapes for every compiled backend: odd lengths, head dims
// 1..128, GQA, every mask, n_q != n_kv in both alignments, both memory
// layouts, logit scales up to 30x. Plus edge cases and thread invariance.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <variant>
#include <vector>

#include <longctx/kernels.hpp>
#include <longctx/reference.hpp>

#include "../support/support.hpp"

using namespace longctx;

namespace {

using any_mask = std::variant<no_mask, causal, sliding_window, sinks_window, chunk_local>;

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
    data = test::random_floats(g, std::size_t(std::max<index_t>(1, b * h * n * dp) + 17), lo, hi);
    const auto addr = reinterpret_cast<std::uintptr_t>(data.data());
    float* base = data.data() + (64 - addr % 64) % 64 / sizeof(float) + (aligned ? 0 : 1);
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
  const alignment al = test::uniform_int(g, 0, 3) == 0 ? alignment::top_left : alignment::bottom_right;
  const index_t w = test::uniform_int(g, 1, 80);
  switch (test::uniform_int(g, 0, 5)) {
    case 0: s.mask = no_mask{}; break;
    case 1:
    case 2: s.mask = causal{al}; break;
    case 3: s.mask = sliding_window{w, al}; break;
    case 4: s.mask = sinks_window{test::uniform_int(g, 0, 6), w, al}; break;
    default: s.mask = chunk_local{test::uniform_int(g, 1, 70), al}; break;
  }
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
        REQUIRE(std::abs(lse(bi, hi, i) - rl) <= test::attention_tolerance(max_logit + std::abs(rl), 1.0));
        double err = 0;
        for (index_t c = 0; c < s.d_v; ++c)
          err = std::max(err, std::abs(o.view(bi, hi, i, c) - ref.o[std::size_t(i * s.d_v + c)]));
        REQUIRE(err <= tol);
      }
    }
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("attention: random shapes against the double oracle", "[kernels]", compiled_archs) {
  const int cases = test::scaled(1000);
  for (int c = 0; c < cases; ++c) {
    test::rng_t g(test::seed_for(10, std::uint64_t(c)));
    const shape s = random_shape(g, false);
    INFO("arch " << TestType::name << " case " << c << " seed " << test::seed_for(10, std::uint64_t(c)));
    check_shape<TestType>(g, s, false);
  }
}

TEMPLATE_LIST_TEST_CASE("decode: random shapes against the double oracle", "[kernels]", compiled_archs) {
  const int cases = test::scaled(400);
  for (int c = 0; c < cases; ++c) {
    test::rng_t g(test::seed_for(11, std::uint64_t(c)));
    shape s = random_shape(g, true);
    if (c % 10 == 0) s.n_kv = test::uniform_int(g, 600, 3000);  // several decode chunks
    INFO("arch " << TestType::name << " case " << c);
    check_shape<TestType>(g, s, true);
  }
}

TEMPLATE_LIST_TEST_CASE("decode of the last row equals the prefill's last row", "[kernels]", compiled_archs) {
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
                        compiled_archs) {
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

TEMPLATE_LIST_TEST_CASE("decode logits and LSE give the softmax probabilities", "[kernels]", compiled_archs) {
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
