// Hostile input at the public entry points: views whose sizes overflow,
// outputs that alias inputs, logits beyond float's range, configurations
// too large to allocate, a backbone shared by two threads. Each case was a
// crash, undefined behaviour, a silent NaN or a silently wrong result before
// the check or fix it pins down; each must now be an invalid_argument naming
// the argument (and leave the state unchanged) or a finite result.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

#include <longctx/attention.hpp>
#include <longctx/models/gau.hpp>
#include <longctx/models/rmt_backbone.hpp>
#include <longctx/policies/dense.hpp>
#include <longctx/policies/flash.hpp>
#include <longctx/policies/infini.hpp>
#include <longctx/policies/tova.hpp>

#include "../support/support.hpp"

using namespace longctx;
using Catch::Contains;

namespace {
using E4 = tensor4_view<const float>::extents_type;
tensor4_view<const float> view4(const std::vector<float>& x, index_t b, index_t h, index_t n, index_t d) {
  return from_bhnd<dynamic_extent, const float>(x.data(), b, h, n, d);
}
}  // namespace

TEST_CASE("hostile: views whose element count or reach overflows are rejected, size() saturates",
          "[core][hostile]") {
  std::vector<float> buf(64, 1.0f);
  const index_t big = index_t(1) << 40;
  const tensor4_view<const float> huge(buf.data(), E4(big, big, 1, 8), {8, 8, 8, 1});
  REQUIRE_FALSE(huge.addressable());
  REQUIRE(huge.size() == std::numeric_limits<index_t>::max());
  // A modest shape whose strides reach past index_t.
  const tensor4_view<const float> far(buf.data(), E4(1, 4, 1, 8), {8, index_t(1) << 62, 8, 1});
  REQUIRE_FALSE(far.addressable());
  REQUIRE(tensor4_view<const float>(buf.data(), E4(0, big, big, 8), {8, 8, 8, 1}).addressable());  // empty
  // INT64_MIN as a stride: |stride| is not representable (was negated first,
  // signed overflow; fuzz finding attention-stride-min-negation).
  REQUIRE_FALSE(
      tensor4_view<const float>(buf.data(), E4(1, 2, 1, 8), {8, std::numeric_limits<index_t>::min(), 8, 1}).addressable());
  const auto q = view4(buf, 1, 4, 1, 8);
  std::vector<float> o(32);
  REQUIRE_THROWS_WITH(decode(q, far, q, from_bhnd(o.data(), 1, 4, 1, 8), 1.0f), Contains("'k'") && Contains("overflow"));
  // A sequence policy sees the same check before touching its state.
  const tova p{.budget = 4};
  auto st = p.make_state({1, 4, 4, 8, 8});
  const auto before = st.snapshot();
  REQUIRE_THROWS_WITH(p.forward(st, {q, far, q}, from_bhnd(o.data(), 1, 4, 1, 8)), Contains("'k'"));
  REQUIRE(st.snapshot() == before);
}

TEST_CASE("hostile: optional q_mem/k_mem and q_lin/k_lin views get the checks q and k get",
          "[core][hostile]") {
  // Shaped like q, but with strides that reach past index_t: the shape
  // check alone passed it, and the policies then read through it.
  std::vector<float> buf(64, 1.0f), o(32);
  const auto q = view4(buf, 1, 4, 1, 8);
  const tensor4_view<const float> far(buf.data(), E4(1, 4, 1, 8), {8, index_t(1) << 62, 8, 1});
  const auto out = from_bhnd(o.data(), 1, 4, 1, 8);
  const infini inf{.segment = 4, .beta = std::vector<float>(4, 0.0f)};
  auto si = inf.make_state({1, 4, 4, 8, 8});
  const auto si0 = si.snapshot();
  REQUIRE_THROWS_WITH(inf.forward(si, {q, q, q, far, {}}, out), Contains("'q_mem'") && Contains("overflow"));
  REQUIRE_THROWS_WITH(inf.forward(si, {q, q, q, {}, far}, out), Contains("'k_mem'") && Contains("overflow"));
  REQUIRE(si.snapshot() == si0);
  const flash fl{.chunk = 4};
  auto sf = fl.make_state({1, 4, 4, 8, 8});
  const auto sf0 = sf.snapshot();
  REQUIRE_THROWS_WITH(fl.forward(sf, {q, q, q, far, {}}, out), Contains("'q_lin'") && Contains("overflow"));
  REQUIRE_THROWS_WITH(fl.forward(sf, {q, q, q, {}, far}, out), Contains("'k_lin'") && Contains("overflow"));
  REQUIRE(sf.snapshot() == sf0);
}

