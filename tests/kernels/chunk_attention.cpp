// Quadratic chunk attention (relu^2, no softmax) and RoPE against double
// oracles for every compiled backend: odd chunk lengths, head dims 1..128,
// causal with query offsets, caller bias, accumulate; row-alone == block bits.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include <longctx/kernels/chunk_attention.hpp>
#include <longctx/kernels/rope.hpp>
#include <longctx/reference/flash.hpp>

#include "../support/support.hpp"

using namespace longctx;
using reference::matrix_d;

namespace {

struct mat {
  index_t rows, cols, ld;
  std::vector<float> data;
  mat(test::rng_t& g, index_t r, index_t c, index_t pad = 0, float lo = -1, float hi = 1)
      : rows(r), cols(c), ld(c + pad), data(test::random_floats(g, std::size_t(std::max<index_t>(1, r * (c + pad))), lo, hi)) {}
  matrix_view<float> view() { return make_matrix(data.data(), rows, cols, ld); }
  matrix_view<const float> cview() const { return make_matrix(data.data(), rows, cols, ld); }
};

// fp32 rounding of one output element, bounded by its magnitude sum: the
// logit is a d-term dot product (gamma_d), relu^2 doubles its relative error,
// the square and the product with v add 2 eps, and the sum over c_k keys adds
// gamma_{c_k}: (2 d + c_k + 4) eps * sum (scale |q||k| + |B|)^2 |v|.
double chunk_tolerance(index_t d, index_t c_k, double bound) {
  return (2.0 * double(d) + double(c_k) + 4.0) * test::eps_f32 * bound + 1e-30;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("chunk_attention: random shapes against the double oracle", "[chunk_attention]",
                        compiled_archs) {
  using Arch = TestType;
  static const std::vector<int> lens = test::odd_sizes({48, 96, 8, 16}, 300);
  static const std::vector<int> dims{1, 2, 7, 8, 16, 17, 59, 64, 111, 128};
  const int cases = test::scaled(60);
  for (int cs = 0; cs < cases; ++cs) {
    const auto seed = test::seed_for(101, std::uint64_t(cs));
    test::rng_t g(seed);
    const index_t c_k = test::random_size(g, lens, 300);
    const bool causal = test::uniform_int(g, 0, 2) > 0;
    // Causal calls pass a suffix of the chunk's rows (a streaming caller).
    const index_t q_offset = causal ? test::uniform_int(g, 0, int(c_k) - 1) : 0;
    const index_t c_q = causal ? c_k - q_offset : test::random_size(g, lens, 300);
    const index_t d = dims[std::size_t(test::uniform_int(g, 0, int(dims.size()) - 1))];
    const index_t d_v = dims[std::size_t(test::uniform_int(g, 0, int(dims.size()) - 1))];
    const bool with_bias = test::uniform_int(g, 0, 1) == 1, accumulate = test::uniform_int(g, 0, 3) == 0;
    const float scale = std::vector<float>{1.0f / float(c_k), 0.5f, 3.0f}[std::size_t(test::uniform_int(g, 0, 2))];
    const index_t pad = test::uniform_int(g, 0, 1) * 5;
    INFO("seed " << seed << " c_q " << c_q << " c_k " << c_k << " d " << d << " d_v " << d_v << " causal " << causal
                 << " q_offset " << q_offset << " bias " << with_bias << " acc " << accumulate << " scale " << scale
                 << " pad " << pad);
    mat q(g, c_q, d, pad), k(g, c_k, d, pad), v(g, c_k, d_v, pad), o(g, c_q, d_v, pad), b(g, c_q, c_k, pad, -0.3f, 0.3f);
    const matrix_d o0 = reference::to_double(o.cview());
    const std::vector<float> o_before = o.data;
    const matrix_d bd = reference::to_double(b.cview());
    chunk_attention<Arch>(q.cview(), k.cview(), v.cview(), o.view(), scale, chunk_mask{causal, q_offset},
                          with_bias ? b.cview() : matrix_view<const float>{}, accumulate);
    const auto ref = reference::chunk_attention(reference::to_double(q.cview()), reference::to_double(k.cview()),
                                                reference::to_double(v.cview()), double(scale),
                                                chunk_mask{causal, q_offset}, with_bias ? &bd : nullptr);
    double worst = 0;
    for (index_t i = 0; i < c_q; ++i)
      for (index_t c = 0; c < d_v; ++c) {
        const double want = ref.o(i, c) + (accumulate ? o0(i, c) : 0.0);
        const double tol = chunk_tolerance(d, c_k, ref.bound(i, c) + (accumulate ? std::abs(o0(i, c)) : 0.0));
        worst = std::max(worst, std::abs(double(o.view()(i, c)) - want) / tol);
      }
    REQUIRE(worst <= 1.0);
    // The padding columns of o are untouched.
    for (index_t i = 0; i < c_q; ++i)
      for (index_t c = d_v; c < o.ld; ++c)
        REQUIRE(o.data[std::size_t(i * o.ld + c)] == o_before[std::size_t(i * o.ld + c)]);
  }
}

TEMPLATE_LIST_TEST_CASE("chunk_attention: a row alone has the bits of the row in the block", "[chunk_attention]",
                        compiled_archs) {
  using Arch = TestType;
  for (int cs = 0; cs < test::scaled(6); ++cs) {
    const auto seed = test::seed_for(102, std::uint64_t(cs));
    test::rng_t g(seed);
    const index_t c = test::uniform_int(g, 1, 130), d = test::uniform_int(g, 1, 70), d_v = test::uniform_int(g, 1, 70);
    const bool with_bias = cs % 2 == 0;
    INFO("seed " << seed << " c " << c << " d " << d << " d_v " << d_v);
    mat q(g, c, d), k(g, c, d), v(g, c, d_v), o(g, c, d_v), o1(g, 1, d_v), b(g, c, c);
    const matrix_view<const float> bias = with_bias ? b.cview() : matrix_view<const float>{};
    chunk_attention<Arch>(q.cview(), k.cview(), v.cview(), o.view(), 0.7f, chunk_mask{true, 0}, bias);
    for (index_t i = 0; i < c; ++i) {
      // Row i alone, seeing only keys [0, i]: what a streaming decoder has.
      chunk_attention<Arch>(q.cview().rows(i, 1), k.cview().rows(0, i + 1), v.cview().rows(0, i + 1), o1.view(), 0.7f,
                            chunk_mask{true, i},
                            with_bias ? matrix_view<const float>(bias.data() + i * bias.stride(0),
                                                                 matrix_view<const float>::extents_type(1, i + 1),
                                                                 {bias.stride(0), 1})
                                      : matrix_view<const float>{});
      for (index_t cc = 0; cc < d_v; ++cc) REQUIRE(o1.view()(0, cc) == o.view()(i, cc));
    }
  }
}

TEST_CASE("chunk_attention: edge cases and argument checks", "[chunk_attention]") {
  test::rng_t g(7);
  mat q(g, 3, 4), k(g, 5, 4), v(g, 5, 6), o(g, 3, 6), k0(g, 0, 4), v0(g, 0, 6);
  // No keys: every row is 0 (an empty sum), never NaN.
  chunk_attention(q.cview(), k0.cview(), v0.cview(), o.view(), 1.0f);
  for (float x : std::vector<float>(o.data.begin(), o.data.begin() + 18)) CHECK(x == 0.0f);
  // Negative logits give exactly 0 (relu).
  std::vector<float> qn(4, 1.0f), kn(4, -1.0f), vn(6, 5.0f), on(6, 9.0f);
  chunk_attention(make_matrix(qn.data(), 1, 4), make_matrix(kn.data(), 1, 4), make_matrix(vn.data(), 1, 6),
                  make_matrix(on.data(), 1, 6), 1.0f);
  for (float x : on) CHECK(x == 0.0f);
  // A NaN logit stays NaN in its row (no silent clamp).
  qn[0] = std::nanf("");
  chunk_attention(make_matrix(qn.data(), 1, 4), make_matrix(kn.data(), 1, 4), make_matrix(vn.data(), 1, 6),
                  make_matrix(on.data(), 1, 6), 1.0f);
  CHECK(std::isnan(on[0]));
  CHECK_THROWS_AS(chunk_attention(q.cview(), k.cview(), v.cview().rows(0, 4), o.view(), 1.0f), invalid_argument);
  CHECK_THROWS_AS(chunk_attention(q.cview(), k.cview(), v.cview(), o.view().rows(0, 2), 1.0f), invalid_argument);
  CHECK_THROWS_AS(chunk_attention(q.cview(), k.cview(), v.cview(), o.view(), INFINITY), invalid_argument);
  CHECK_THROWS_AS(chunk_attention(q.cview(), k.cview(), v.cview(), o.view(), 1.0f, {}, q.cview()), invalid_argument);
  CHECK_THROWS_AS(chunk_attention(q.cview(), k.cview(), v.cview(), o.view(), 1.0f, {true, -1}), invalid_argument);
}

TEST_CASE("rope_rotate: rotate-half with global positions against double", "[chunk_attention]") {
  for (int cs = 0; cs < test::scaled(20); ++cs) {
    const auto seed = test::seed_for(103, std::uint64_t(cs));
    test::rng_t g(seed);
    const index_t n = test::uniform_int(g, 1, 40), d = test::uniform_int(g, 1, 130);
    const index_t p0 = cs % 3 == 0 ? index_t(1) << 20 : test::uniform_int(g, 0, 5000);
    INFO("seed " << seed << " n " << n << " d " << d << " p0 " << p0);
    mat x(g, n, d);
    const mat x0 = x;
    matrix_d want = reference::to_double(x.cview());
    reference::rope(want, p0, 10000.0);
    rope_rotate(x.view(), p0);
    for (index_t r = 0; r < n; ++r)
      for (index_t c = 0; c < d; ++c) {
        // |x1 c - x2 s|: cos, sin and each product round once, the sum once.
        const index_t h = d / 2, o = c < h ? c + h : c - h;
        const double mag = c < 2 * h ? std::abs(x0.cview()(r, c)) + std::abs(x0.cview()(r, o))
                                      : std::abs(x0.cview()(r, c));
        REQUIRE(std::abs(double(x.view()(r, c)) - want(r, c)) <= 4 * test::eps_f32 * mag);
      }
    // One token alone gets the bits of the same token in the block.
    const index_t r = test::uniform_int(g, 0, int(n) - 1);
    std::vector<float> y(x0.data.begin() + r * d, x0.data.begin() + (r + 1) * d);
    rope_rotate(make_matrix(y.data(), 1, d), p0 + r);
    for (index_t c = 0; c < d; ++c) REQUIRE(y[std::size_t(c)] == x.view()(r, c));
  }
  // The point of RoPE: q_t . k_u depends on t - u only.
  test::rng_t g(5);
  mat q(g, 1, 64), k(g, 1, 64);
  const auto dot_at = [&](index_t t, index_t u) {
    mat qq = q, kk = k;
    rope_rotate(qq.view(), t);
    rope_rotate(kk.view(), u);
    double s = 0;
    for (int c = 0; c < 64; ++c) s += double(qq.data[std::size_t(c)]) * kk.data[std::size_t(c)];
    return s;
  };
  CHECK(std::abs(dot_at(10, 3) - dot_at(1007, 1000)) < 1e-4);
  CHECK(std::abs(dot_at(10, 3) - dot_at(10, 4)) > 1e-3);
  std::vector<float> bad(4);
  CHECK_THROWS_AS(rope_rotate(make_matrix(bad.data(), 1, 4), -1), invalid_argument);
}
