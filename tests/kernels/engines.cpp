// The 16-bit GEMM engines of the tiled prefill (kernels/compute.hpp) against
// the double oracle, on the random-shape sweep of the fp32 kernel's test
// (odd lengths, head dims 1..128, GQA, every mask and alignment, both
// layouts, logit scales up to 30x), f32 and bf16 K/V, plus the invariants.
//
// Tolerances, u = 2^-8 (bf16's unit roundoff: 8 significant bits, so
// rounding to nearest moves a value by up to 2^-8 of it) and V = max |v|:
//   tight  against the oracle run on the operands the engine multiplies
//          (scale q, k and v rounded to bf16): only P's rounding and fp32
//          accumulation remain, |o - o_ref| <= u V + the fp32 tolerance
//          (|sum_j p_j (1 + d_j) v_j - sum_j p_j v_j| / l <= u V);
//   bound  against the oracle on the caller's operands: each logit moves by
//          at most e = 2 u A (A = scale sum_p |q_p k_p|, the row's largest;
//          two roundings per product), so each weight by a factor within
//          exp(+-2 e), and |o - o_ref| <= (exp(2 e) - 1 + 2 u) V (P and V
//          rounded) + the fp32 tolerance. The documented accuracy of
//          compute_precision::bf16 (README).
// The emulated AMX unit (amx_tiles.hpp) runs the AMX engine's layouts and
// loops on every CPU and backend; the hardware engines run in the hidden
// [hw_amx] / [hw_avx512_bf16] cases, which ctest runs as
// kernels.engines.*_hardware and reports as skipped where the CPU (or the
// build) lacks them.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

#include <longctx/kernels.hpp>
#include <longctx/policies/infini.hpp>
#include <longctx/policies/tova.hpp>
#include <longctx/reference.hpp>

#include "../support/engines.hpp"
#include "../support/masks.hpp"
#include "../support/support.hpp"

using namespace longctx;

