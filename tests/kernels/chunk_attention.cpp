// Quadratic chunk attention (relu^2, no softmax) and RoPE against double
// oracles for every compiled backend: odd chunk lengths, head dims 1..128,
// causal with query offsets, caller bias, accumulate; row-alone == block bits.
// The 16-bit kernel (compute_precision::bf16) on every engine the build can
// run: within the documented bf16 bound (reference::chunk_attention_bf16_bounds,
// u = 2^-8, bf16's unit roundoff) of the exact result, within u times P's
// magnitude of the oracle on bf16-rounded operands, the same row-alone bits
// (with a NaN in a later value row too); on f32_engine it is the fp32 kernel
// bit for bit.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include <longctx/kernels/chunk_attention.hpp>
#include <longctx/kernels/rope.hpp>
#include <longctx/reference/flash.hpp>

#include "../support/engines.hpp"
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

// One random case of the sweeps: c_k keys (up to max_keys), causal with a
// query offset (a streaming caller passes a suffix of the chunk's rows) or
// c_q free rows (up to 300), head dims 1..128, bias, accumulate, scale,
// padded rows.
struct sweep_case {
  index_t c_k;
  bool causal;
  index_t q_offset, c_q, d, d_v;
  bool with_bias, accumulate;
  float scale;
  index_t pad;
  sweep_case(test::rng_t& g, const std::vector<int>& lens, int max_keys) {
    static const std::vector<int> dims{1, 2, 7, 8, 16, 17, 59, 64, 111, 128};
    c_k = test::random_size(g, lens, max_keys);
    causal = test::uniform_int(g, 0, 2) > 0;
    q_offset = causal ? test::uniform_int(g, 0, int(c_k) - 1) : 0;
    c_q = causal ? c_k - q_offset : test::random_size(g, lens, 300);
    d = dims[std::size_t(test::uniform_int(g, 0, int(dims.size()) - 1))];
    d_v = dims[std::size_t(test::uniform_int(g, 0, int(dims.size()) - 1))];
    with_bias = test::uniform_int(g, 0, 1) == 1;
    accumulate = test::uniform_int(g, 0, 3) == 0;
    scale = std::vector<float>{1.0f / float(c_k), 0.5f, 3.0f}[std::size_t(test::uniform_int(g, 0, 2))];
    pad = test::uniform_int(g, 0, 1) * 5;
  }
  friend std::ostream& operator<<(std::ostream& os, const sweep_case& c) {
    return os << " c_q " << c.c_q << " c_k " << c.c_k << " d " << c.d << " d_v " << c.d_v << " causal " << c.causal
              << " q_offset " << c.q_offset << " bias " << c.with_bias << " acc " << c.accumulate << " scale "
              << c.scale << " pad " << c.pad;
  }
};

}  // namespace

