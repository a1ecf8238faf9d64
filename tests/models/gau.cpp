// The GAU layer (models/gau.hpp) against the Eigen double oracle for every
// compiled backend: both norms, FLASH and FLASH-Quad, causal and not;
// token-by-token streaming agrees with one call; whole-sequence modes refuse
// a second call. (The mixed-chunk policy itself: tests/policies/flash.cpp.)
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include <longctx/models/gau.hpp>
#include <longctx/reference/flash.hpp>

#include "../support/support.hpp"

using namespace longctx;
using reference::matrix_d;

namespace {

gau_weights random_weights(test::rng_t& g, index_t dm, index_t e, index_t s, gau_norm nm) {
  const auto fill = [&](auto& m, float lo, float hi) {
    const auto v = test::random_floats(g, std::size_t(m.size()), lo, hi);
    std::copy(v.begin(), v.end(), m.data());
  };
  gau_weights w;
  w.w.resize(dm, 2 * e + s), w.b.resize(2 * e + s), w.gamma.resize(4, s), w.beta.resize(4, s), w.w_o.resize(e, dm);
  const float a = 1.0f / std::sqrt(float(dm));
  fill(w.w, -a, a), fill(w.b, -0.1f, 0.1f), fill(w.gamma, 0.5f, 1.5f), fill(w.beta, -0.1f, 0.1f);
  fill(w.w_o, -1.0f / std::sqrt(float(e)), 1.0f / std::sqrt(float(e)));
  if (nm == gau_norm::scale_norm) {
    w.norm_gain.setConstant(1, std::sqrt(float(dm)));
  } else {
    w.norm_gain.resize(dm), w.norm_bias.resize(dm);
    fill(w.norm_gain, 0.8f, 1.2f), fill(w.norm_bias, -0.1f, 0.1f);
  }
  return w;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("gau: layer forward against the Eigen double oracle", "[gau]",
                        test::tested_archs) {
  using Arch = TestType;
  thread_pool pool(2);
  for (int cs = 0; cs < test::scaled(12); ++cs) {
    const auto seed = test::seed_for(205, std::uint64_t(cs));
    test::rng_t g(seed);
    const index_t dm = test::uniform_int(g, 1, 48), e = 2 * dm, s = test::uniform_int(g, 1, 40);
    const index_t n = test::uniform_int(g, 1, 200), C = test::uniform_int(g, 1, 64);
    const gau_norm nm = cs % 2 ? gau_norm::layer_norm : gau_norm::scale_norm;
    const gau_attention at = cs % 3 == 2 ? gau_attention::flash_quad : gau_attention::mixed_chunk;
    const bool causal = cs % 4 != 3;
    INFO("seed " << seed << " n " << n << " d_model " << dm << " s " << s << " C " << C << " layer_norm "
                 << (nm == gau_norm::layer_norm) << " quad " << (at == gau_attention::flash_quad) << " causal "
                 << causal);
    const gau_weights w = random_weights(g, dm, e, s, nm);
    // FLASH-Quad's relative-position bias, half the time: (n_max, n_max)
    // with n_max >= n, of which the call uses the top-left (n, n).
    const index_t n_max = n + test::uniform_int(g, 0, 5);
    const std::vector<float> qb = test::random_floats(g, std::size_t(n_max * n_max), -0.3f, 0.3f);
    const bool with_bias = at == gau_attention::flash_quad && test::uniform_int(g, 0, 1) == 1;
    INFO("quad_bias " << with_bias << " n_max " << n_max);
    const gau layer{.norm = nm,
                    .attention = at,
                    .mixed = flash{.chunk = C, .mode = causal ? flash_mode::causal : flash_mode::non_causal},
                    .quad_bias = with_bias ? make_matrix<dynamic_extent, const float>(qb.data(), n_max, n_max)
                                           : matrix_view<const float>{}};
    std::vector<float> x = test::random_floats(g, std::size_t(n * dm)), y(std::size_t(n * dm));
    auto st = layer.make_state(w);
    layer.forward<Arch>(st, make_matrix<dynamic_extent, const float>(x.data(), n, dm), make_matrix(y.data(), n, dm),
                        pool);
    const matrix_d want =
        reference::gau_forward(layer, w, reference::to_double(make_matrix<dynamic_extent, const float>(x.data(), n, dm)));
    // fp32 through two projections, SiLU and the attention: relative to the
    // size of what the layer adds to X (sums of ~n signed terms cancel).
    // 2e-4 is ~7x the worst error seen (3e-5)
    // over these shapes; a wrong mask, norm or RoPE position is O(1) off.
    double scale_y = 0, err = 0;
    for (index_t i = 0; i < n; ++i)
      for (index_t c = 0; c < dm; ++c) {
        scale_y = std::max(scale_y, std::abs(want(i, c) - double(x[std::size_t(i * dm + c)])));
        err = std::max(err, std::abs(want(i, c) - double(y[std::size_t(i * dm + c)])));
      }
    INFO("max error " << err << " max |Y - X| " << scale_y);
    REQUIRE(err <= 2e-4 * (scale_y + 1e-3));
  }
}

TEMPLATE_LIST_TEST_CASE("gau: token-by-token streaming agrees with the whole sequence", "[gau]",
                        test::tested_archs) {
  using Arch = TestType;
  test::rng_t g(test::seed_for(206, 0));
  const index_t dm = 24, e = 48, s = 16, n = 150, C = 32;
  for (gau_norm nm : {gau_norm::scale_norm, gau_norm::layer_norm}) {
    const gau_weights w = random_weights(g, dm, e, s, nm);
    const gau layer{.norm = nm, .mixed = flash{.chunk = C}};
    std::vector<float> x = test::random_floats(g, std::size_t(n * dm)), y(std::size_t(n * dm)), yt(std::size_t(n * dm));
    auto st = layer.make_state(w);
    layer.forward<Arch>(st, make_matrix<dynamic_extent, const float>(x.data(), n, dm), make_matrix(y.data(), n, dm));
    auto st1 = layer.make_state(w);
    for (index_t t = 0; t < n; ++t)
      layer.forward<Arch>(st1, make_matrix<dynamic_extent, const float>(x.data() + t * dm, 1, dm),
                          make_matrix(yt.data() + t * dm, 1, dm));
    CHECK(st1.position() == n);
    CHECK(st1.attention_state().chunks_folded() == n / C);
    // GEMV vs GEMM rounding of the projections only (the attention is
    // bit-exact given equal inputs); measured 0 here, allowed ~100 ulps.
    double err = 0, mag = 0;
    for (std::size_t i = 0; i < y.size(); ++i) {
      err = std::max(err, std::abs(double(y[i]) - double(yt[i])));
      mag = std::max(mag, std::abs(double(y[i])));
    }
    INFO("max streaming difference " << err << " max |y| " << mag);
    REQUIRE(err <= 1e-5 * mag);
  }
  // Whole-sequence modes refuse a second call.
  const gau_weights w = random_weights(g, dm, e, s, gau_norm::scale_norm);
  const gau quad{.attention = gau_attention::flash_quad};
  auto st = quad.make_state(w);
  std::vector<float> x(static_cast<std::size_t>(dm), 0.5f), y(static_cast<std::size_t>(dm));
  quad.forward<Arch>(st, make_matrix<dynamic_extent, const float>(x.data(), 1, dm), make_matrix(y.data(), 1, dm));
  CHECK_THROWS_AS(quad.forward<Arch>(st, make_matrix<dynamic_extent, const float>(x.data(), 1, dm),
                                     make_matrix(y.data(), 1, dm)),
                  invalid_argument);
}

TEMPLATE_LIST_TEST_CASE(
    "gau: FLASH-Quad's relative-position bias enters as relu(Q K^T / n + B)^2, checked", "[gau]",
    test::tested_archs) {
  using Arch = TestType;
  test::rng_t g(test::seed_for(207, 0));
  const index_t dm = 16, e = 32, s = 8, n = 40;
  const gau_weights w = random_weights(g, dm, e, s, gau_norm::scale_norm);
  std::vector<float> x = test::random_floats(g, std::size_t(n * dm)), y(std::size_t(n * dm)), y0(y.size());
  const auto xv = make_matrix<dynamic_extent, const float>(x.data(), n, dm);
  // A bias large enough to change every row: the biased output differs from
  // the unbiased one and matches the oracle (the sweep above covers shapes).
  const std::vector<float> qb = test::random_floats(g, std::size_t(n * n), 0.5f, 1.0f);
  const auto bv = make_matrix<dynamic_extent, const float>(qb.data(), n, n);
  for (const bool causal : {true, false}) {
    CAPTURE(causal);
    const flash_mode mode = causal ? flash_mode::causal : flash_mode::non_causal;
    const gau plain{.attention = gau_attention::flash_quad, .mixed = {.mode = mode}};
    const gau biased{.attention = gau_attention::flash_quad, .mixed = {.mode = mode}, .quad_bias = bv};
    auto s0 = plain.make_state(w);
    plain.forward<Arch>(s0, xv, make_matrix(y0.data(), n, dm));
    auto s1 = biased.make_state(w);
    biased.forward<Arch>(s1, xv, make_matrix(y.data(), n, dm));
    const matrix_d want = reference::gau_forward(biased, w, reference::to_double(xv));
    double err = 0, moved = 0, mag = 0;
    for (index_t i = 0; i < n; ++i)
      for (index_t c = 0; c < dm; ++c) {
        const std::size_t k = std::size_t(i * dm + c);
        err = std::max(err, std::abs(want(i, c) - double(y[k])));
        moved = std::max(moved, std::abs(double(y[k]) - double(y0[k])));
        mag = std::max(mag, std::abs(want(i, c) - double(x[k])));
      }
    INFO("error " << err << " bias effect " << moved << " max |Y - X| " << mag);
    REQUIRE(err <= 2e-4 * (mag + 1e-3));
    REQUIRE(moved > 100 * err);
  }
  // Too small a bias, or one given to mixed-chunk attention, is rejected
  // before the whole-sequence state closes.
  const gau small{.attention = gau_attention::flash_quad,
                  .quad_bias = make_matrix<dynamic_extent, const float>(qb.data(), n - 1, n - 1)};
  auto st = small.make_state(w);
  REQUIRE_THROWS_WITH(small.forward<Arch>(st, xv, make_matrix(y.data(), n, dm)),
                      Catch::Contains("'quad_bias'") && Catch::Contains("(40, 40)"));
  const gau quad{.attention = gau_attention::flash_quad};
  quad.forward<Arch>(st, xv, make_matrix(y.data(), n, dm));  // still fresh
  const gau wrong{.quad_bias = bv};
  auto sm = wrong.make_state(w);
  REQUIRE_THROWS_WITH(wrong.forward<Arch>(sm, xv, make_matrix(y.data(), n, dm)),
                      Catch::Contains("'quad_bias'") && Catch::Contains("mixed.bias"));
}

// mixed.compute = bf16 serves both attentions (FLASH's quadratic part and
// FLASH-Quad) on this build's 16-bit engine. The precise bound is checked
// on the kernel (tests/kernels/chunk_attention.cpp) and the policy
// (tests/policies/flash.cpp); here, the layer: not the fp32 output, and
// within 8 u (u = 2^-8: q, k rounded, relu^2 doubling, P and v rounded) of
// the attention's largest effect on the oracle. No 16-bit engine in the
// build: the fp32 layer bit for bit. An engine that cannot run here: forward
// throws unsupported, the state still fresh.
TEST_CASE("gau: bf16 compute in both attentions", "[gau]") {
  test::rng_t g(test::seed_for(208, 0));
  const index_t dm = 16, e = 48, s = 16, n = 70;
  const gau_weights w = random_weights(g, dm, e, s, gau_norm::layer_norm);
  std::vector<float> x = test::random_floats(g, std::size_t(n * dm)), y(std::size_t(n * dm)), y32(y.size());
  const auto xv = make_matrix<dynamic_extent, const float>(x.data(), n, dm);
  for (const auto att : {gau_attention::mixed_chunk, gau_attention::flash_quad}) {
    CAPTURE(att == gau_attention::flash_quad);
    const gau f32{.norm = gau_norm::layer_norm, .attention = att, .mixed = {.chunk = 16}};
    gau b16 = f32;
    b16.mixed.compute = compute_precision::bf16;
    auto s32 = f32.make_state(w), s16 = b16.make_state(w);
    f32.forward(s32, xv, make_matrix(y32.data(), n, dm));
    bool refused = false;
    try {
      require_engine(compute_precision::bf16);
    } catch (const unsupported&) {
      refused = true;
    }
    if (refused) {  // the amx build on a CPU without AMX
      CHECK_THROWS_AS(b16.forward(s16, xv, make_matrix(y.data(), n, dm)), unsupported);
      CHECK(s16.position() == 0);
      continue;
    }
    b16.forward(s16, xv, make_matrix(y.data(), n, dm));
    if constexpr (!has_bf16_engine<default_arch>) {
      CHECK(y == y32);
    } else {
      const matrix_d want = reference::gau_forward(b16, w, reference::to_double(xv));
      double err = 0, mag = 0;
      for (index_t i = 0; i < n; ++i)
        for (index_t c = 0; c < dm; ++c) {
          const std::size_t k = std::size_t(i * dm + c);
          err = std::max(err, std::abs(want(i, c) - double(y[k])));
          mag = std::max(mag, std::abs(want(i, c) - double(x[k])));
        }
      INFO("error " << err << " max |Y - X| " << mag);
      CHECK(y != y32);
      CHECK(err <= 8 * 0x1p-8 * mag);
    }
  }
  gau bad{.norm = gau_norm::layer_norm};
  bad.mixed.compute = compute_precision(5);
  auto sb = gau{.norm = gau_norm::layer_norm}.make_state(w);
  CHECK_THROWS_AS(bad.forward(sb, xv, make_matrix(y.data(), n, dm)), invalid_argument);
}