TEST_CASE("hostile: zero-stride K/V of any length over a tiny buffer are rejected by the scratch bound",
          "[core][hostile]") {
  // Stride 0 along the keys: 2^58 keys over one row of 8 floats is a valid
  // (addressable) view, but the packed K^T the kernels size from it would
  // overflow index_t (a heap overflow before this check).
  std::vector<float> buf(64, 1.0f), o(32);
  const tensor4_view<const float> kv(buf.data(), E4(1, 1, index_t(1) << 58, 8), {8, 8, 0, 1});
  REQUIRE(kv.addressable());
  const auto q = view4(buf, 1, 4, 1, 8);
  for (const bool prefill : {true, false}) {
    INFO("prefill " << prefill);
    const auto call = [&] {
      if (prefill)
        attention(q, kv, kv, from_bhnd(o.data(), 1, 4, 1, 8), 1.0f);
      else
        decode(q, kv, kv, from_bhnd(o.data(), 1, 4, 1, 8), 1.0f);
    };
    REQUIRE_THROWS_WITH(call(), Contains("'k'") && Contains("scratch"));
  }
  // A long broadcast within the bound still runs: 4096 copies of one key.
  const tensor4_view<const float> rep(buf.data(), E4(1, 1, 4096, 8), {8, 8, 0, 1});
  decode(q, rep, rep, from_bhnd(o.data(), 1, 4, 1, 8), 1.0f);
  for (float x : o) REQUIRE(x == 1.0f);
}

TEST_CASE("hostile: an output that aliases an input is rejected", "[core][hostile]") {
  test::rng_t g(test::seed_for(401, 0));
  std::vector<float> q = test::random_floats(g, 2 * 5 * 8), k = test::random_floats(g, 2 * 5 * 8),
                     v = test::random_floats(g, 2 * 5 * 8);
  // o written over v (V read in place by the kernels): silently wrong before.
  std::vector<float> vo = v;
  const auto vv = view4(vo, 1, 2, 5, 8);
  const auto ov = from_bhnd(vo.data(), 1, 2, 5, 8);
  REQUIRE_THROWS_WITH(attention(view4(q, 1, 2, 5, 8), view4(k, 1, 2, 5, 8), vv, ov, 0.3f), Contains("'o'") && Contains("'v'"));
  REQUIRE_THROWS_WITH(decode(view4(q, 1, 2, 1, 8), view4(k, 1, 2, 5, 8), vv, from_bhnd(vo.data(), 1, 2, 1, 8), 0.3f),
                      Contains("'o'"));
  // The LSE written into (a part of) q.
  std::vector<float> o(80);
  REQUIRE_THROWS_WITH(attention(view4(q, 1, 2, 5, 8), view4(k, 1, 2, 5, 8), view4(v, 1, 2, 5, 8),
                                from_bhnd(o.data(), 1, 2, 5, 8), 0.3f, no_mask{},
                                lse_view(q.data() + 3, dextents<index_t, 3>(1, 2, 5))),
                      Contains("'lse'") && Contains("'q'"));
  // Disjoint buffers pass, adjacent ones too.
  std::vector<float> both(160);
  attention(view4(q, 1, 2, 5, 8), view4(k, 1, 2, 5, 8), view4(v, 1, 2, 5, 8), from_bhnd(both.data(), 1, 2, 5, 8), 0.3f);

  // Sequence policies: out over q (tova, infini), over infini's q_mem, FLASH's k_lin.
  const attention_dims dm{1, 2, 2, 8, 8};
  std::vector<float> qo = q;
  const auto qv = view4(qo, 1, 2, 5, 8);
  const auto out_q = from_bhnd(qo.data(), 1, 2, 5, 8);
  {
    const tova p{.budget = 3};
    auto st = p.make_state(dm);
    const auto before = st.snapshot();
    REQUIRE_THROWS_WITH(p.forward(st, {qv, view4(k, 1, 2, 5, 8), view4(v, 1, 2, 5, 8)}, out_q), Contains("'out'"));
    REQUIRE(st.snapshot() == before);
  }
  {
    const infini p{.segment = 4};
    auto st = p.make_state(dm);
    std::vector<float> o(80);
    const auto ov2 = from_bhnd(o.data(), 1, 2, 5, 8);
    REQUIRE_THROWS_WITH(p.forward(st, {view4(q, 1, 2, 5, 8), view4(k, 1, 2, 5, 8), view4(v, 1, 2, 5, 8), view4(o, 1, 2, 5, 8)}, ov2),
                        Contains("'out'") && Contains("q_mem"));
    REQUIRE(st.tokens_seen() == 0);
  }
  {
    const flash p{.chunk = 4};
    auto st = p.make_state(dm);
    std::vector<float> o(80);
    const auto ov2 = from_bhnd(o.data(), 1, 2, 5, 8);
    flash_input in{view4(q, 1, 2, 5, 8), view4(k, 1, 2, 5, 8), view4(v, 1, 2, 5, 8)};
    in.k_lin = view4(o, 1, 2, 5, 8);
    REQUIRE_THROWS_WITH(p.forward(st, in, ov2), Contains("'out'") && Contains("k_lin"));
  }
}

