// FLASH mixed-chunk attention against the double oracle for every compiled
// backend: chunk sizes not dividing n, n < C, one chunk, causal and
// non-causal, the three normalisations, caller bias; causal n <= C is the
// quadratic part alone; streaming in any segmentation gives the bits of one
// call; GQA equals each query head run alone; snapshot/restore continues bit
// for bit, bad snapshots and foreign states are rejected; bf16 compute
// (the quadratic part on the 16-bit engine) within the bf16 bound, with the
// same streaming and NaN bit-identities. (GAU: tests/models/gau.cpp.)
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <longctx/policies/flash.hpp>
#include <longctx/reference/flash.hpp>

#include "../support/support.hpp"

using namespace longctx;
using reference::matrix_d;

namespace {

struct inputs {
  index_t n, s, e;
  std::vector<float> qq, kq, ql, kl, v;
  inputs(test::rng_t& g, index_t n_, index_t s_, index_t e_) : n(n_), s(s_), e(e_) {
    const auto rnd = [&](index_t cols) { return test::random_floats(g, std::size_t(std::max<index_t>(1, n * cols))); };
    qq = rnd(s), kq = rnd(s), ql = rnd(s), kl = rnd(s), v = rnd(e);
  }
  // (n, cols) matrices for the oracle and the chunk kernel.
  matrix_view<const float> m(const std::vector<float>& x, index_t cols) const { return make_matrix(x.data(), n, cols); }
  // Tokens [r0, r0 + len) as (1, 1, len, cols).
  tensor4_view<const float> t(const std::vector<float>& x, index_t cols, index_t r0, index_t len) const {
    return from_bhnd<dynamic_extent, const float>(x.data(), 1, 1, n, cols).tokens(r0, len);
  }
  flash_input rows(index_t r0, index_t len) const {
    return {t(qq, s, r0, len), t(kq, s, r0, len), t(v, e, r0, len), t(ql, s, r0, len), t(kl, s, r0, len)};
  }
  flash_input all() const { return rows(0, n); }
  attention_dims dims() const { return {.d = s, .d_v = e}; }
  // The literal O(n^2) oracle on these inputs.
  reference::flash_result oracle(const reference::flash_params& p) const {
    return reference::mixed_chunk_attention(reference::to_double(m(qq, s)), reference::to_double(m(kq, s)),
                                            reference::to_double(m(ql, s)), reference::to_double(m(kl, s)),
                                            reference::to_double(m(v, e)), p);
  }
};

// (1, 1, n, e) over n * e floats at p.
tensor4_view<float> out1(float* p, index_t n, index_t e) { return from_bhnd(p, 1, 1, n, e); }

const char* norm_name(flash_norm f) {
  return f == flash_norm::chunk_mean ? "chunk_mean"
         : f == flash_norm::chunk_sum ? "chunk_sum"
         : f == flash_norm::token_count ? "token_count"
                                         : "none";
}

// Quadratic part: see tests/kernels/chunk_attention.cpp. Linear part: S sums
// up to n keys (gamma_n on each element's magnitude), the retrieval an s-term
// dot product (gamma_s), the factor and the final add 2 eps.
double flash_tolerance(index_t s, index_t c, index_t n, double quad_bound, double lin_bound) {
  return (2.0 * double(s) + double(c) + 4.0) * test::eps_f32 * quad_bound +
         (double(s) + double(n) + 4.0) * test::eps_f32 * lin_bound + 1e-30;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("flash: random shapes against the literal O(n^2) oracle", "[flash]",
                        test::tested_archs) {
  using Arch = TestType;
  const int cases = test::scaled(40);
  thread_pool pool(2);
  for (int cs = 0; cs < cases; ++cs) {
    const auto seed = test::seed_for(201, std::uint64_t(cs));
    test::rng_t g(seed);
    const index_t C = std::vector<index_t>{1, 2, 7, 16, 31, 48, 64, 97}[std::size_t(test::uniform_int(g, 0, 7))];
    // n: below C, exactly C (one chunk), multiples and non-multiples of C.
    const int kind = test::uniform_int(g, 0, 3);
    const index_t n = kind == 0 ? test::uniform_int(g, 1, int(C)) : kind == 1 ? C * test::uniform_int(g, 1, 5)
                                                                              : test::uniform_int(g, 1, 400);
    const index_t s = std::vector<index_t>{1, 3, 8, 17, 32, 64}[std::size_t(test::uniform_int(g, 0, 5))];
    const index_t e = std::vector<index_t>{1, 5, 16, 33, 130, 200}[std::size_t(test::uniform_int(g, 0, 5))];
    const bool causal = test::uniform_int(g, 0, 2) > 0, with_bias = test::uniform_int(g, 0, 1) == 1;
    const flash_norm fn = std::vector<flash_norm>{flash_norm::chunk_mean, flash_norm::chunk_sum, flash_norm::none,
                                                  flash_norm::token_count}[std::size_t(test::uniform_int(g, 0, 3))];
    INFO("seed " << seed << " n " << n << " C " << C << " s " << s << " e " << e << " causal " << causal << " norm "
                 << norm_name(fn) << " bias " << with_bias);
    const inputs in(g, n, s, e);
    std::vector<float> bias = test::random_floats(g, std::size_t(C * C), -0.2f, 0.2f);
    const flash pol{.chunk = C,
                    .mode = causal ? flash_mode::causal : flash_mode::non_causal,
                    .norm = fn,
                    .bias = with_bias ? make_matrix<dynamic_extent, const float>(bias.data(), C, C)
                                      : matrix_view<const float>{}};
    std::vector<float> out(std::size_t(n * e), -7.0f);
    auto st = pol.make_state(in.dims());
    if (cs % 2)
      pol.forward<Arch>(st, in.all(), out1(out.data(), n, e), pool);
    else
      pol.forward<Arch>(st, in.all(), out1(out.data(), n, e));
    const matrix_d bd = reference::to_double(make_matrix<dynamic_extent, const float>(bias.data(), C, C));
    const reference::flash_params p{C, causal, fn, 1.0 / double(C), with_bias ? &bd : nullptr};
    const auto ref = in.oracle(p);
    double worst = 0;
    for (index_t i = 0; i < n; ++i)
      for (index_t c = 0; c < e; ++c) {
        const double tol = flash_tolerance(s, C, n, ref.quad_bound(i, c), ref.lin_bound(i, c));
        worst = std::max(worst, std::abs(double(out[std::size_t(i * e + c)]) - ref.o(i, c)) / tol);
      }
    REQUIRE(worst <= 1.0);
    CHECK(st.tokens_seen() == n);
  }
}

// FLASH's value contract (README, Safety): its parts are unnormalised sums,
// so, like a float matrix product, it is exact while every term fits float
// and overflows beyond; an overflow reaches the outputs it touches as inf or
// NaN, never as a silently wrong finite value.
TEMPLATE_LIST_TEST_CASE(
    "flash: large inputs in range are exact; past float's range no output is a silent finite",
    "[flash]", test::tested_archs) {
  using Arch = TestType;
  const index_t C = 8, n = 29, s = 8, e = 5;
  for (const bool causal : {true, false})
    for (const float big : {1e8f, 1e12f}) {  // relu(q.k / C)^2 about 1e32 (fits), 1e48 (overflows)
      CAPTURE(causal, big);
      test::rng_t g(test::seed_for(215, causal));
      inputs in(g, n, s, e);
      for (auto* x : {&in.qq, &in.kq, &in.ql, &in.kl})
        for (float& y : *x) y *= big;
      const flash pol{.chunk = C, .mode = causal ? flash_mode::causal : flash_mode::non_causal};
      std::vector<float> out(std::size_t(n * e));
      auto st = pol.make_state(in.dims());
      pol.forward<Arch>(st, in.all(), out1(out.data(), n, e));
      const reference::flash_params p{C, causal, flash_norm::chunk_mean, 1.0 / double(C), nullptr};
      const auto ref = in.oracle(p);
      int overflowed = 0;
      for (index_t i = 0; i < n; ++i)
        for (index_t c = 0; c < e; ++c) {
          const float y = out[std::size_t(i * e + c)];
          if (!std::isfinite(y)) {
            ++overflowed;
            continue;
          }
          const double tol = flash_tolerance(s, C, n, ref.quad_bound(i, c), ref.lin_bound(i, c));
          REQUIRE(std::abs(double(y) - ref.o(i, c)) <= tol);
        }
      if (big == 1e8f)
        REQUIRE(overflowed == 0);
      else
        REQUIRE(overflowed > 0);  // the case does reach the overflow
    }
}

// A non-finite V reaches the outputs that attend to it and no others: the
// causal strip GEMM reads a later token's V row for earlier rows too (their
// P is 0 there, but 0 x NaN is NaN), which made every output of the call
// NaN and the result depend on the split (fuzz finding policies-flash-nan-leak).
TEMPLATE_LIST_TEST_CASE(
    "flash: a NaN in a later token's V leaves earlier outputs as they were, bit for bit", "[flash]",
    test::tested_archs) {
  using Arch = TestType;
  for (const index_t s : {1, 8})
    for (const index_t e : {1, 5, 16})
      for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
        CAPTURE(s, e, bad);
        const index_t C = 6, n = 13;  // chunks 0, 1 whole, the third partial
        test::rng_t g(test::seed_for(216, std::uint64_t(s * 100 + e)));
        inputs in(g, n, s, e);
        const index_t t_bad = 9;  // chunk 1, row 3
        in.v[std::size_t(t_bad * e + e / 2)] = bad;
        const flash pol{.chunk = C};
        std::vector<float> whole(std::size_t(n * e)), single(whole.size());
        auto a = pol.make_state(in.dims()), b = pol.make_state(in.dims());
        pol.forward<Arch>(a, in.all(), out1(whole.data(), n, e));
        for (index_t t = 0; t < n; ++t) pol.forward<Arch>(b, in.rows(t, 1), out1(single.data() + t * e, 1, e));
        for (index_t t = 0; t < n; ++t)
          for (index_t c = 0; c < e; ++c) {
            const float w = whole[std::size_t(t * e + c)], o = single[std::size_t(t * e + c)];
            CAPTURE(t, c);
            if (t < t_bad) {  // before the NaN: finite, the same bits in both splits
              REQUIRE(std::isfinite(w));
              REQUIRE(std::memcmp(&w, &o, 4) == 0);
            } else if (c == e / 2) {  // the poisoned column reaches every later row (quadratic, then S)
              REQUIRE(!std::isfinite(w));
            }
          }
      }
}

TEMPLATE_LIST_TEST_CASE("flash: causal n <= C is the quadratic part alone (zero linear term)",
                        "[flash]", test::tested_archs) {
  using Arch = TestType;
  for (int cs = 0; cs < test::scaled(8); ++cs) {
    const auto seed = test::seed_for(202, std::uint64_t(cs));
    test::rng_t g(seed);
    const index_t C = test::uniform_int(g, 1, 300), n = test::uniform_int(g, 1, int(C));
    const index_t s = test::uniform_int(g, 1, 70), e = test::uniform_int(g, 1, 100);
    INFO("seed " << seed << " n " << n << " C " << C << " s " << s << " e " << e);
    const inputs in(g, n, s, e);
    for (flash_norm fn : {flash_norm::chunk_mean, flash_norm::chunk_sum, flash_norm::none, flash_norm::token_count}) {
      const flash pol{.chunk = C, .norm = fn};
      std::vector<float> out(std::size_t(n * e)), quad(std::size_t(n * e));
      auto st = pol.make_state(in.dims());
      pol.forward<Arch>(st, in.all(), out1(out.data(), n, e));
      chunk_attention<Arch>(in.m(in.qq, s), in.m(in.kq, s), in.m(in.v, e), make_matrix(quad.data(), n, e),
                            1.0f / float(C), chunk_mask{true, 0});
      REQUIRE(out == quad);
    }
  }
}

TEMPLATE_LIST_TEST_CASE("flash: streaming in any segmentation equals one call, bit for bit",
                        "[flash]", test::tested_archs) {
  using Arch = TestType;
  thread_pool pool(2);
  for (int cs = 0; cs < test::scaled(8); ++cs) {
    const auto seed = test::seed_for(203, std::uint64_t(cs));
    test::rng_t g(seed);
    const index_t C = std::vector<index_t>{1, 5, 16, 37, 64}[std::size_t(test::uniform_int(g, 0, 4))];
    const index_t n = test::uniform_int(g, 1, 300), s = test::uniform_int(g, 1, 40);
    const index_t e = std::vector<index_t>{3, 16, 130, 257}[std::size_t(test::uniform_int(g, 0, 3))];
    const flash_norm fn = std::vector<flash_norm>{flash_norm::chunk_mean, flash_norm::chunk_sum, flash_norm::none,
                                                  flash_norm::token_count}[std::size_t(cs % 4)];
    INFO("seed " << seed << " n " << n << " C " << C << " s " << s << " e " << e << " norm " << norm_name(fn));
    const inputs in(g, n, s, e);
    std::vector<float> bias = test::random_floats(g, std::size_t(C * C), -0.2f, 0.2f);
    const flash pol{.chunk = C, .norm = fn, .bias = make_matrix<dynamic_extent, const float>(bias.data(), C, C)};
    std::vector<float> whole(std::size_t(n * e));
    auto st = pol.make_state(in.dims());
    pol.forward<Arch>(st, in.all(), out1(whole.data(), n, e), pool);
    // Token by token (serial), then random segments (threaded).
    std::vector<float> tok(std::size_t(n * e)), seg(std::size_t(n * e));
    auto st1 = pol.make_state(in.dims());
    for (index_t t = 0; t < n; ++t) pol.forward<Arch>(st1, in.rows(t, 1), out1(tok.data() + t * e, 1, e));
    REQUIRE(tok == whole);
    auto st2 = pol.make_state(in.dims());
    for (index_t t = 0; t < n;) {
      const index_t len = std::min<index_t>(n - t, test::uniform_int(g, 0, int(2 * C + 3)));
      pol.forward<Arch>(st2, in.rows(t, len), out1(seg.data() + t * e, len, e), pool);
      t += len;
    }
    REQUIRE(seg == whole);
    CHECK(st1.chunks_folded() == n / C);
    CHECK(st1.position_in_chunk() == n % C);
    CHECK(st1.footprint() == st.footprint());  // constant state
  }
}

TEMPLATE_LIST_TEST_CASE("flash: the normalisations differ by their divisors only", "[flash]",
                        test::tested_archs) {
  using Arch = TestType;
  test::rng_t g(test::seed_for(204, 0));
  const index_t C = 16, n = 90, s = 8, e = 24;
  const inputs in(g, n, s, e);
  std::vector<float> quad(std::size_t(n * e));
  std::vector<std::vector<float>> lin;
  for (flash_norm fn : {flash_norm::chunk_mean, flash_norm::chunk_sum, flash_norm::none, flash_norm::token_count}) {
    const flash pol{.chunk = C, .norm = fn};
    std::vector<float> out(std::size_t(n * e));
    auto st = pol.make_state(in.dims());
    pol.forward<Arch>(st, in.all(), out1(out.data(), n, e));
    for (index_t c0 = 0; c0 < n; c0 += C) {
      const index_t len = std::min(C, n - c0);
      chunk_attention<Arch>(in.m(in.qq, s).rows(c0, len), in.m(in.kq, s).rows(c0, len), in.m(in.v, e).rows(c0, len),
                            make_matrix(quad.data() + c0 * e, len, e), 1.0f / float(C), chunk_mask{true, 0});
    }
    for (std::size_t i = 0; i < out.size(); ++i) out[i] -= quad[i];
    lin.push_back(out);
  }
  // Linear term of row i (chunk g): none = C * sum = C * g * mean; chunk 0 is 0 in all three.
  for (index_t i = 0; i < n; ++i)
    for (index_t c = 0; c < e; ++c) {
      const std::size_t k = std::size_t(i * e + c);
      const double gch = double(i / C), none = lin[2][k];
      const double tol = 1e-4 * (1 + std::abs(none));
      if (gch == 0) {
        REQUIRE(lin[0][k] == 0.0f);
        REQUIRE(lin[1][k] == 0.0f);
        REQUIRE(lin[2][k] == 0.0f);
      } else {
        REQUIRE(std::abs(double(lin[1][k]) * C - none) <= tol);
        REQUIRE(std::abs(double(lin[0][k]) * C * gch - none) <= tol);
      }
    }
  // Causal: only whole chunks are visible, so token_count is chunk_mean.
  REQUIRE(lin[3] == lin[0]);
}

TEMPLATE_LIST_TEST_CASE(
    "flash: non-causal token_count divides the linear part by the true n, chunk_mean by C x G",
    "[flash]", test::tested_archs) {
  using Arch = TestType;
  // Scale 0 and no bias make the quadratic part relu(0)^2 = 0: the output is
  // the linear part alone, Q_lin S / divisor with S over all n tokens.
  for (const index_t n : {index_t(90), index_t(96), index_t(7)}) {
    CAPTURE(n);
    test::rng_t g(test::seed_for(216, std::uint64_t(n)));
    const index_t C = 16, s = 8, e = 24, G = (n + C - 1) / C;
    const inputs in(g, n, s, e);
    std::vector<float> mean(std::size_t(n * e)), count(mean.size());
    for (auto [fn, out] : {std::pair{flash_norm::chunk_mean, &mean}, std::pair{flash_norm::token_count, &count}}) {
      const flash pol{.chunk = C, .mode = flash_mode::non_causal, .norm = fn, .scale = 0.0f};
      auto st = pol.make_state(in.dims());
      pol.forward<Arch>(st, in.all(), out1(out->data(), n, e));
    }
    const double ratio = double(C * G) / double(n);  // 1 when the last chunk is whole
    for (std::size_t k = 0; k < mean.size(); ++k)
      REQUIRE(std::abs(double(count[k]) - double(mean[k]) * ratio) <= 1e-5 * (1 + std::abs(double(count[k]))));
    if (n % C == 0) REQUIRE(count == mean);
  }
}

// compute_precision::bf16: the quadratic part on this build's 16-bit engine
// (tests/kernels/chunk_attention.cpp tests the kernel on every engine).
// Within the bf16 bound of the exact result (reference::chunk_attention_bf16_bounds
// per chunk, plus twice the fp32 tolerance), not the fp32 result, and the
// fp32 policy's bit-identities: any split of the stream, and a NaN in a
// later V. Where the build has no 16-bit engine it is the fp32 policy bit
// for bit; where the engine cannot run here, forward throws unsupported
// before the state changes.
TEST_CASE("flash: bf16 compute within the bf16 bound, streaming any split bit for bit", "[flash]") {
  const auto bf16_of = [](flash p) {
    p.compute = compute_precision::bf16;
    return p;
  };
  {
    test::rng_t g(test::seed_for(217, 0));
    const inputs in(g, 20, 8, 5);
    const flash pol = bf16_of(flash{.chunk = 6});
    try {
      require_engine(compute_precision::bf16);
    } catch (const unsupported&) {  // the amx build on a CPU without AMX
      auto st = pol.make_state(in.dims());
      std::vector<float> out(100, -7.0f);
      CHECK_THROWS_AS(pol.forward(st, in.all(), out1(out.data(), 20, 5)), unsupported);
      CHECK(st.tokens_seen() == 0);
      CHECK(out == std::vector<float>(100, -7.0f));
      return;
    }
  }
  constexpr double u = 0x1p-8;  // bf16's unit roundoff
  thread_pool pool(2);
  for (int cs = 0; cs < test::scaled(12); ++cs) {
    const auto seed = test::seed_for(218, std::uint64_t(cs));
    test::rng_t g(seed);
    const index_t C = std::vector<index_t>{1, 7, 31, 64, 300}[std::size_t(test::uniform_int(g, 0, 4))];
    const index_t n = test::uniform_int(g, 1, 400), s = std::vector<index_t>{3, 17, 64}[std::size_t(cs % 3)];
    const index_t e = std::vector<index_t>{5, 33, 130}[std::size_t(test::uniform_int(g, 0, 2))];
    const bool causal = cs % 4 != 3, with_bias = cs % 2 == 0;
    INFO("seed " << seed << " n " << n << " C " << C << " s " << s << " e " << e << " causal " << causal << " bias "
                 << with_bias);
    inputs in(g, n, s, e);
    std::vector<float> bias = test::random_floats(g, std::size_t(C * C), -0.2f, 0.2f);
    const flash f32pol{.chunk = C,
                       .mode = causal ? flash_mode::causal : flash_mode::non_causal,
                       .bias = with_bias ? make_matrix<dynamic_extent, const float>(bias.data(), C, C)
                                         : matrix_view<const float>{}};
    const flash pol = bf16_of(f32pol);
    std::vector<float> out(std::size_t(n * e)), out32(out.size());
    auto st = pol.make_state(in.dims()), st32 = f32pol.make_state(in.dims());
    pol.forward(st, in.all(), out1(out.data(), n, e), pool);
    f32pol.forward(st32, in.all(), out1(out32.data(), n, e));
    if constexpr (!has_bf16_engine<default_arch>) {
      REQUIRE(out == out32);  // no 16-bit engine in this build: fp32
      continue;
    }
    if (n > 2 * C || C > 7) CHECK(out != out32);  // rounded to bf16 (small chunks may round to the same bits)
    const matrix_d bd = reference::to_double(make_matrix<dynamic_extent, const float>(bias.data(), C, C));
    const reference::flash_params p{C, causal, pol.norm, 1.0 / double(C), with_bias ? &bd : nullptr};
    const auto ref = in.oracle(p);
    const matrix_d qq = reference::to_double(in.m(in.qq, s)), kq = reference::to_double(in.m(in.kq, s)),
                   vd = reference::to_double(in.m(in.v, e));
    double worst = 0;
    for (index_t c0 = 0; c0 < n; c0 += C) {  // the quadratic part's bound, chunk by chunk
      const index_t len = std::min(C, n - c0);
      const matrix_d bc = bd.topLeftCorner(len, len);
      const auto b16 = reference::chunk_attention_bf16_bounds(qq.middleRows(c0, len), kq.middleRows(c0, len),
                                                              vd.middleRows(c0, len), 1.0 / double(C),
                                                              chunk_mask{causal, 0}, with_bias ? &bc : nullptr, u);
      for (index_t i = c0; i < c0 + len; ++i)
        for (index_t c = 0; c < e; ++c) {
          const double tol = b16.operands(i - c0, c) + 2 * flash_tolerance(s, C, n, ref.quad_bound(i, c),
                                                                           ref.lin_bound(i, c)) + double(C) * 0x1p-126;
          worst = std::max(worst, std::abs(double(out[std::size_t(i * e + c)]) - ref.o(i, c)) / tol);
        }
    }
    REQUIRE(worst <= 1.0);
    if (!causal) continue;
    // Token by token and in random segments: the bits of one call; then a
    // NaN in a later V leaves the earlier outputs' bits alone.
    std::vector<float> tok(out.size()), seg(out.size());
    auto st1 = pol.make_state(in.dims()), st2 = pol.make_state(in.dims());
    for (index_t t = 0; t < n; ++t) pol.forward(st1, in.rows(t, 1), out1(tok.data() + t * e, 1, e));
    REQUIRE(tok == out);
    for (index_t t = 0; t < n;) {
      const index_t len = std::min<index_t>(n - t, test::uniform_int(g, 0, int(2 * C + 3)));
      pol.forward(st2, in.rows(t, len), out1(seg.data() + t * e, len, e), pool);
      t += len;
    }
    REQUIRE(seg == out);
    const index_t t_bad = test::uniform_int(g, 0, int(n) - 1);
    in.v[std::size_t(t_bad * e)] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> nan_whole(out.size()), nan_seg(out.size());
    auto st3 = pol.make_state(in.dims()), st4 = pol.make_state(in.dims());
    pol.forward(st3, in.all(), out1(nan_whole.data(), n, e), pool);
    for (index_t t = 0; t < n;) {
      const index_t len = std::min<index_t>(n - t, test::uniform_int(g, 1, int(C + 2)));
      pol.forward(st4, in.rows(t, len), out1(nan_seg.data() + t * e, len, e));
      t += len;
    }
    for (index_t i = 0; i < t_bad * e; ++i) {
      REQUIRE(std::memcmp(&nan_whole[std::size_t(i)], &out[std::size_t(i)], 4) == 0);
      REQUIRE(std::memcmp(&nan_seg[std::size_t(i)], &out[std::size_t(i)], 4) == 0);
    }
  }
  flash bad{.chunk = 4};
  bad.compute = compute_precision(9);
  CHECK_THROWS_AS(bad.make_state({.d = 4}), invalid_argument);
}

TEST_CASE("flash: argument checks", "[flash]") {
  test::rng_t g(3);
  const inputs in(g, 10, 4, 6);
  std::vector<float> out(60);
  const flash pol{.chunk = 4};
  auto st = pol.make_state(in.dims());
  CHECK_THROWS_AS(pol.forward(st, in.all(), out1(out.data(), 9, 6)), invalid_argument);
  auto bad = in.all();
  bad.k_lin = bad.k_lin.tokens(0, 9);
  CHECK_THROWS_AS(pol.forward(st, bad, out1(out.data(), 10, 6)), invalid_argument);
  bad = in.all();
  bad.q_lin = from_bhnd<dynamic_extent, const float>(in.ql.data(), 1, 1, 10, 3);  // s is 4
  CHECK_THROWS_WITH(pol.forward(st, bad, out1(out.data(), 10, 6)), Catch::Contains("'q_lin'"));
  CHECK_THROWS_AS((flash{.chunk = 0}.make_state({.d = 4, .d_v = 6})), invalid_argument);
  CHECK_THROWS_AS((pol.make_state({.h = 3, .h_kv = 2, .d = 4})), invalid_argument);
  CHECK_THROWS_AS((flash{.chunk = 8}.forward(st, in.all(), out1(out.data(), 10, 6))), invalid_argument);
  CHECK(st.tokens_seen() == 0);  // every rejected call left the state alone
  const flash nc{.chunk = 4, .mode = flash_mode::non_causal};
  auto st2 = nc.make_state(in.dims());
  nc.forward(st2, in.all(), out1(out.data(), 10, 6));
  CHECK_THROWS_AS(nc.forward(st2, in.all(), out1(out.data(), 10, 6)), invalid_argument);
  std::vector<float> b(9);
  CHECK_THROWS_AS((flash{.chunk = 4, .bias = make_matrix<dynamic_extent, const float>(b.data(), 3, 3)}.make_state(
                      in.dims())),
                  invalid_argument);
  flash::state_type none;
  CHECK_THROWS_WITH(pol.forward(none, in.all(), out1(out.data(), 10, 6)), Catch::Contains("not made by make_state"));
}

// ---- Protocol: GQA, snapshots, foreign states. -------------------------------

namespace {

static_assert(sequence_policy<flash>);

// Multi-head inputs: q, q_lin laid out (b, n, h, s) (what a fused projection
// writes), k, k_lin (b, h_kv, n, s) and v (b, h_kv, n, e) contiguous.
struct gqa_inputs {
  index_t b, h, hk, n, s, e;
  std::vector<float> q, k, v, ql, kl;
  gqa_inputs(test::rng_t& g, index_t b_, index_t h_, index_t hk_, index_t n_, index_t s_, index_t e_)
      : b(b_), h(h_), hk(hk_), n(n_), s(s_), e(e_) {
    const auto rnd = [&](index_t heads, index_t cols) {
      return test::random_floats(g, std::size_t(std::max<index_t>(1, b * heads * n * cols)));
    };
    q = rnd(h, s), k = rnd(hk, s), v = rnd(hk, e), ql = rnd(h, s), kl = rnd(hk, s);
  }
  tensor4_view<const float> tq(const std::vector<float>& x) const {
    return from_bnhd<dynamic_extent, const float>(x.data(), b, n, h, s);
  }
  tensor4_view<const float> tk(const std::vector<float>& x, index_t cols) const {
    return from_bhnd<dynamic_extent, const float>(x.data(), b, hk, n, cols);
  }
  flash_input rows(index_t r0, index_t len) const {
    return {tq(q).tokens(r0, len), tk(k, s).tokens(r0, len), tk(v, e).tokens(r0, len), tq(ql).tokens(r0, len),
            tk(kl, s).tokens(r0, len)};
  }
  flash_input all() const { return rows(0, n); }
  attention_dims dims() const { return {b, h, hk, s, e}; }
};

// out (b, n, h, e) memory, viewed (b, h, n, e).
struct gqa_out {
  index_t b, h, n, e;
  std::vector<float> data;
  gqa_out(index_t b_, index_t h_, index_t n_, index_t e_)
      : b(b_), h(h_), n(n_), e(e_), data(std::size_t(std::max<index_t>(1, b_ * h_ * n_ * e_)), -7.0f) {}
  tensor4_view<float> view() { return from_bnhd(data.data(), b, n, h, e); }
  tensor4_view<float> rows(index_t r0, index_t len) { return view().tokens(r0, len); }
};

// Head (bi, hi) of a (b, heads, n, cols) view as a contiguous (n, cols) copy.
template <class T>
std::vector<float> head_copy(const tensor4_view<T>& t, index_t bi, index_t hi) {
  std::vector<float> r(std::size_t(std::max<index_t>(1, t.extent(2) * t.extent(3))));
  for (index_t i = 0; i < t.extent(2); ++i)
    for (index_t c = 0; c < t.extent(3); ++c) r[std::size_t(i * t.extent(3) + c)] = t(bi, hi, i, c);
  return r;
}

flash random_flash(test::rng_t& g, index_t C, bool causal, std::vector<float>& bias) {
  bias = test::random_floats(g, std::size_t(C * C), -0.2f, 0.2f);
  const flash_norm fn = std::vector<flash_norm>{flash_norm::chunk_mean, flash_norm::chunk_sum, flash_norm::none,
                                                flash_norm::token_count}[std::size_t(test::uniform_int(g, 0, 3))];
  return flash{.chunk = C,
               .mode = causal ? flash_mode::causal : flash_mode::non_causal,
               .norm = fn,
               .bias = test::uniform_int(g, 0, 1) ? make_matrix<dynamic_extent, const float>(bias.data(), C, C)
                                                  : matrix_view<const float>{}};
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("flash: GQA equals each query head run alone, bit for bit", "[flash]",
                        test::tested_archs) {
  using Arch = TestType;
  thread_pool pool(2);
  for (int cs = 0; cs < test::scaled(10); ++cs) {
    const auto seed = test::seed_for(207, std::uint64_t(cs));
    test::rng_t g(seed);
    // The brief's shape (b 2, h 4, h_kv 2), then MHA and MQA.
    const index_t b = cs % 3 == 2 ? 1 : 2, h = 4, hk = std::vector<index_t>{2, 4, 1}[std::size_t(cs % 3)];
    const index_t C = std::vector<index_t>{1, 7, 16, 48}[std::size_t(test::uniform_int(g, 0, 3))];
    const index_t n = test::uniform_int(g, 1, 160), s = test::uniform_int(g, 1, 33);
    const index_t e = std::vector<index_t>{3, 16, 130}[std::size_t(test::uniform_int(g, 0, 2))];
    const bool causal = cs % 4 != 3;
    std::vector<float> bias;
    const flash pol = random_flash(g, C, causal, bias);
    INFO("seed " << seed << " b " << b << " h " << h << " h_kv " << hk << " n " << n << " C " << C << " s " << s
                 << " e " << e << " causal " << causal << " bias " << (pol.bias.data() != nullptr));
    const gqa_inputs in(g, b, h, hk, n, s, e);
    gqa_out out(b, h, n, e);
    auto st = pol.make_state(in.dims());
    pol.forward<Arch>(st, in.all(), out.view(), pool);
    const matrix_d bd = reference::to_double(make_matrix<dynamic_extent, const float>(bias.data(), C, C));
    const reference::flash_params p{C, causal, pol.norm, 1.0 / double(C), pol.bias.data() ? &bd : nullptr};
    const flash_input all = in.all();
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t hi = 0; hi < h; ++hi) {
        const index_t kv = hi / (h / hk);
        const auto q1 = head_copy(all.q, bi, hi), ql1 = head_copy(all.q_lin, bi, hi);
        const auto k1 = head_copy(all.k, bi, kv), kl1 = head_copy(all.k_lin, bi, kv), v1 = head_copy(all.v, bi, kv);
        const auto t1 = [&](const std::vector<float>& x, index_t cols) {
          return from_bhnd<dynamic_extent, const float>(x.data(), 1, 1, n, cols);
        };
        std::vector<float> o1(std::size_t(n * e));
        auto st1 = pol.make_state({.d = s, .d_v = e});
        pol.forward<Arch>(st1, {t1(q1, s), t1(k1, s), t1(v1, e), t1(ql1, s), t1(kl1, s)}, out1(o1.data(), n, e));
        const auto mine = head_copy(tensor4_view<const float>(out.view()), bi, hi);
        INFO("head (" << bi << ", " << hi << ")");
        REQUIRE(std::equal(o1.begin(), o1.end(), mine.begin()));
        // And the single head against the oracle (the bits above make this
        // the same check for every head; once per case keeps it cheap).
        if (bi == b - 1 && hi == h - 1) {
          const auto md = [&](const std::vector<float>& x, index_t cols) {
            return reference::to_double(make_matrix<dynamic_extent, const float>(x.data(), n, cols));
          };
          const auto ref = reference::mixed_chunk_attention(md(q1, s), md(k1, s), md(ql1, s), md(kl1, s), md(v1, e), p);
          for (index_t i = 0; i < n; ++i)
            for (index_t c = 0; c < e; ++c)
              REQUIRE(std::abs(double(o1[std::size_t(i * e + c)]) - ref.o(i, c)) <=
                      flash_tolerance(s, C, n, ref.quad_bound(i, c), ref.lin_bound(i, c)));
        }
      }
    if (causal) {  // multi-head streaming in random segments: the same bits
      gqa_out seg(b, h, n, e);
      auto st2 = pol.make_state(in.dims());
      for (index_t t = 0; t < n;) {
        const index_t len = std::min<index_t>(n - t, test::uniform_int(g, 0, int(2 * C + 3)));
        pol.forward<Arch>(st2, in.rows(t, len), seg.rows(t, len), pool);
        t += len;
      }
      REQUIRE(seg.data == out.data);
      CHECK(st2.footprint() == st.footprint());
    }
  }
}

TEST_CASE("flash: flash_input{q, k, v} reads q, k as the linear part's inputs", "[flash]") {
  test::rng_t g(test::seed_for(208, 0));
  const gqa_inputs in(g, 2, 4, 2, 50, 8, 16);
  const flash pol{.chunk = 16};
  const flash_input full = in.all();
  gqa_out a(2, 4, 50, 16), b(2, 4, 50, 16);
  auto sa = pol.make_state(in.dims()), sb = pol.make_state(in.dims());
  pol.forward(sa, flash_input{full.q, full.k, full.v}, a.view());
  pol.forward(sb, flash_input{full.q, full.k, full.v, full.q, full.k}, b.view());
  REQUIRE(a.data == b.data);
  REQUIRE(sa.snapshot() == sb.snapshot());
}

TEMPLATE_LIST_TEST_CASE("flash: snapshot and restore continue bit for bit (causal)", "[flash]",
                        test::tested_archs) {
  using Arch = TestType;
  thread_pool pool(2);
  for (int cs = 0; cs < test::scaled(8); ++cs) {
    const auto seed = test::seed_for(209, std::uint64_t(cs));
    test::rng_t g(seed);
    const index_t C = std::vector<index_t>{1, 5, 16, 37}[std::size_t(test::uniform_int(g, 0, 3))];
    const index_t n = test::uniform_int(g, 2, 240), s = test::uniform_int(g, 1, 20);
    const index_t e = std::vector<index_t>{3, 16, 130}[std::size_t(test::uniform_int(g, 0, 2))];
    const index_t cut = test::uniform_int(g, 1, int(n) - 1);
    std::vector<float> bias;
    const flash pol = random_flash(g, C, true, bias);
    INFO("seed " << seed << " n " << n << " cut " << cut << " C " << C << " s " << s << " e " << e);
    const gqa_inputs in(g, 2, 4, 2, n, s, e);
    gqa_out whole(2, 4, n, e);
    auto st = pol.make_state(in.dims());
    pol.forward<Arch>(st, in.all(), whole.view(), pool);

    // Tokens [0, cut) in two calls, snapshot, restore into a fresh state, the rest.
    gqa_out part(2, 4, n, e), resumed(2, 4, n, e);
    auto a = pol.make_state(in.dims());
    const index_t mid = cut / 2;
    pol.forward<Arch>(a, in.rows(0, mid), part.rows(0, mid));
    pol.forward<Arch>(a, in.rows(mid, cut - mid), part.rows(mid, cut - mid), pool);
    const snapshot_bytes snap = a.snapshot();
    auto b = pol.make_state(in.dims());
    b.restore(snap);
    CHECK(b.tokens_seen() == cut);
    CHECK(b.snapshot() == snap);
    pol.forward<Arch>(b, in.rows(cut, n - cut), resumed.rows(cut, n - cut), pool);
    // The uninterrupted state goes on token by token; then a rewinds to the snapshot.
    for (index_t t = cut; t < n; ++t) pol.forward<Arch>(a, in.rows(t, 1), part.rows(t, 1));
    REQUIRE(part.data == whole.data);
    for (index_t bi = 0; bi < 2; ++bi)
      for (index_t hi = 0; hi < 4; ++hi)
        for (index_t t = cut; t < n; ++t)
          for (index_t c = 0; c < e; ++c) REQUIRE(resumed.view()(bi, hi, t, c) == whole.view()(bi, hi, t, c));
    CHECK(a.snapshot() == b.snapshot());
    a.restore(snap);
    gqa_out again(2, 4, n, e);
    pol.forward<Arch>(a, in.rows(cut, n - cut), again.rows(cut, n - cut));
    REQUIRE(again.data == resumed.data);
    CHECK(a.footprint() == st.footprint());
  }
}

TEST_CASE("flash: corrupt or inconsistent snapshots are rejected and leave the state unchanged", "[flash]") {
  test::rng_t g(test::seed_for(210, 0));
  const index_t C = 8, n = 30, s = 4, e = 6;
  const gqa_inputs in(g, 2, 4, 2, n, s, e);
  const flash pol{.chunk = C};
  gqa_out ref(2, 4, n, e), got(2, 4, n, e);
  auto st = pol.make_state(in.dims());
  pol.forward(st, in.all(), ref.view());
  auto a = pol.make_state(in.dims());
  pol.forward(a, in.rows(0, 13), got.rows(0, 13));  // position 5 in chunk 1
  const snapshot_bytes before = a.snapshot();
  // Payload offsets: header 48 bytes, then chunks folded (8), position (8),
  // the consumed flag (1), S.
  constexpr std::size_t header = 48, at_pos = header + 8, at_flag = header + 16, at_s = header + 17;
  const auto resealed = [](snapshot_bytes b) {  // a valid checksum over edited bytes
    const std::uint32_t crc = detail::crc32c(std::span<const std::byte>(b).first(b.size() - 4));
    std::memcpy(b.data() + b.size() - 4, &crc, 4);
    return b;
  };
  const auto rejects = [&](const snapshot_bytes& bad, const char* why) {
    INFO(why);
    CHECK_THROWS_WITH(a.restore(bad), Catch::Contains(why));
    CHECK(a.snapshot() == before);
  };
  snapshot_bytes bad = before;
  bad[at_s + 1] ^= std::byte{0x40};
  rejects(bad, "checksum");
  rejects(snapshot_bytes(before.begin(), before.begin() + 40), "truncated");
  bad = before;
  bad.insert(bad.end() - 4, std::byte{0});
  rejects(bad, "payload size");
  bad = before;
  bad[0] = std::byte{'X'};
  rejects(bad, "magic");
  bad = before;
  const std::int64_t pos = C;
  std::memcpy(bad.data() + at_pos, &pos, 8);
  rejects(resealed(bad), "position in chunk");
  bad = before;
  bad[at_flag] = std::byte{2};
  rejects(resealed(bad), "consumed");
  bad = before;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(bad.data() + at_s + 4 * 5, &nan, 4);
  rejects(resealed(bad), "non-finite");
  {  // a well-formed envelope of another kind
    snapshot_writer w("tova", pol.fingerprint(a.dims()));
    w.put(std::int64_t(0));
    rejects(std::move(w).finish(), "kind");
  }
  {  // the right header with a payload of another length
    snapshot_writer w("flash", pol.fingerprint(a.dims()));
    w.put(std::int64_t(1)), w.put(std::int64_t(0)), w.put(std::uint8_t(0));
    rejects(std::move(w).finish(), "'S'");
  }
  // The state still continues exactly where it was.
  pol.forward(a, in.rows(13, n - 13), got.rows(13, n - 13));
  REQUIRE(got.data == ref.data);
}

TEST_CASE("flash: a state of another configuration is rejected", "[flash]") {
  test::rng_t g(test::seed_for(211, 0));
  const index_t C = 16, n = 40, s = 8, e = 12;
  const gqa_inputs in(g, 2, 4, 2, n, s, e);
  std::vector<float> bias(std::size_t(C * C), 0.01f), bias2(std::size_t(C * C), -0.01f);
  const auto bv = [&](std::vector<float>& x) { return make_matrix<dynamic_extent, const float>(x.data(), C, C); };
  const flash pol{.chunk = C};
  gqa_out out(2, 4, n, e);
  auto mine = pol.make_state(in.dims());
  pol.forward(mine, in.rows(0, 20), out.rows(0, 20));
  const snapshot_bytes snap = mine.snapshot();
  for (const flash& other : {flash{.chunk = 8}, flash{.chunk = C, .mode = flash_mode::non_causal},
                             flash{.chunk = C, .norm = flash_norm::chunk_sum}, flash{.chunk = C, .scale = 0.5f},
                             flash{.chunk = C, .bias = bv(bias)}}) {
    INFO("other chunk " << other.chunk << " mode " << int(other.mode) << " norm " << int(other.norm) << " scale "
                        << other.scale.value_or(-1) << " bias " << (other.bias.data() != nullptr));
    auto st = other.make_state(in.dims());
    CHECK_THROWS_WITH(pol.forward(st, in.rows(0, 5), out.rows(0, 5)), Catch::Contains("argument 'state'"));
    CHECK_THROWS_WITH(other.forward(mine, in.rows(20, 5), out.rows(20, 5)), Catch::Contains("argument 'state'"));
    CHECK_THROWS_WITH(st.restore(snap), Catch::Contains("configuration"));
    CHECK(st.tokens_seen() == 0);
  }
  CHECK(mine.tokens_seen() == 20);
  // Other dims: the same policy's snapshot does not restore.
  for (attention_dims d :
       {attention_dims{2, 4, 4, s, e}, attention_dims{1, 4, 2, s, e}, attention_dims{2, 4, 2, s, 0}}) {
    auto st = pol.make_state(d);
    CHECK_THROWS_WITH(st.restore(snap), Catch::Contains("configuration"));
  }
  // Bias values are read live, not recorded: a bias of the same shape is the
  // same configuration.
  const flash with_bias{.chunk = C, .bias = bv(bias)}, other_values{.chunk = C, .bias = bv(bias2)};
  auto st = with_bias.make_state(in.dims());
  CHECK_NOTHROW(other_values.forward(st, in.rows(0, 5), out.rows(0, 5)));
}