TEMPLATE_LIST_TEST_CASE("chunk_attention: random shapes against the double oracle",
                        "[chunk_attention]", test::tested_archs) {
  using Arch = TestType;
  static const std::vector<int> lens = test::odd_sizes({48, 96, 8, 16}, 300);
  const int cases = test::scaled(60);
  for (int cs = 0; cs < cases; ++cs) {
    const auto seed = test::seed_for(101, std::uint64_t(cs));
    test::rng_t g(seed);
    const sweep_case sc(g, lens, 300);
    const auto [c_k, causal, q_offset, c_q, d, d_v, with_bias, accumulate, scale, pad] = sc;
    INFO("seed " << seed << sc);
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

TEMPLATE_LIST_TEST_CASE("chunk_attention: a row alone has the bits of the row in the block",
                        "[chunk_attention]", test::tested_archs) {
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

// ---- compute_precision::bf16: the 16-bit kernel ---------------------------

namespace {

using test::u_bf16;

matrix_d rounded_bf16(const matrix_d& m) {
  matrix_d r = m;
  for (index_t i = 0; i < r.size(); ++i) r.data()[i] = bf16::from_float(float(r.data()[i])).to_float();
  return r;
}

// Engine E's kernel on one chunk (what packed_chunk does for its engine).
template <class E>
void run_engine(const mat& q, const mat& k, const mat& v, mat& o, float scale, chunk_mask mask,
                matrix_view<const float> bias, bool accumulate) {
  std::vector<float> pack(std::size_t(chunk_pack_scratch_with<E>(k.rows, k.cols, v.cols)) + 16);
  std::vector<float> rows(std::size_t(chunk_rows_scratch_with<E>(k.cols, v.cols)));
  const auto ops = prepare_chunk_with<E>(k.cview(), v.cview(), pack.data());
  if (accumulate)
    chunk_attention_rows_with<E, true>(q.cview(), ops, o.view(), scale, bias, mask, rows.data());
  else
    chunk_attention_rows_with<E, false>(q.cview(), ops, o.view(), scale, bias, mask, rows.data());
}

// The fp32 sweep's shapes on engine E, against the exact result on the
// caller's operands (the documented bound) and against the oracle on the
// operands rounded to bf16 (only P's rounding left), each plus twice the
// fp32 tolerance; padding columns of o untouched.
template <class E>
void engine_sweep(std::uint64_t id, int cases) {
  static const std::vector<int> lens = test::odd_sizes({48, 96, 8, 16, 256}, 600);
  for (int cs = 0; cs < cases; ++cs) {
    const auto seed = test::seed_for(id, std::uint64_t(cs));
    test::rng_t g(seed);
    const sweep_case sc(g, lens, 600);
    const auto [c_k, causal, q_offset, c_q, d, d_v, with_bias, accumulate, scale, pad] = sc;
    INFO("engine " << E::name << " seed " << seed << sc);
    mat q(g, c_q, d, pad), k(g, c_k, d, pad), v(g, c_k, d_v, pad), o(g, c_q, d_v, pad), b(g, c_q, c_k, pad, -0.3f, 0.3f);
    const matrix_d o0 = reference::to_double(o.cview());
    const std::vector<float> o_before = o.data;
    const matrix_d bd = reference::to_double(b.cview()), *bp = with_bias ? &bd : nullptr;
    run_engine<E>(q, k, v, o, scale, chunk_mask{causal, q_offset}, with_bias ? b.cview() : matrix_view<const float>{},
                  accumulate);
    const matrix_d qd = reference::to_double(q.cview()), kd = reference::to_double(k.cview()),
                   vd = reference::to_double(v.cview());
    const chunk_mask m{causal, q_offset};
    const auto ref = reference::chunk_attention(qd, kd, vd, double(scale), m, bp);
    const auto bounds = reference::chunk_attention_bf16_bounds(qd, kd, vd, double(scale), m, bp, u_bf16);
    const matrix_d qr = rounded_bf16(qd), kr = rounded_bf16(kd), vr = rounded_bf16(vd);
    const auto ref16 = reference::chunk_attention(qr, kr, vr, double(scale), m, bp);
    const auto bounds16 = reference::chunk_attention_bf16_bounds(qr, kr, vr, double(scale), m, bp, u_bf16);
    double worst = 0, worst_tight = 0;
    for (index_t i = 0; i < c_q; ++i)
      for (index_t c = 0; c < d_v; ++c) {
        const double got = double(o.view()(i, c)) - (accumulate ? o0(i, c) : 0.0);
        const double acc = accumulate ? std::abs(o0(i, c)) : 0.0;
        // P below 2^-126 may flush to zero (the engines' conversions and dot products).
        const double flush = double(c_k) * 0x1p-126;
        const double loose = bounds.operands(i, c) + 2 * chunk_tolerance(d, c_k, ref.bound(i, c) + acc) + flush;
        const double tight = u_bf16 * bounds16.rounding(i, c) + 2 * chunk_tolerance(d, c_k, ref16.bound(i, c) + acc) + flush;
        worst = std::max(worst, std::abs(got - ref.o(i, c)) / loose);
        worst_tight = std::max(worst_tight, std::abs(got - ref16.o(i, c)) / tight);
      }
    REQUIRE(worst <= 1.0);
    REQUIRE(worst_tight <= 1.0);
    for (index_t i = 0; i < c_q; ++i)
      for (index_t c = d_v; c < o.ld; ++c)
        REQUIRE(o.data[std::size_t(i * o.ld + c)] == o_before[std::size_t(i * o.ld + c)]);
  }
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// Causal rows in one call against each row alone over its own keys (a
// streaming caller's call of one row): the same bits, across key tiles and
// strips; with a NaN or inf in the last value row, every earlier row too.
template <class E>
void engine_rows_alone(std::uint64_t id, int cases) {
  for (int cs = 0; cs < cases; ++cs) {
    const auto seed = test::seed_for(id, std::uint64_t(cs));
    test::rng_t g(seed);
    const index_t c = cs == 0 ? E::block_kv + 37 : test::uniform_int(g, 1, 130);
    const index_t d = test::uniform_int(g, 1, 70), d_v = test::uniform_int(g, 1, 70);
    const bool with_bias = cs % 2 == 0;
    INFO("engine " << E::name << " seed " << seed << " c " << c << " d " << d << " d_v " << d_v);
    mat q(g, c, d), k(g, c, d), v(g, c, d_v), o(g, c, d_v), o1(g, 1, d_v), b(g, c, c);
    if (cs % 3 == 1) v.data[std::size_t((c - 1) * v.ld)] = cs % 2 ? INFINITY : NAN;
    const matrix_view<const float> bias = with_bias ? b.cview() : matrix_view<const float>{};
    run_engine<E>(q, k, v, o, 0.7f, chunk_mask{true, 0}, bias, false);
    for (index_t i = 0; i < c; ++i) {
      mat qi = q, ki = k, vi = v;
      qi.rows = 1, qi.data.assign(q.data.begin() + i * q.ld, q.data.begin() + (i + 1) * q.ld);
      ki.rows = i + 1, vi.rows = i + 1;
      const matrix_view<const float> bi =
          with_bias ? matrix_view<const float>(bias.data() + i * bias.stride(0),
                                               matrix_view<const float>::extents_type(1, i + 1), {bias.stride(0), 1})
                    : matrix_view<const float>{};
      run_engine<E>(qi, ki, vi, o1, 0.7f, chunk_mask{true, i}, bi, false);
      for (index_t cc = 0; cc < d_v; ++cc) {
        INFO("row " << i << " col " << cc << " alone " << o1.view()(0, cc) << " block " << o.view()(i, cc));
        REQUIRE(same_bits(o1.view()(0, cc), o.view()(i, cc)));
      }
      if (i + 1 < c) REQUIRE(row_finite<typename E::arch>(o.view().data() + i * o.ld, d_v));
    }
  }
}

template <class E>
void engine_checks(std::uint64_t id, int cases) {
  engine_sweep<E>(id, cases);
  engine_rows_alone<E>(id + 1, test::scaled(6));
}

}  // namespace

TEMPLATE_LIST_TEST_CASE(
    "chunk_attention: the 16-bit kernel on f32_engine is the fp32 kernel bit for bit",
    "[chunk_attention]", test::tested_archs) {
  using Arch = TestType;
  static const std::vector<int> lens = test::odd_sizes({48, 96, 8, 16, 128}, 400);
  for (int cs = 0; cs < test::scaled(30); ++cs) {
    const auto seed = test::seed_for(104, std::uint64_t(cs));
    test::rng_t g(seed);
    const index_t c_k = test::random_size(g, lens, 400);
    const bool causal = cs % 3 > 0, with_bias = cs % 2 == 0, accumulate = cs % 4 == 0;
    const index_t q_offset = causal ? test::uniform_int(g, 0, int(c_k) - 1) : 0;
    const index_t c_q = causal ? c_k - q_offset : test::random_size(g, lens, 200);
    const index_t d = test::uniform_int(g, 1, 70), d_v = test::uniform_int(g, 1, 70), pad = (cs % 5) * 3;
    INFO("seed " << seed << " c_q " << c_q << " c_k " << c_k << " d " << d << " d_v " << d_v << " causal " << causal);
    mat q(g, c_q, d, pad), k(g, c_k, d, pad), v(g, c_k, d_v, pad), o(g, c_q, d_v, pad), b(g, c_q, c_k, pad);
    if (cs % 7 == 3) v.data[std::size_t((c_k - 1) * v.ld)] = NAN;  // the non-finite fix-up path
    mat o2 = o;
    const matrix_view<const float> bias = with_bias ? b.cview() : matrix_view<const float>{};
    chunk_attention<Arch>(q.cview(), k.cview(), v.cview(), o.view(), 0.3f, chunk_mask{causal, q_offset}, bias,
                          accumulate);
    run_engine<f32_engine<Arch>>(q, k, v, o2, 0.3f, chunk_mask{causal, q_offset}, bias, accumulate);
    REQUIRE(std::memcmp(o.data.data(), o2.data.data(), sizeof(float) * o.data.size()) == 0);
  }
}

TEMPLATE_LIST_TEST_CASE("chunk_attention: the 16-bit kernel on the emulated AMX engine", "[chunk_attention]",
                        test::emulated_amx) {
  engine_checks<TestType>(105, test::scaled(std::is_same_v<typename TestType::arch, scalar> ? 15 : 40));
}

TEST_CASE("chunk_attention: compute_precision::bf16 runs this build's engine, or says it cannot",
          "[chunk_attention]") {
  test::rng_t g(test::seed_for(107, 0));
  mat q(g, 70, 24), k(g, 90, 24), v(g, 90, 33), o(g, 70, 33), o32(g, 70, 33);
  o32.data = o.data;
  const std::vector<float> before = o.data;
  chunk_attention(q.cview(), k.cview(), v.cview(), o32.view(), 0.25f, chunk_mask{true, 20});
  const auto call = [&] {
    chunk_attention(q.cview(), k.cview(), v.cview(), o.view(), 0.25f, chunk_mask{true, 20}, {}, false,
                    compute_precision::bf16);
  };
  if constexpr (!has_bf16_engine<default_arch>) {
    call();  // no 16-bit engine in this build: fp32, bit for bit
    CHECK(o.data == o32.data);
  } else {
    try {
      require_engine(compute_precision::bf16);
    } catch (const unsupported&) {  // the amx build on a CPU without AMX
      CHECK_THROWS_AS(call(), unsupported);
      CHECK(o.data == before);  // nothing written
      return;
    }
    call();
    CHECK(o.data != o32.data);  // the engine ran: rounded, not the fp32 result
    engine_checks<bf16_engine_for<default_arch>>(108, test::scaled(10));
  }
  mat bad = o;
  CHECK_THROWS_AS(chunk_attention(q.cview(), k.cview(), v.cview(), bad.view(), 0.25f, {}, {}, false,
                                  compute_precision(7)),
                  invalid_argument);
}

#if LONGCTX_HAS_AVX512_BF16
TEST_CASE("chunk_attention: the 16-bit kernel on the AVX512_BF16 engine", "[.][hw_avx512_bf16]") {
  engine_checks<bf16_dot_engine>(109, test::scaled(60));
}
#endif
#if LONGCTX_HAS_AMX
TEST_CASE("chunk_attention: the 16-bit kernel on the AMX tile unit", "[.][hw_amx]") {
  engine_checks<amx_engine<avx512, true>>(111, test::scaled(60));
}
#endif