TEST_CASE("hostile: GAU runs in place (y == x) but rejects a shifted overlap", "[core][hostile]") {
  const index_t dm = 8, n = 6;
  const gau layer{.mixed = {.chunk = 4}};
  test::rng_t g(test::seed_for(404, 0));
  const index_t e = 16, s = 8;
  gau_weights w;
  w.w.resize(dm, 2 * e + s), w.b.resize(2 * e + s), w.gamma.resize(4, s), w.beta.resize(4, s), w.w_o.resize(e, dm);
  for (auto* m : {&w.w, &w.gamma, &w.beta, &w.w_o}) {
    const auto r = test::random_floats(g, std::size_t(m->size()), -0.3f, 0.3f);
    std::copy(r.begin(), r.end(), m->data());
  }
  w.b.setZero();
  w.norm_gain.setConstant(1, std::sqrt(float(dm)));
  auto a = layer.make_state(w);
  auto b = layer.make_state(w);
  std::vector<float> x = test::random_floats(g, std::size_t((n + 1) * dm)), y(x.size());
  layer.forward(a, make_matrix<dynamic_extent, const float>(x.data(), n, dm), make_matrix(y.data(), n, dm));
  std::vector<float> inplace = x;
  layer.forward(b, make_matrix<dynamic_extent, const float>(inplace.data(), n, dm), make_matrix(inplace.data(), n, dm));
  REQUIRE(std::vector<float>(inplace.begin(), inplace.begin() + n * dm) == std::vector<float>(y.begin(), y.begin() + n * dm));
  auto c = layer.make_state(w);
  REQUIRE_THROWS_WITH(layer.forward(c, make_matrix<dynamic_extent, const float>(x.data(), n, dm),
                                    make_matrix(x.data() + dm, n, dm)),
                      Contains("'y'") && Contains("'x'"));
  // A whole-sequence layer (FLASH-Quad, non-causal) whose call is rejected
  // leaves its state fresh: it used to close the state before checking the
  // bias and its scale (fuzz findings layers-gau-closed, layers-gau-quad-scale).
  std::vector<float> bias(16, 0.1f);
  for (const gau& bad : {gau{.attention = gau_attention::flash_quad, .quad_scale = std::numeric_limits<float>::infinity()},
                        gau{.attention = gau_attention::flash_quad, .quad_scale = std::numeric_limits<float>::quiet_NaN()},
                        gau{.attention = gau_attention::flash_quad,
                            .mixed = {.chunk = 4, .bias = make_matrix<dynamic_extent, const float>(bias.data(), 4, 4)}}}) {
    auto st = bad.make_state(w);
    REQUIRE_THROWS_AS(bad.forward(st, make_matrix<dynamic_extent, const float>(x.data(), n, dm), make_matrix(y.data(), n, dm)),
                      longctx::invalid_argument);
    // Still fresh (not consumed): a valid layer over the same attention state runs on it.
    const gau good = bad.mixed.bias.data() ? gau{.mixed = bad.mixed} : gau{.attention = gau_attention::flash_quad, .mixed = bad.mixed};
    good.forward(st, make_matrix<dynamic_extent, const float>(x.data(), n, dm), make_matrix(y.data(), n, dm));
  }
  // rope_base is checked before the state closes too (layers-gau-closed-rope).
  for (const double base : {0.0, -1.0, std::numeric_limits<double>::infinity()}) {
    const gau bad{.attention = gau_attention::flash_quad, .rope_base = base};
    auto st = gau{.attention = gau_attention::flash_quad}.make_state(w);
    REQUIRE_THROWS_WITH(bad.forward(st, make_matrix<dynamic_extent, const float>(x.data(), n, dm), make_matrix(y.data(), n, dm)),
                        Contains("'rope_base'"));
    gau{.attention = gau_attention::flash_quad}.forward(st, make_matrix<dynamic_extent, const float>(x.data(), n, dm),
                                                        make_matrix(y.data(), n, dm));
  }
  // A tiny norm_epsilon: the scale-norm factor of an all-zero row is
  // g / epsilon, past FLT_MAX; the row stays 0, not 0 x inf = NaN
  // (layers-gau-norm-epsilon).
  {
    const gau tiny{.mixed = {.chunk = 4}, .norm_epsilon = 1e-40f};
    auto st = tiny.make_state(w);
    std::vector<float> xz(x);
    std::fill(xz.begin(), xz.begin() + dm, 0.0f);
    tiny.forward(st, make_matrix<dynamic_extent, const float>(xz.data(), n, dm), make_matrix(y.data(), n, dm));
    for (index_t i = 0; i < n * dm; ++i) REQUIRE(std::isfinite(y[std::size_t(i)]));
  }
  const gau non_causal{.mixed = {.chunk = 4, .mode = flash_mode::non_causal}};
  auto nc = non_causal.make_state(w);
  const gau other{.mixed = {.chunk = 3, .mode = flash_mode::non_causal}};  // its attention state does not match
  REQUIRE_THROWS_WITH(other.forward(nc, make_matrix<dynamic_extent, const float>(x.data(), n, dm), make_matrix(y.data(), n, dm)),
                      Contains("'state'"));
  non_causal.forward(nc, make_matrix<dynamic_extent, const float>(x.data(), n, dm), make_matrix(y.data(), n, dm));
}

