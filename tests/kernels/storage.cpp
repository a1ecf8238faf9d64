// Prefill and decode with bf16 / f16 / int8 (q8) K/V against the double oracle on
// random shapes for every compiled backend. Two checks per row:
//  - against the oracle on the stored values (K/V rounded to the type, then
//    exact in double): the fp32 tolerance, since loads convert exactly;
//  - against the oracle on the caller's float K/V: the storage tolerance
//    below plus the fp32 term.
// Storage tolerance, u the type's unit roundoff (bf16 2^-8, f16 2^-11):
// each stored value is within u of its float, so a logit moves by at most
// u * L, L = scale * sum_p |q_p k_p| (its absolute-term bound); a softmax
// row moves o by at most 2 max|delta s| max|V|, and V's own rounding adds
// u max|V|:  |delta o| <= u (1 + 2 L) max|V|.
// int8 (q8) rows: each value is within a half step, max_row|x| / 254, of
// its float, so with L8 = scale max_j sum_p |q_p| max_p|k_jp| / 254 and
// V8 = max_j max_c|v_jc| / 254:  |delta o| <= 2 L8 max|V| + V8.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include <longctx/attention.hpp>
#include <longctx/reference.hpp>

#include "../support/support.hpp"

using namespace longctx;

namespace {

template <class T>
constexpr double unit_roundoff = std::is_same_v<T, bf16> ? 0x1p-8 : 0x1p-11;

template <class T>
struct stored4 {  // (b, h, n, d) rows in T (with their prefixes), and the same values as floats
  stored_rows<T> rows;
  std::vector<float> rounded;
  index_t b, h, n, d;
  stored4(const std::vector<float>& x, index_t b_, index_t h_, index_t n_, index_t d_)
      : rows(b_ * h_ * n_, d_), rounded(x.size()), b(b_), h(h_), n(n_), d(d_) {
    for (index_t r = 0; r < b * h * n; ++r) {
      kv_storage_traits<T>::template store_row<default_arch>(x.data() + r * d, rows.row(r), d);
      kv_storage_traits<T>::template load_row<default_arch>(rows.row(r), rounded.data() + r * d, d);
    }
  }
  tensor4_view<const T> view() const {
    using E = typename tensor4_view<const T>::extents_type;
    const index_t s = rows.stride();
    return tensor4_view<const T>(rows.row(0), E(b, h, n, d), {h * n * s, n * s, s, 1});
  }
};

template <class Arch, class T>
void check_case(test::rng_t& g, bool decode_path, double& worst_ratio) {
  static const std::vector<int> dims{1, 2, 7, 8, 16, 17, 59, 64, 111, 128};
  const index_t b = test::uniform_int(g, 1, 2), hk = test::uniform_int(g, 1, 2), group = test::uniform_int(g, 1, 3);
  const index_t h = hk * group, d = dims[std::size_t(test::uniform_int(g, 0, 9))];
  const index_t dv = test::uniform_int(g, 0, 2) ? d : dims[std::size_t(test::uniform_int(g, 0, 9))];
  const index_t nkv = test::uniform_int(g, 1, 300), nq = decode_path ? test::uniform_int(g, 1, 3) : test::uniform_int(g, 1, 200);
  const float scale = std::vector<float>{1, 3, 10}[std::size_t(test::uniform_int(g, 0, 2))] / std::sqrt(float(d));
  const bool causal_mask = test::uniform_int(g, 0, 1);
  INFO("arch " << Arch::name << " type " << kv_storage_traits<T>::name << (decode_path ? " decode" : " prefill")
               << " b " << b << " h " << h << " h_kv " << hk << " n_q " << nq << " n_kv " << nkv << " d " << d
               << " d_v " << dv << " scale " << scale << (causal_mask ? " causal" : ""));
  const auto qf = test::random_floats(g, std::size_t(b * h * nq * d));
  const auto kf = test::random_floats(g, std::size_t(b * hk * nkv * d));
  const auto vf = test::random_floats(g, std::size_t(b * hk * nkv * dv), -2, 2);
  const stored4<T> k(kf, b, hk, nkv, d), v(vf, b, hk, nkv, dv);
  std::vector<float> o(std::size_t(b * h * nq * dv));
  const auto qv = from_bhnd<dynamic_extent, const float>(qf.data(), b, h, nq, d);
  const auto ov = from_bhnd(o.data(), b, h, nq, dv);
  const auto run = [&](const auto& m) {
    if (decode_path)
      decode<Arch, T>(qv, k.view(), v.view(), ov, scale, m);
    else
      attention<Arch, T>(qv, k.view(), v.view(), ov, scale, m);
  };
  causal_mask ? run(causal{}) : run(no_mask{});
  const double u = unit_roundoff<T>;
  for (index_t bi = 0; bi < b; ++bi)
    for (index_t hi = 0; hi < h; ++hi) {
      const index_t hj = hi / group;
      const auto head = [&](const std::vector<float>& x, index_t heads, index_t n, index_t dim, index_t which) {
        return matrix_view<const float>(from_bhnd<dynamic_extent, const float>(x.data(), b, heads, n, dim).head(bi, which));
      };
      const auto oracle = [&](const std::vector<float>& kk, const std::vector<float>& vv) {
        const auto q_h = head(qf, h, nq, d, hi), k_h = head(kk, hk, nkv, d, hj), v_h = head(vv, hk, nkv, dv, hj);
        return causal_mask ? reference::attention_head(q_h, k_h, v_h, double(scale), causal{})
                           : reference::attention_head(q_h, k_h, v_h, double(scale), no_mask{});
      };
      const auto on_stored = oracle(k.rounded, v.rounded), on_float = oracle(kf, vf);
      double max_logit = 0, max_v = 0, terms = 0;
      for (double x : on_stored.logits)
        if (std::isfinite(x)) max_logit = std::max(max_logit, std::abs(x));
      for (index_t j = 0; j < nkv; ++j) {
        for (index_t c = 0; c < dv; ++c) max_v = std::max(max_v, double(std::abs(vf[std::size_t(((bi * hk + hj) * nkv + j) * dv + c)])));
        for (index_t i = 0; i < nq; ++i) {
          double t = 0;
          for (index_t p = 0; p < d; ++p)
            t += std::abs(double(qf[std::size_t(((bi * h + hi) * nq + i) * d + p)]) * kf[std::size_t(((bi * hk + hj) * nkv + j) * d + p)]);
          terms = std::max(terms, double(scale) * t);
        }
      }
      const double tol32 = test::attention_tolerance(max_logit, max_v);
      double tol_store = u * (1 + 2 * terms) * max_v + tol32;
      if constexpr (std::is_same_v<T, q8>) {  // half a quantisation step per row
        double l8 = 0, v8 = 0;
        for (index_t j = 0; j < nkv; ++j) {
          double ka = 0, va = 0;
          for (index_t p = 0; p < d; ++p) ka = std::max(ka, double(std::abs(kf[std::size_t(((bi * hk + hj) * nkv + j) * d + p)])));
          for (index_t c = 0; c < dv; ++c) va = std::max(va, double(std::abs(vf[std::size_t(((bi * hk + hj) * nkv + j) * dv + c)])));
          v8 = std::max(v8, va / 254);
          for (index_t i = 0; i < nq; ++i) {
            double q1 = 0;
            for (index_t p = 0; p < d; ++p) q1 += std::abs(double(qf[std::size_t(((bi * h + hi) * nq + i) * d + p)]));
            l8 = std::max(l8, double(scale) * q1 * ka / 254);
          }
        }
        tol_store = 2 * l8 * max_v + v8 + tol32;
      }
      for (index_t i = 0; i < nq; ++i) {
        if (std::isinf(on_stored.lse[std::size_t(i)])) continue;  // fully masked: covered by the float tests
        double e_stored = 0, e_float = 0;
        for (index_t c = 0; c < dv; ++c) {
          const double x = o[std::size_t(((bi * h + hi) * nq + i) * dv + c)];
          e_stored = std::max(e_stored, std::abs(x - on_stored.o[std::size_t(i * dv + c)]));
          e_float = std::max(e_float, std::abs(x - on_float.o[std::size_t(i * dv + c)]));
        }
        INFO("head " << hi << " row " << i << " tol32 " << tol32 << " tol_store " << tol_store);
        REQUIRE(e_stored <= tol32);
        REQUIRE(e_float <= tol_store);
        worst_ratio = std::max(worst_ratio, e_float / tol_store);
      }
    }
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("attention and decode with bf16 / f16 / int8 K/V against the double oracle",
                        "[kernels][storage]", test::tested_archs) {
  using Arch = TestType;
  const int cases = test::scaled(40);
  double worst_bf16 = 0, worst_f16 = 0, worst_q8 = 0;
  for (int c = 0; c < cases; ++c) {
    test::rng_t g(test::seed_for(310, std::uint64_t(c)));
    check_case<Arch, bf16>(g, c % 2 == 0, worst_bf16);
    check_case<Arch, f16>(g, c % 2 == 1, worst_f16);
    check_case<Arch, q8>(g, c % 2 == 0, worst_q8);
  }
  // The storage bound is not vacuous: random data reach a visible part of it.
  INFO("worst error / storage tolerance: bf16 " << worst_bf16 << " f16 " << worst_f16 << " int8 " << worst_q8);
  REQUIRE(worst_bf16 > 0.01);
  REQUIRE(worst_f16 > 0.01);
  REQUIRE(worst_q8 > 0.01);
}