namespace {

using test::any_mask;
using test::emulated_amx;
using test::u_bf16;

float round_bf16(float x) { return bf16::from_float(x).to_float(); }
template <class KV>
KV to_kv(float x) {
  if constexpr (std::is_same_v<KV, float>)
    return x;
  else
    return KV::from_float(x);
}

struct problem {
  index_t b, h_kv, group, n_q, n_kv, d, d_v;
  bool bnhd;
  float scale;
  any_mask mask;
  std::vector<float> q, k, v;  // (b, heads, n, d) in the chosen layout
  tensor4_view<float> view(std::vector<float>& x, index_t heads, index_t n, index_t dim) const {
    using E = tensor4_view<float>::extents_type;
    return bnhd ? tensor4_view<float>(x.data(), E(b, heads, n, dim), {n * heads * dim, dim, heads * dim, 1})
                : tensor4_view<float>(x.data(), E(b, heads, n, dim), {heads * n * dim, n * dim, dim, 1});
  }
};

std::string describe(const problem& s) {
  return detail::concat("b ", s.b, " h_kv ", s.h_kv, " group ", s.group, " n_q ", s.n_q, " n_kv ", s.n_kv, " d ",
                        s.d, " d_v ", s.d_v, s.bnhd ? " bnhd" : " bhnd", " scale ", s.scale, " mask#",
                        s.mask.index());
}

problem random_problem(test::rng_t& g) {
  static const std::vector<int> lens = test::odd_sizes({16, 32, 48, 64, 128, 512}, 700);
  static const std::vector<int> dims{1, 2, 7, 8, 16, 17, 31, 32, 33, 59, 64, 111, 128};
  problem s{};
  s.b = test::uniform_int(g, 1, 2);
  s.h_kv = test::uniform_int(g, 1, 2);
  s.group = std::vector<index_t>{1, 1, 2, 3}[std::size_t(test::uniform_int(g, 0, 3))];
  s.n_kv = test::random_size(g, lens, 300);
  s.n_q = test::uniform_int(g, 0, 3) == 0 ? s.n_kv : test::random_size(g, lens, 300);
  s.d = dims[std::size_t(test::uniform_int(g, 0, int(dims.size()) - 1))];
  s.d_v = test::uniform_int(g, 0, 2) ? s.d : dims[std::size_t(test::uniform_int(g, 0, int(dims.size()) - 1))];
  s.bnhd = test::uniform_int(g, 0, 1);
  const float boost = std::vector<float>{1, 1, 3, 10, 30}[std::size_t(test::uniform_int(g, 0, 4))];
  s.scale = boost / std::sqrt(float(s.d));
  s.mask = test::random_mask(g);
  const index_t h = s.h_kv * s.group;
  s.q = test::random_floats(g, std::size_t(s.b * h * s.n_q * s.d));
  s.k = test::random_floats(g, std::size_t(s.b * s.h_kv * s.n_kv * s.d));
  s.v = test::random_floats(g, std::size_t(s.b * s.h_kv * s.n_kv * s.d_v), -2, 2);
  return s;
}

// Runs engine E on s with K/V stored as KV; checks both tolerances, the
// LSE, fully masked rows, and returns the largest tight error seen over V.
template <class E, class KV>
double check_engine(problem& s) {
  const index_t h = s.h_kv * s.group;
  std::vector<float> o(std::size_t(s.b * h * s.n_q * s.d_v), 7.0f), lse_buf(std::size_t(s.b * h * s.n_q), 123.0f);
  // K/V as the engine reads them: stored as KV (bf16: rounded once).
  std::vector<float> kr = s.k, vr = s.v, qr = s.q;
  std::vector<KV> ks(s.k.size()), vs(s.v.size());
  for (std::size_t i = 0; i < s.k.size(); ++i) ks[i] = to_kv<KV>(s.k[i]);
  for (std::size_t i = 0; i < s.v.size(); ++i) vs[i] = to_kv<KV>(s.v[i]);
  for (std::size_t i = 0; i < s.k.size(); ++i) kr[i] = round_bf16(kv_storage_traits<KV>::to_float(ks[i]));
  for (std::size_t i = 0; i < s.v.size(); ++i) vr[i] = round_bf16(kv_storage_traits<KV>::to_float(vs[i]));
  for (float& x : qr) x = round_bf16(x * s.scale);  // the engine's Q: scaled in float, rounded once
  using E4 = typename tensor4_view<const KV>::extents_type;
  const auto kv_view = [&](std::vector<KV>& x, index_t dim) {
    const index_t n = s.n_kv, hk = s.h_kv;
    return s.bnhd ? tensor4_view<const KV>(x.data(), E4(s.b, hk, n, dim), {n * hk * dim, dim, hk * dim, 1})
                  : tensor4_view<const KV>(x.data(), E4(s.b, hk, n, dim), {hk * n * dim, n * dim, dim, 1});
  };
  lse_view lse(lse_buf.data(), dextents<index_t, 3>(s.b, h, s.n_q));
  std::visit(
      [&](const auto& m) {
        prefill_attention_with<E, KV>(s.view(s.q, h, s.n_q, s.d), kv_view(ks, s.d), kv_view(vs, s.d_v),
                                      s.view(o, h, s.n_q, s.d_v), s.scale, m, lse, serial_executor{});
      },
      s.mask);
  const auto ov = s.view(o, h, s.n_q, s.d_v);
  double worst = 0;
  for (index_t bi = 0; bi < s.b; ++bi)
    for (index_t hi = 0; hi < h; ++hi) {
      const index_t hk = hi / s.group;
      const auto head = [&](std::vector<float>& x, index_t heads, index_t n, index_t dim, index_t which) {
        return matrix_view<const float>(s.view(x, heads, n, dim).head(bi, which));
      };
      const auto oracle = [&](std::vector<float>& q, std::vector<float>& k, std::vector<float>& v, double scale) {
        return std::visit(
            [&](const auto& m) {
              return reference::attention_head(head(q, h, s.n_q, s.d, hi), head(k, s.h_kv, s.n_kv, s.d, hk),
                                               head(v, s.h_kv, s.n_kv, s.d_v, hk), scale, m);
            },
            s.mask);
      };
      const auto tight = oracle(qr, kr, vr, 1.0);
      const auto loose = oracle(s.q, s.k, s.v, double(s.scale));
      const auto qh = head(s.q, h, s.n_q, s.d, hi), kh = head(s.k, s.h_kv, s.n_kv, s.d, hk);
      double max_v = 0, max_logit = 0;
      for (float x : s.v) max_v = std::max(max_v, double(std::abs(x)));
      for (double x : tight.logits)
        if (std::isfinite(x)) max_logit = std::max(max_logit, std::abs(x));
      const double fp32 = test::attention_tolerance(max_logit, max_v);
      for (index_t i = 0; i < s.n_q; ++i) {
        INFO(describe(s) << " batch " << bi << " head " << hi << " row " << i);
        if (std::isinf(tight.lse[std::size_t(i)])) {  // fully masked: o = 0, lse = -inf on every engine
          REQUIRE(lse(bi, hi, i) == neg_inf);
          for (index_t c = 0; c < s.d_v; ++c) REQUIRE(ov(bi, hi, i, c) == 0.0f);
          continue;
        }
        double a = 0;  // A: the row's largest scale sum_p |q_p k_p| over visible keys
        index_t visible = 0;
        for (index_t j = 0; j < s.n_kv; ++j) {
          if (!std::isfinite(tight.logits[std::size_t(i * s.n_kv + j)])) continue;
          ++visible;
          double t = 0;
          for (index_t p = 0; p < s.d; ++p) t += std::abs(double(qh(i, p)) * double(kh(j, p)));
          a = std::max(a, t * s.scale);
        }
        const double rl = tight.lse[std::size_t(i)];
        REQUIRE(std::abs(lse(bi, hi, i) - rl) <=
                test::attention_tolerance(max_logit + std::abs(rl), 1.0) + 0.5 * test::eps_f32 * double(visible));
        double err_tight = 0, err_loose = 0;
        for (index_t c = 0; c < s.d_v; ++c) {
          err_tight = std::max(err_tight, std::abs(ov(bi, hi, i, c) - tight.o[std::size_t(i * s.d_v + c)]));
          err_loose = std::max(err_loose, std::abs(ov(bi, hi, i, c) - loose.o[std::size_t(i * s.d_v + c)]));
        }
        const double e = 2 * u_bf16 * a;
        REQUIRE(err_tight <= u_bf16 * max_v + fp32);
        REQUIRE(err_loose <= (std::expm1(2 * e) + 2 * u_bf16) * max_v + fp32);
        worst = std::max(worst, err_tight / max_v);
      }
    }
  return worst;
}

template <class E>
void sweep(std::uint64_t id, int cases) {
  double worst = 0;
  for (int c = 0; c < cases; ++c) {
    test::rng_t g(test::seed_for(id, std::uint64_t(c)));
    problem s = random_problem(g);
    INFO("engine " << E::name << " on " << E::arch::name << " case " << c);
    worst = std::max(worst, c % 2 ? check_engine<E, bf16>(s) : check_engine<E, float>(s));
  }
  // Rounding P to bf16 must show: an engine that silently computed in fp32
  // would pass every bound above.
  CHECK(worst > 1e-4);
}

// The invariants that do not depend on the engine's rounding: results are
// bit-identical for any thread count, a GQA group's heads equal the same
// query heads run one by one against their KV head, and a fully masked
// prefix of rows gives o = 0, lse = -inf.
template <class E>
void invariants() {
  test::rng_t g(test::seed_for(61, 0));
  const index_t b = 2, h_kv = 2, group = 3, h = h_kv * group, n = 333, d = 40;
  auto q = test::random_floats(g, std::size_t(b * h * n * d)), k = test::random_floats(g, std::size_t(b * h_kv * n * d)),
       v = test::random_floats(g, std::size_t(b * h_kv * n * d));
  std::vector<float> o1(q.size()), o2(q.size()), l1(std::size_t(b * h * n)), l2(l1.size());
  const auto run = [&](std::vector<float>& o, std::vector<float>& l, auto&& exec, auto mask) {
    prefill_attention_with<E, float>(from_bhnd(static_cast<const float*>(q.data()), b, h, n, d),
                                     from_bhnd(static_cast<const float*>(k.data()), b, h_kv, n, d),
                                     from_bhnd(static_cast<const float*>(v.data()), b, h_kv, n, d),
                                     from_bhnd(o.data(), b, h, n, d), 0.2f, mask,
                                     lse_view(l.data(), dextents<index_t, 3>(b, h, n)), exec);
  };
  run(o1, l1, serial_executor{}, causal{});
  for (std::size_t threads : {2, 3}) {
    thread_pool pool(threads);
    run(o2, l2, pool, causal{});
    INFO("threads " << threads);
    CHECK(o1 == o2);
    CHECK(l1 == l2);
  }
  // GQA: head hi of the group equals a single-head call against KV head hi / group.
  for (index_t hi : {0, 4}) {
    std::vector<float> o(std::size_t(n * d)), l(static_cast<std::size_t>(n));
    const index_t bi = 1, hk = hi / group;
    prefill_attention_with<E, float>(from_bhnd(static_cast<const float*>(q.data() + (bi * h + hi) * n * d), 1, 1, n, d),
                                     from_bhnd(static_cast<const float*>(k.data() + (bi * h_kv + hk) * n * d), 1, 1, n, d),
                                     from_bhnd(static_cast<const float*>(v.data() + (bi * h_kv + hk) * n * d), 1, 1, n, d),
                                     from_bhnd(o.data(), 1, 1, n, d), 0.2f, causal{},
                                     lse_view(l.data(), dextents<index_t, 3>(1, 1, n)), serial_executor{});
    CHECK(std::equal(o.begin(), o.end(), o1.begin() + (bi * h + hi) * n * d));
    CHECK(std::equal(l.begin(), l.end(), l1.begin() + (bi * h + hi) * n));
  }
  // Top-left causal with more keys than queries, and a window that hides
  // every key from the first rows: rows with nothing visible are 0 / -inf.
  run(o2, l2, serial_executor{}, sinks_window{0, 1, alignment::top_left});
  for (index_t i = 0; i < n; ++i) CHECK(std::isfinite(l2[std::size_t(i)]));
  std::vector<float> qs(std::size_t(5 * d), 0.5f), os(std::size_t(5 * d)), ls(5);
  std::vector<float> ks(std::size_t(3 * d), 0.25f), vs(std::size_t(3 * d), 1.0f);
  prefill_attention_with<E, float>(from_bhnd(static_cast<const float*>(qs.data()), 1, 1, 5, d),
                                   from_bhnd(static_cast<const float*>(ks.data()), 1, 1, 3, d),
                                   from_bhnd(static_cast<const float*>(vs.data()), 1, 1, 3, d),
                                   from_bhnd(os.data(), 1, 1, 5, d), 1.0f, causal{alignment::bottom_right},
                                   lse_view(ls.data(), dextents<index_t, 3>(1, 1, 5)), serial_executor{});
  for (index_t i = 0; i < 2; ++i) {  // bottom-right: rows 0 and 1 see no key
    CHECK(ls[std::size_t(i)] == neg_inf);
    for (index_t c = 0; c < d; ++c) CHECK(os[std::size_t(i * d + c)] == 0.0f);
  }
  for (index_t i = 2; i < 5; ++i)
    for (index_t c = 0; c < d; ++c) CHECK(os[std::size_t(i * d + c)] == 1.0f);  // V rows all 1: exact in bf16
}

// Every storage type (f16 and int8 widen exactly, times the row scale,
// then round once) and head dims past 512 (packed in slices of 512): the
// engine against the f32 engine on the same stored K/V, within the bound.
template <class E, class KV>
void storage_and_wide_heads(index_t d) {
  test::rng_t g(test::seed_for(67, std::uint64_t(d)));
  const index_t n_q = 70, n_kv = 90;
  const auto q = test::random_floats(g, std::size_t(n_q * d)), kf = test::random_floats(g, std::size_t(n_kv * d)),
             vf = test::random_floats(g, std::size_t(n_kv * d), -2, 2);
  stored_rows<KV> k(n_kv, d), v(n_kv, d);
  for (index_t j = 0; j < n_kv; ++j) {
    kv_storage_traits<KV>::template store_row<default_arch>(kf.data() + j * d, k.row(j), d);
    kv_storage_traits<KV>::template store_row<default_arch>(vf.data() + j * d, v.row(j), d);
  }
  using E4 = typename tensor4_view<const KV>::extents_type;
  const tensor4_view<const KV> kv_k(k.row(0), E4(1, 1, n_kv, d), {n_kv * k.stride(), n_kv * k.stride(), k.stride(), 1});
  const tensor4_view<const KV> kv_v(v.row(0), E4(1, 1, n_kv, d), {n_kv * v.stride(), n_kv * v.stride(), v.stride(), 1});
  std::vector<float> o16(std::size_t(n_q * d)), o32(o16.size());
  const float scale = 1.0f / std::sqrt(float(d));
  const auto qv = from_bhnd(q.data(), 1, 1, n_q, d);
  prefill_attention_with<E, KV>(qv, kv_k, kv_v, from_bhnd(o16.data(), 1, 1, n_q, d), scale, causal{}, lse_view{},
                                serial_executor{});
  prefill_attention_with<f32_engine<default_arch>, KV>(qv, kv_k, kv_v, from_bhnd(o32.data(), 1, 1, n_q, d), scale,
                                                       causal{}, lse_view{}, serial_executor{});
  // Tight: the f32 engine on the operands the engine multiplies (K and V
  // widened, times the row scale, rounded to bf16; q times scale rounded),
  // which leaves only P's rounding: u V + fp32.
  std::vector<float> kr(std::size_t(n_kv * d)), vr(kr.size()), qr(q.size()), ref(o16.size());
  double max_v = 0, max_logit = 0;
  for (index_t j = 0; j < n_kv; ++j) {
    kv_storage_traits<KV>::template load_row<default_arch>(k.row(j), kr.data() + j * d, d);
    kv_storage_traits<KV>::template load_row<default_arch>(v.row(j), vr.data() + j * d, d);
  }
  for (float& x : kr) x = round_bf16(x);
  for (float& x : vr) x = round_bf16(x), max_v = std::max(max_v, double(std::abs(x)));
  for (std::size_t i = 0; i < q.size(); ++i) qr[i] = round_bf16(q[i] * scale);
  for (index_t i = 0; i < n_q; ++i)
    for (index_t j = 0; j < n_kv; ++j) {
      double t = 0;
      for (index_t p = 0; p < d; ++p) t += double(qr[std::size_t(i * d + p)]) * kr[std::size_t(j * d + p)];
      max_logit = std::max(max_logit, std::abs(t));
    }
  prefill_attention_with<f32_engine<default_arch>, float>(
      from_bhnd(static_cast<const float*>(qr.data()), 1, 1, n_q, d), from_bhnd(static_cast<const float*>(kr.data()), 1, 1, n_kv, d),
      from_bhnd(static_cast<const float*>(vr.data()), 1, 1, n_kv, d), from_bhnd(ref.data(), 1, 1, n_q, d), 1.0f, causal{},
      lse_view{}, serial_executor{});
  INFO("engine " << E::name << " KV " << kv_storage_traits<KV>::name << " d " << d);
  CHECK(std::all_of(o16.begin(), o16.end(), [](float x) { return std::isfinite(x); }));
  CHECK(test::max_abs_diff(o16, ref) <= u_bf16 * max_v + 2 * test::attention_tolerance(max_logit, max_v));
  CHECK(test::max_abs_diff(o16, o32) > 0);  // rounded to bf16: not the f32 result
}

template <class E>
void every_storage() {
  for (index_t d : {5, 64, 600}) {
    storage_and_wide_heads<E, float>(d);
    storage_and_wide_heads<E, bf16>(d);
    storage_and_wide_heads<E, f16>(d);
    storage_and_wide_heads<E, q8>(d);
  }
}

// The 16-bit engine's name, in a template so that the branch naming a
// missing engine is discarded.
template <class Arch>
const char* bf16_engine_name() {
  if constexpr (has_bf16_engine<Arch>)
    return bf16_engine_for<Arch>::name;
  else
    return "f32";
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("engines: the AMX engine on the emulated tile unit against the double oracle",
                        "[kernels][engines]", emulated_amx) {
  sweep<TestType>(60, test::scaled(std::is_same_v<typename TestType::arch, scalar> ? 40 : 120));
}

TEMPLATE_LIST_TEST_CASE("engines: invariants of the emulated AMX engine", "[kernels][engines]", emulated_amx) {
  invariants<TestType>();
}

TEMPLATE_LIST_TEST_CASE("engines: every K/V storage type and head dims past 512 on the emulated AMX engine",
                        "[kernels][engines]", emulated_amx) {
  every_storage<TestType>();
}

TEST_CASE("engines: compute_precision selects the engine, and f32 is the old kernel bit for bit", "[kernels][engines]") {
  test::rng_t g(test::seed_for(62, 0));
  const index_t n = 200, d = 64;
  auto q = test::random_floats(g, std::size_t(2 * n * d)), k = test::random_floats(g, std::size_t(n * d)),
       v = test::random_floats(g, std::size_t(n * d));
  std::vector<float> a(q.size()), b(q.size());
  const auto call = [&](std::vector<float>& o, compute_precision c) {
    attention(from_bhnd(static_cast<const float*>(q.data()), 1, 2, n, d),
              from_bhnd(static_cast<const float*>(k.data()), 1, 1, n, d),
              from_bhnd(static_cast<const float*>(v.data()), 1, 1, n, d), from_bhnd(o.data(), 1, 2, n, d), 0.125f,
              causal{}, {}, serial_executor{}, {}, c);
  };
  call(a, compute_precision::f32);
  prefill_attention_with<f32_engine<default_arch>, float>(
      from_bhnd(static_cast<const float*>(q.data()), 1, 2, n, d), from_bhnd(static_cast<const float*>(k.data()), 1, 1, n, d),
      from_bhnd(static_cast<const float*>(v.data()), 1, 1, n, d), from_bhnd(b.data(), 1, 2, n, d), 0.125f, causal{},
      lse_view{}, serial_executor{});
  CHECK(a == b);
  CHECK(std::string(active_engine(compute_precision::f32)) == "f32");
  // The ranking (kernels/compute.hpp): AMX, else vdpbf16ps where it beats
  // the fp32 FMA on the targeted cores, else f32.
  const char* expected = LONGCTX_HAS_AMX                                    ? "amx-bf16"
                         : LONGCTX_HAS_AVX512_BF16 && LONGCTX_BF16_DOT_PAYS ? "avx512-bf16"
                                                                            : "f32";
  CHECK(std::string(active_engine<default_arch>(compute_precision::bf16)) ==
        (std::is_same_v<default_arch, avx512> ? expected : "f32"));
  if constexpr (!has_bf16_engine<default_arch>) {
    // No 16-bit engine in this build: bf16 computes in f32, and says so.
    call(b, compute_precision::bf16);
    CHECK(a == b);
    CHECK(std::string(active_engine(compute_precision::bf16)) == "f32");
  } else {
    CHECK(std::string(active_engine(compute_precision::bf16)) == bf16_engine_name<default_arch>());
  }
}

#if defined(LONGCTX_EXPECT_AMX)
static_assert(LONGCTX_HAS_AMX,
              "LONGCTX_ISA=amx but config.hpp saw no AMX flags: this build has no AMX engine");
#endif

// Hardware engines: hidden (run by ctest as kernels.engines.*_hardware,
// which reports them skipped where the CPU or the build lacks them).
#if LONGCTX_HAS_AVX512_BF16
// The engine's own V packing (vcvtne2ps2bf16 and a word interleave) against
// the shared layout code, word for word, on random tiles with odd key counts
// and widths: float rows (a float subnormal becomes a zero of its sign:
// vdpbf16ps reads a bf16 subnormal as that zero anyway) and bf16 rows.
template <class KV>
void pack_v_matches_shared_layout(std::uint64_t id, int cases) {
  constexpr index_t B = bf16_dot_engine::block_kv;
  test::rng_t g(test::seed_for(id, 0));
  for (int cs = 0; cs < cases; ++cs) {
    const index_t nk = test::uniform_int(g, 1, int(B)), d_v = test::uniform_int(g, 1, 100);
    const index_t ldv = d_v + test::uniform_int(g, 0, 5), dvp = bf16_dot_engine::v_ld(d_v);
    std::vector<float> src = test::random_floats(g, std::size_t(nk * ldv), -4.0f, 4.0f);
    for (int t = 0; t < 4; ++t)  // subnormals, infinities and a NaN at random places
      src[std::size_t(test::uniform_int(g, 0, int(nk * ldv) - 1))] =
          t == 0   ? 1e-39f
          : t == 1 ? -1e-40f
          : t == 2 ? -std::numeric_limits<float>::infinity()
                   : std::numeric_limits<float>::quiet_NaN();
    std::vector<KV> v(src.size());
    for (std::size_t i = 0; i < v.size(); ++i)
      if constexpr (std::is_same_v<KV, float>)
        v[i] = src[i];
      else
        v[i] = KV::from_float(src[i]);
    std::vector<bf16> got(std::size_t(B * dvp), bf16{0x5555}), want(got.size(), bf16{0x5555});
    bf16_dot_engine::pack_v<KV>(v.data(), ldv, d_v, nk, got.data());
    detail::pack_v_vnni<avx512>(v.data(), ldv, d_v, dvp, nk, B, want.data());
    for (std::size_t i = 0; i < got.size(); ++i) {
      const std::uint16_t w = want[i].bits,
                          expect = (w & 0x7f80) == 0 ? std::uint16_t(w & 0x8000) : w;
      INFO("case " << cs << " nk " << nk << " d_v " << d_v << " word " << i);
      REQUIRE(got[i].bits == (std::is_same_v<KV, float> ? expect : w));
    }
  }
}

TEST_CASE("engines: the AVX512_BF16 engine against the double oracle", "[.][hw_avx512_bf16]") {
  pack_v_matches_shared_layout<float>(65, test::scaled(200));
  pack_v_matches_shared_layout<bf16>(65, test::scaled(200));
  sweep<bf16_dot_engine>(63, test::scaled(300));
  invariants<bf16_dot_engine>();
  every_storage<bf16_dot_engine>();
}
#endif
#if LONGCTX_HAS_AMX
TEST_CASE("engines: the AMX engine on the tile unit against the double oracle", "[.][hw_amx]") {
  sweep<amx_engine<avx512, true>>(64, test::scaled(300));
  invariants<amx_engine<avx512, true>>();
  every_storage<amx_engine<avx512, true>>();
}
#endif

// Policies with compute_precision::bf16: the bounded cache's prefill and
// Infini-attention's local attention run the 16-bit engine (results within
// the bf16 bound of the f32 policy's); where the engine cannot run (an AMX
// build on a CPU without AMX), forward throws `unsupported` before the state
// changes.
TEST_CASE("engines: policies with bf16 compute, and a refused engine leaves the state unchanged",
          "[kernels][engines]") {
  test::rng_t g(test::seed_for(66, 0));
  const index_t h = 4, h_kv = 2, n = 300, d = 64;
  const auto q = test::random_floats(g, std::size_t(h * n * d)), k = test::random_floats(g, std::size_t(h_kv * n * d)),
             v = test::random_floats(g, std::size_t(h_kv * n * d));
  const sequence_input in{from_bhnd(q.data(), 1, h, n, d), from_bhnd(k.data(), 1, h_kv, n, d),
                          from_bhnd(v.data(), 1, h_kv, n, d)};
  std::vector<float> o32(q.size()), o16(q.size(), 5.0f), i32(q.size()), i16(q.size(), 5.0f);
  const attention_dims dims{1, h, h_kv, d, d};
  const tova p32{.budget = 512}, p16{.budget = 512, .compute = compute_precision::bf16};
  const infini m32{.segment = 128}, m16{.segment = 128, .compute = compute_precision::bf16};
  auto s32 = p32.make_state(dims), s16 = p16.make_state(dims);
  auto t32 = m32.make_state(dims), t16 = m16.make_state(dims);
  p32.forward(s32, in, from_bhnd(o32.data(), 1, h, n, d));
  m32.forward(t32, {in.q, in.k, in.v}, from_bhnd(i32.data(), 1, h, n, d));
  bool refused = false;
#if LONGCTX_HAS_AMX
  refused = !cpu_has_amx_bf16();
#endif
  if (refused) {
    const std::vector<float> before = o16;
    CHECK_THROWS_AS(p16.forward(s16, in, from_bhnd(o16.data(), 1, h, n, d)), unsupported);
    CHECK_THROWS_AS(m16.forward(t16, {in.q, in.k, in.v}, from_bhnd(i16.data(), 1, h, n, d)), unsupported);
    CHECK(s16.size() == 0);
    CHECK(s16.next_position() == 0);
    CHECK(t16.tokens_seen() == 0);
    CHECK(o16 == before);
    return;
  }
  p16.forward(s16, in, from_bhnd(o16.data(), 1, h, n, d));
  m16.forward(t16, {in.q, in.k, in.v}, from_bhnd(i16.data(), 1, h, n, d));
  CHECK(s16.size() == s32.size());
  // q, k in [-1, 1), d = 64, scale 1/8: A <= 8, so the bound is about 0.07 V;
  // the f32 policy is within fp32 rounding of the exact result.
  const double tol = std::expm1(4 * u_bf16 * 8.0) + 2 * u_bf16;
  CHECK(test::max_abs_diff(o16, o32) <= tol);
  CHECK(test::max_abs_diff(i16, i32) <= tol);
  if constexpr (has_bf16_engine<default_arch>) {
    CHECK(o16 != o32);  // the 16-bit engine ran
    CHECK(i16 != i32);
  } else {
    CHECK(o16 == o32);  // no 16-bit engine: bf16 computes in f32
    CHECK(i16 == i32);
  }
}