TEST_CASE("hostile: RMT rejects an output overlapping its input", "[core][hostile]") {
  rmt_reference_backbone<> bb({.width = 8, .heads = 2, .layers = 1, .seed = 3});
  for (const rmt p : {rmt{.memory = 2, .segment_budget = 6}, rmt{.memory = 2, .segment_budget = 6, .layout = rmt_layout::encoder}}) {
    std::vector<float> mem(16, 0.1f), x(13 * 8, 0.2f);
    auto st = p.make_state(bb, make_matrix<dynamic_extent, const float>(mem.data(), 2, 8));
    const snapshot_bytes before = st.snapshot();
    REQUIRE_THROWS_WITH(p.forward(st, make_matrix<dynamic_extent, const float>(x.data(), 12, 8), make_matrix(x.data() + 8, 12, 8)),
                        Contains("'out'") && Contains("'in'"));
    REQUIRE_THROWS_WITH(p.forward(st, make_matrix<dynamic_extent, const float>(x.data(), 12, 8), make_matrix(x.data(), 12, 8)),
                        Contains("'out'"));
    REQUIRE(st.snapshot() == before);
  }
}

namespace {
// Inputs of extreme magnitude, each of which broke the float kernels: the
// rows they make are recomputed exactly (kernels/exact_row.hpp).
enum class extreme { same_sign, mixed_sign, all_below, huge_v, neg_first };
struct extreme_inputs {
  std::vector<float> q, k, v;
};
extreme_inputs make_extreme(extreme kind, index_t n, index_t d, std::uint64_t seed) {
  test::rng_t g(seed);
  extreme_inputs x;
  const std::size_t size = std::size_t(2 * n * d);
  const auto big = [&](float sign) { return sign * 1e19f * (1.0f + float(test::uniform_int(g, 0, 9))); };
  const auto sign = [&] { return test::uniform_int(g, 0, 1) ? 1.0f : -1.0f; };
  for (std::size_t i = 0; i < size; ++i) {
    switch (kind) {
      case extreme::same_sign:  // every sum of products overflows to +inf: ties before
        x.q.push_back(big(1)), x.k.push_back(big(1));
        break;
      case extreme::mixed_sign:  // partial sums overflow both ways: inf - inf = NaN before
        x.q.push_back(big(sign())), x.k.push_back(big(sign()));
        break;
      case extreme::all_below:  // every logit below -FLT_MAX: "fully masked", output 0 before
        x.q.push_back(big(1)), x.k.push_back(big(-1));
        break;
      case extreme::neg_first:  // q . k = -3e38 - 3e38 + 4e38 + 4e38 (exact 2e38): the float sum reaches -inf
        // first, and the key read as masked although its logit is the largest (fuzz finding
        // attention-mixed-overflow-wrong-output); the other keys are ordinary
        x.q.push_back(i % 64 < 4 ? 1e20f : 0.01f * sign());
        x.k.push_back((i / 64) % 2 ? 0.01f * sign() : i % 64 < 2 ? -3e19f : i % 64 < 4 ? 4e19f : 0.0f);
        break;
      case extreme::huge_v:  // ordinary logits, the weighted sum of V passes FLT_MAX: inf before
        x.q.push_back(0.01f * sign()), x.k.push_back(0.01f * sign());
        break;
    }
    x.v.push_back(kind == extreme::huge_v ? sign() * 3e38f * (0.9f + 0.01f * float(test::uniform_int(g, 0, 9)))
                                          : 3.0f * sign() * float(test::uniform_int(g, 0, 100)) / 100.0f);
  }
  return x;
}
}  // namespace

TEMPLATE_LIST_TEST_CASE(
    "hostile: inputs of extreme magnitude give the exact (finite) result, not NaN, ties or zero",
    "[core][hostile]", test::tested_archs) {
  using Arch = TestType;
  const index_t n = 37, d = 64;
  const float scale = 0.125f;
  for (extreme kind : {extreme::same_sign, extreme::mixed_sign, extreme::all_below, extreme::huge_v, extreme::neg_first}) {
    CAPTURE(int(kind));
    const extreme_inputs x = make_extreme(kind, n, d, test::seed_for(402, std::uint64_t(kind)));
    std::vector<float> o(x.q.size(), -99.0f), o1(std::size_t(2 * d), -99.0f), lse1(2), lg1(std::size_t(2 * n));
    attention<Arch>(view4(x.q, 1, 2, n, d), view4(x.k, 1, 2, n, d), view4(x.v, 1, 2, n, d), from_bhnd(o.data(), 1, 2, n, d),
                    scale, causal{});
    // Decode: row 0 of each head against every key, with its lse and logits.
    std::vector<float> q1(x.q.begin(), x.q.begin() + d);
    q1.insert(q1.end(), x.q.begin() + n * d, x.q.begin() + (n + 1) * d);
    decode<Arch>(view4(q1, 1, 2, 1, d), view4(x.k, 1, 2, n, d), view4(x.v, 1, 2, n, d), from_bhnd(o1.data(), 1, 2, 1, d),
                 scale, no_mask{}, lse_view(lse1.data(), dextents<index_t, 3>(1, 2, 1)), {},
                 from_bhnd(lg1.data(), 1, 2, 1, n));
    double vmax = 0;
    for (float y : x.v) vmax = std::max(vmax, double(std::abs(y)));
    for (index_t h = 0; h < 2; ++h) {
      const auto head = [&](const std::vector<float>& t, index_t rows) {
        return make_matrix<dynamic_extent, const float>(t.data() + h * n * d, rows, d);
      };
      const auto ref = reference::attention_head(head(x.q, n), head(x.k, n), head(x.v, n), scale, causal{});
      const auto ref1 = reference::attention_head(head(x.q, 1), head(x.k, n), head(x.v, n), scale, no_mask{});
      for (index_t i = 0; i < n; ++i)
        for (index_t c = 0; c < d; ++c) {
          const float y = o[std::size_t((h * n + i) * d + c)];
          REQUIRE(std::isfinite(y));
          REQUIRE(std::abs(double(y) - ref.o[std::size_t(i * d + c)]) <= 1e-5 * vmax);
        }
      for (index_t c = 0; c < d; ++c) {
        REQUIRE(std::isfinite(o1[std::size_t(h * d + c)]));
        REQUIRE(std::abs(double(o1[std::size_t(h * d + c)]) - ref1.o[std::size_t(c)]) <= 1e-5 * vmax);
      }
      // Logits as the kernels write them: the exact ones, saturated at +-FLT_MAX.
      constexpr double fmax = std::numeric_limits<float>::max();
      for (index_t j = 0; j < n; ++j) {
        const double want = std::clamp(ref1.logits[std::size_t(j)], -fmax, fmax);
        REQUIRE(std::abs(double(lg1[std::size_t(h * n + j)]) - want) <= 1e-6 * std::abs(want) + 1e-6);
      }
      const double lse_want = std::clamp(ref1.lse[0], -fmax, fmax);
      REQUIRE(std::abs(double(lse1[std::size_t(h)]) - lse_want) <= 1e-6 * std::abs(lse_want) + 1e-5);
    }
    // A policy on such inputs (the cache's prefill, then its eviction
    // scores from those logits): finite, within V's range.
    const tova p{.budget = 8};
    auto st = p.make_state({1, 2, 2, d, d});
    std::vector<float> po(x.q.size());
    p.forward<Arch>(st, {view4(x.q, 1, 2, n, d), view4(x.k, 1, 2, n, d), view4(x.v, 1, 2, n, d)},
                    from_bhnd(po.data(), 1, 2, n, d));
    for (float y : po) REQUIRE(std::abs(double(y)) <= vmax * (1 + 1e-5));
    REQUIRE(st.size() == 8);
  }
  // NaN input still gives NaN (never a silent finite), in both kernels.
  extreme_inputs x = make_extreme(extreme::mixed_sign, n, d, test::seed_for(402, 9));
  x.q[5] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> o(x.q.size()), o1(std::size_t(2 * d));
  decode<Arch>(view4(x.q, 1, 2, 1, d), view4(x.k, 1, 2, n, d), view4(x.v, 1, 2, n, d), from_bhnd(o1.data(), 1, 2, 1, d), scale);
  attention<Arch>(view4(x.q, 1, 2, n, d), view4(x.k, 1, 2, n, d), view4(x.v, 1, 2, n, d), from_bhnd(o.data(), 1, 2, n, d),
                  scale, causal{});
  REQUIRE(std::isnan(o1[0]));
  REQUIRE(std::isnan(o[0]));
  REQUIRE(std::isfinite(o[std::size_t(n * d)]));  // the other head's first row
}

// A visible key whose float dot product overflows to -inf (exact logit
// finite) must be flagged for the exact recomputation even when a key the
// mask hides has a NaN dot product (inf - inf) in the same tile: the check
// for -inf once used a max that a NaN lane made drop the -inf, and the
// returned logit stayed -inf (fuzz-scalar, 2026-12-03). Keys: 0 visible
// (a sink, float dot -inf), 1 hidden (float dot NaN), 2 visible (moderate).
TEMPLATE_LIST_TEST_CASE(
    "hostile: a -inf dot product beside a masked NaN one is still recomputed exactly",
    "[core][hostile]", test::tested_archs) {
  using Arch = TestType;
  const index_t d = 64, n = 3;
  const float scale = 0.125f;
  test::rng_t g(test::seed_for(405, 0));
  std::vector<float> q(std::size_t(n * d), 0.0f), k = test::random_floats(g, std::size_t(n * d)),
                     v = test::random_floats(g, std::size_t(n * d));
  for (index_t i = 0; i < n; ++i) q[std::size_t(i * d)] = q[std::size_t(i * d + 1)] = 2e19f;  // every row the same
  for (index_t i = 0; i < n; ++i)
    for (index_t c = 2; c < d; ++c) q[std::size_t(i * d + c)] = 0.5f;
  k[0] = k[1] = -1e19f;  // two lanes (or accumulators) of -2e38: their sum -inf
  k[std::size_t(d)] = 1e20f, k[std::size_t(d + 1)] = -1e20f;  // +inf and -inf lanes: NaN
  k[std::size_t(2 * d)] = k[std::size_t(2 * d + 1)] = 0.0f;
  const sinks_window mask{.sinks = 1, .window = 1};  // the last row sees keys 0 and 2
  const auto head = [&](const std::vector<float>& t, index_t rows) {
    return make_matrix<dynamic_extent, const float>(t.data(), rows, d);
  };
  const auto ref = reference::attention_head(head(q, n), head(k, n), head(v, n), scale, mask);
  constexpr double fmax = std::numeric_limits<float>::max();
  const index_t last = n - 1;
  REQUIRE(std::isfinite(ref.logits[std::size_t(last * n)]));  // the exact logit of key 0 is finite
  REQUIRE(ref.logits[std::size_t(last * n)] < -fmax * 0.1 / 8);
  // Prefill with the last row's logits, and decode of the last row.
  const auto un = static_cast<std::size_t>(n), ud = static_cast<std::size_t>(d);
  std::vector<float> o(un * ud), lg(un), o1(ud), lg1(un), lse1(1);
  attention<Arch>(view4(q, 1, 1, n, d), view4(k, 1, 1, n, d), view4(v, 1, 1, n, d), from_bhnd(o.data(), 1, 1, n, d),
                  scale, mask, {}, {}, row_logits{.first = last, .logits = from_bhnd(lg.data(), 1, 1, 1, n)});
  std::vector<float> q1(q.begin() + last * d, q.end());
  decode<Arch>(view4(q1, 1, 1, 1, d), view4(k, 1, 1, n, d), view4(v, 1, 1, n, d), from_bhnd(o1.data(), 1, 1, 1, d),
               scale, mask, lse_view(lse1.data(), dextents<index_t, 3>(1, 1, 1)), {}, from_bhnd(lg1.data(), 1, 1, 1, n));
  for (const auto* l : {&lg, &lg1}) {
    INFO("arch " << TestType::name << (l == &lg ? " prefill" : " decode"));
    for (index_t j = 0; j < n; ++j) {
      const double want = j == 1 ? -INFINITY : std::clamp(ref.logits[std::size_t(last * n + j)], -fmax, fmax);
      CAPTURE(j, (*l)[std::size_t(j)], want);
      if (j == 1) REQUIRE((*l)[std::size_t(j)] == neg_inf);
      else REQUIRE(std::abs(double((*l)[std::size_t(j)]) - want) <= 1e-6 * std::abs(want) + 1e-6);
    }
  }
  for (index_t c = 0; c < d; ++c) {
    const double want = ref.o[std::size_t(last * d + c)];
    REQUIRE(std::abs(double(o[std::size_t(last * d + c)]) - want) <= 1e-6);
    REQUIRE(std::abs(double(o1[std::size_t(c)]) - want) <= 1e-6);
  }
  REQUIRE(std::abs(double(lse1[0]) - ref.lse[std::size_t(last)]) <= 1e-5);
}

// decode() over an empty cache: k and v may have null data (the views are
// empty) and logits is (b, h, n_q, 0); every row is fully masked. It offset
// the null pointer and tripped an assertion on the logits row (fuzz findings
// attention-decode-null-empty-kv, attention-decode-empty-logits).
TEMPLATE_LIST_TEST_CASE("hostile: decode over zero keys, null K/V data, empty logits",
                        "[core][hostile]", test::tested_archs) {
  using Arch = TestType;
  std::vector<float> q(2 * 3 * 8, 0.5f), o(2 * 3 * 8, -1.0f), lse(6, 1.0f), lg(1, -5.0f);
  const tensor4_view<const float> none(nullptr, E4(1, 1, 0, 8), {0, 0, 8, 1});
  decode<Arch>(view4(q, 1, 2, 3, 8), none, none, from_bhnd(o.data(), 1, 2, 3, 8), 1.0f, no_mask{},
               lse_view(lse.data(), dextents<index_t, 3>(1, 2, 3)), {}, tensor4_view<float>(lg.data(), E4(1, 2, 3, 0), {0, 0, 0, 1}));
  for (float x : o) REQUIRE(x == 0.0f);
  for (float x : lse) REQUIRE(x == -std::numeric_limits<float>::infinity());
  REQUIRE(lg[0] == -5.0f);  // nothing written
}

// The one defined exception to "non-finite input gives NaN": an infinite q or
// k whose logit is exactly -inf weighs its key 0 (the limit), as if masked.
TEMPLATE_LIST_TEST_CASE("hostile: a logit of exactly -inf from an infinite key weighs 0",
                        "[core][hostile]", test::tested_archs) {
  using Arch = TestType;
  const index_t n = 5, d = 8;
  test::rng_t g(test::seed_for(403, 0));
  std::vector<float> q(static_cast<std::size_t>(d), 0.5f), k = test::random_floats(g, std::size_t(n * d)),
                     v = test::random_floats(g, std::size_t(n * d));
  for (index_t c = 0; c < d; ++c) k[std::size_t(2 * d + c)] = -std::numeric_limits<float>::infinity();
  std::vector<float> o(static_cast<std::size_t>(d)), o4(static_cast<std::size_t>(d));
  decode<Arch>(view4(q, 1, 1, 1, d), view4(k, 1, 1, n, d), view4(v, 1, 1, n, d), from_bhnd(o.data(), 1, 1, 1, d), 1.0f);
  // The same without key 2.
  std::vector<float> k4(k), v4(v);
  k4.erase(k4.begin() + 2 * d, k4.begin() + 3 * d), v4.erase(v4.begin() + 2 * d, v4.begin() + 3 * d);
  decode<Arch>(view4(q, 1, 1, 1, d), view4(k4, 1, 1, n - 1, d), view4(v4, 1, 1, n - 1, d),
               from_bhnd(o4.data(), 1, 1, 1, d), 1.0f);
  for (index_t c = 0; c < d; ++c) REQUIRE(std::abs(o[std::size_t(c)] - o4[std::size_t(c)]) <= 1e-6f);
  // +inf instead: NaN.
  for (index_t c = 0; c < d; ++c) k[std::size_t(2 * d + c)] = std::numeric_limits<float>::infinity();
  decode<Arch>(view4(q, 1, 1, 1, d), view4(k, 1, 1, n, d), view4(v, 1, 1, n, d), from_bhnd(o.data(), 1, 1, 1, d), 1.0f);
  for (float x : o) REQUIRE(std::isnan(x));
}

TEST_CASE("hostile: configurations too large to allocate are invalid_argument, not length_error or overflow",
          "[core][hostile]") {
  REQUIRE_THROWS_WITH((tova{.budget = index_t(1) << 50}.make_state({1, 8, 8, 128, 128})), Contains("'budget'"));
  REQUIRE_THROWS_WITH((tova{.budget = std::numeric_limits<index_t>::max()}.make_state({1, 8, 8, 128, 128})),
                      Contains("'budget'"));
  REQUIRE_THROWS_WITH((infini{.segment = 16}.make_state({1, 1 << 20, 1 << 20, 1 << 14, 1 << 14})), Contains("'dims'"));
  REQUIRE_THROWS_WITH((infini{.segment = index_t(1) << 40}.make_state({1, 1, 1, 64, 64})), Contains("'dims'"));
  REQUIRE_THROWS_WITH(tova{.budget = 4}.make_state({index_t(1) << 30, 1 << 20, 1, 1 << 20, 0}), Contains("'dims'"));
  // RMT: a memory count whose 2m overflowed, an offset whose positions would.
  rmt_reference_backbone<> bb({.width = 8, .heads = 2, .layers = 1});
  const auto no_mem = make_matrix<dynamic_extent, const float>(nullptr, 0, 8);
  REQUIRE_THROWS_WITH((rmt{.memory = std::numeric_limits<index_t>::max() / 2 + 7, .segment_budget = 64}.make_state(bb, no_mem)),
                      Contains("'memory'"));
  REQUIRE_THROWS_WITH((rmt{.memory = 0, .segment_budget = std::numeric_limits<index_t>::max()}.make_state(bb, no_mem)),
                      Contains("'segment_budget'"));
  rmt p{.memory = 0, .segment_budget = 64};
  p.positions = {rmt_position_mode::offset, std::numeric_limits<index_t>::max() - 3};
  REQUIRE_THROWS_WITH(p.make_state(bb, no_mem), Contains("'positions'"));
  p.positions = {rmt_position_mode::content_offset, std::numeric_limits<index_t>::max() - 3};
  REQUIRE_THROWS_WITH(p.make_state(bb, no_mem), Contains("'positions'") && Contains("offset"));
  p.positions = {rmt_position_mode::content_offset, 10000, -1};
  REQUIRE_THROWS_WITH(p.make_state(bb, no_mem), Contains("'positions'") && Contains("memory_position"));
  p.positions = {rmt_position_mode(7), 0};
  REQUIRE_THROWS_WITH(p.make_state(bb, no_mem), Contains("'positions'") && Contains("mode 7"));
  p.positions = {rmt_position_mode::content_offset, 10000, 0};  // the port's setting
  CHECK_NOTHROW(p.make_state(bb, no_mem));
}

TEST_CASE("hostile: two states on two threads share one backbone; its FLOP count adds up", "[core][hostile]") {
  rmt_reference_backbone<> bb({.width = 16, .heads = 2, .layers = 2, .seed = 5});
  const rmt p{.memory = 2, .segment_budget = 12};
  test::rng_t g(test::seed_for(403, 0));
  const auto mem0 = test::random_floats(g, 2 * 16);
  const auto in = test::random_floats(g, 40 * 16);
  const auto run = [&] {
    auto st = p.make_state(bb, make_matrix<dynamic_extent, const float>(mem0.data(), 2, 16));
    std::vector<float> out(40 * 16);
    for (index_t i = 0; i < 40; ++i)
      p.forward(st, make_matrix<dynamic_extent, const float>(in.data() + i * 16, 1, 16),
                make_matrix(out.data() + i * 16, 1, 16));
    return out;
  };
  bb.reset_flops();
  const auto want = run();
  const double one = bb.flops();
  REQUIRE(one > 0);
  bb.reset_flops();
  std::vector<float> a, b;
  std::thread t1([&] { a = run(); }), t2([&] { b = run(); });
  t1.join();
  t2.join();
  REQUIRE(a == want);
  REQUIRE(b == want);
  REQUIRE(bb.flops() == 2 * one);
}

TEST_CASE("hostile: a cache_relative snapshot whose attended keys are not its originals' rotations is rejected",
          "[core][hostile]") {
  // Found by tests/fuzz/restore.cpp: the attended copies were recomputed on
  // restore, so such a snapshot was accepted and no longer round-tripped.
  const sinks_cache p{.budget = 4, .rule = {.sinks = 1}, .positions = position_mode::cache_relative};
  const attention_dims dm{1, 2, 2, 8, 8};
  test::rng_t g(test::seed_for(405, 0));
  const auto q = test::random_floats(g, 2 * 6 * 8), k = test::random_floats(g, 2 * 6 * 8), v = test::random_floats(g, 2 * 6 * 8);
  auto st = p.make_state(dm);
  std::vector<float> o(2 * 6 * 8);
  p.forward(st, {view4(q, 1, 2, 6, 8), view4(k, 1, 2, 6, 8), view4(v, 1, 2, 6, 8)}, from_bhnd(o.data(), 1, 2, 6, 8));
  auto bytes = st.snapshot();
  // The sink (position 0, rank 0) is attended unrotated: its first value is
  // k[0], first stored in the attended keys (the originals follow).
  std::size_t at = 0;
  for (std::size_t i = 0; i + 4 <= bytes.size(); ++i)
    if (std::memcmp(bytes.data() + i, &k[0], 4) == 0) {
      at = i;
      break;
    }
  REQUIRE(at > 0);
  const float other = k[0] + 0.5f;
  std::memcpy(bytes.data() + at, &other, 4);
  const std::uint32_t crc = detail::crc32c(std::span<const std::byte>(bytes).first(bytes.size() - 4));
  std::memcpy(bytes.data() + bytes.size() - 4, &crc, 4);
  auto fresh = p.make_state(dm);
  const auto before = fresh.snapshot();
  REQUIRE_THROWS_WITH(fresh.restore(bytes), Contains("keys"));
  REQUIRE(fresh.snapshot() == before);
  fresh.restore(st.snapshot());  // the genuine one still restores
  REQUIRE(fresh.snapshot() == st.snapshot());
}
