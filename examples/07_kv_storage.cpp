// Example 07: K/V stored as bf16, f16 or int8 (q8: one fp32 scale per row,
// absmax / 127). Q, outputs and the softmax stay float; the kernels read the
// stored rows and convert them in registers (decode) or once per packed tile
// (prefill). One layer (h = h_kv = 8,
// d = 128, n = 4096 tokens, Gaussian Q/K/V): per storage type the K/V bytes,
// the decode time of one token over the whole cache, and the largest error
// of the decoded token and of the prefill's last 64 rows against the same
// attention in double precision on the float K/V, next to the bound the
// tests use: u (1 + 2 L) max|V| with u the type's unit roundoff (bf16 2^-8,
// f16 2^-11) and L = scale * max_j sum_p |q_p k_jp|; for int8, half a step
// per row: 2 L8 max|V| + max_j max|v_j| / 254 with L8 = scale max_j
// sum_p |q_p| max|k_j| / 254.
// Then the same keys with 8 of the 128 channels 20x the others (as LLM keys
// have): int8 dense caches with per-token key scales and with per-channel
// key scales (key_scales::per_channel), their error against a float cache.
//
//   example_07_kv_storage [--quick]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <longctx/attention.hpp>
#include <longctx/kernels/scale.hpp>
#include <longctx/policies/dense.hpp>
#include <longctx/simd/convert.hpp>

using namespace longctx;

namespace {

struct problem {
  index_t h = 8, n = 4096, d = 128, rows = 64;  // rows: the prefill rows checked
  std::vector<float> q, k, v;                   // (1, h, n, d) each
};

// Row i of head hh: causal softmax attention in double over the float K/V;
// also returns L for the bound.
std::vector<double> exact_row(const problem& p, index_t hh, index_t i, double scale, double& terms) {
  const float* qi = &p.q[std::size_t((hh * p.n + i) * p.d)];
  std::vector<double> s(std::size_t(i + 1)), o(std::size_t(p.d), 0.0);
  double m = -INFINITY, l = 0;
  for (index_t j = 0; j <= i; ++j) {
    const float* kj = &p.k[std::size_t((hh * p.n + j) * p.d)];
    double dot = 0, abs = 0;
    for (index_t c = 0; c < p.d; ++c) dot += double(qi[c]) * kj[c], abs += std::abs(double(qi[c]) * kj[c]);
    s[std::size_t(j)] = scale * dot;
    terms = std::max(terms, scale * abs);
    m = std::max(m, s[std::size_t(j)]);
  }
  for (index_t j = 0; j <= i; ++j) {
    const double w = std::exp(s[std::size_t(j)] - m);
    l += w;
    const float* vj = &p.v[std::size_t((hh * p.n + j) * p.d)];
    for (index_t c = 0; c < p.d; ++c) o[std::size_t(c)] += w * vj[c];
  }
  for (auto& x : o) x /= l;
  return o;
}

struct report {
  double bytes = 0, decode_ms = 0, decode_err = 0, prefill_err = 0, bound = 0;
};

template <class KV>
report run(const problem& p, thread_pool& pool, double unit_roundoff) {
  report r;
  const index_t h = p.h, n = p.n, d = p.d;
  // The cache: every row stored once (rounded to nearest even; int8 with
  // its scale in front of the row, which the views skip).
  using traits = kv_storage_traits<KV>;
  stored_rows<KV> k(h * n, d), v(h * n, d);
  for (index_t i = 0; i < h * n; ++i) {
    traits::template store_row<default_arch>(p.k.data() + i * d, k.row(i), d);
    traits::template store_row<default_arch>(p.v.data() + i * d, v.row(i), d);
  }
  r.bytes = double(k.buf.size() + v.buf.size()) * sizeof(KV);
  using E = typename tensor4_view<const KV>::extents_type;
  const index_t s = k.stride();
  const tensor4_view<const KV> kv(k.row(0), E(1, h, n, d), {h * n * s, n * s, s, 1});
  const tensor4_view<const KV> vv(v.row(0), E(1, h, n, d), {h * n * s, n * s, s, 1});
  const float scale = default_scale(d);

  // Decode the last token over the whole cache (median of 9 runs).
  std::vector<float> od(std::size_t(h * d));
  std::vector<double> times;
  for (int rep = 0; rep < 9; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    decode<default_arch, KV>(from_bhnd<dynamic_extent, const float>(p.q.data(), 1, h, n, d).tokens(n - 1, 1), kv, vv,
                             from_bhnd(od.data(), 1, h, 1, d), scale, no_mask{}, {}, pool);
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  r.decode_ms = times[times.size() / 2];

  // Causal prefill of the whole prompt.
  std::vector<float> op(p.q.size());
  attention<default_arch, KV>(from_bhnd<dynamic_extent, const float>(p.q.data(), 1, h, n, d), kv, vv,
                              from_bhnd(op.data(), 1, h, n, d), scale, causal{}, {}, pool);

  double max_v = 0, terms = 0;
  for (float x : p.v) max_v = std::max(max_v, double(std::abs(x)));
  for (index_t hh = 0; hh < h; ++hh)
    for (index_t i = n - p.rows; i < n; ++i) {
      const auto want = exact_row(p, hh, i, double(scale), terms);
      for (index_t c = 0; c < d; ++c) {
        r.prefill_err = std::max(r.prefill_err, std::abs(op[std::size_t((hh * n + i) * d + c)] - want[std::size_t(c)]));
        if (i == n - 1) r.decode_err = std::max(r.decode_err, std::abs(od[std::size_t(hh * d + c)] - want[std::size_t(c)]));
      }
    }
  r.bound = unit_roundoff * (1 + 2 * terms) * max_v;
  if constexpr (traits::row_prefix > 0) {  // int8: half a step of each row's own scale
    double l8 = 0, v8 = 0;
    for (index_t hh = 0; hh < h; ++hh)
      for (index_t j = 0; j < n; ++j) {
        double ka = 0, va = 0;
        for (index_t c = 0; c < d; ++c) {
          ka = std::max(ka, double(std::abs(p.k[std::size_t((hh * n + j) * d + c)])));
          va = std::max(va, double(std::abs(p.v[std::size_t((hh * n + j) * d + c)])));
        }
        v8 = std::max(v8, va / 254);
        for (index_t i = n - p.rows; i < n; ++i) {
          double q1 = 0;
          for (index_t c = 0; c < d; ++c) q1 += std::abs(double(p.q[std::size_t((hh * n + i) * d + c)]));
          l8 = std::max(l8, double(scale) * q1 * ka / 254);
        }
      }
    r.bound = 2 * l8 * max_v + v8;
  }
  return r;
}

// The prompt through a dense cache of KV (prefill in one call, then one
// decoded token): every output, (1, h, n, d).
template <class KV>
std::vector<float> through_cache(const problem& p, key_scales keys, thread_pool& pool) {
  const bounded_cache<full_rule, KV> cache{.keys = keys};
  const attention_dims dm{1, p.h, p.h, p.d, p.d};
  auto st = cache.make_state(dm);
  std::vector<float> out(p.q.size());
  const auto o = from_bhnd(out.data(), 1, p.h, p.n, p.d);
  const auto view = [&](const std::vector<float>& x) { return from_bhnd<dynamic_extent, const float>(x.data(), 1, p.h, p.n, p.d); };
  cache.forward(st, {view(p.q).tokens(0, p.n - 1), view(p.k).tokens(0, p.n - 1), view(p.v).tokens(0, p.n - 1)},
                o.tokens(0, p.n - 1), pool);
  cache.forward(st, {view(p.q).tokens(p.n - 1, 1), view(p.k).tokens(p.n - 1, 1), view(p.v).tokens(p.n - 1, 1)},
                o.tokens(p.n - 1, 1), pool);
  return out;
}

// rms and max |a - b|.
std::pair<double, double> difference(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0, mx = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double e = std::abs(double(a[i]) - b[i]);
    sum += e * e, mx = std::max(mx, e);
  }
  return {std::sqrt(sum / double(a.size())), mx};
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  problem p;
  if (quick) p.n = 512, p.rows = 16;
  std::mt19937 g(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto* a : {&p.q, &p.k, &p.v}) {
    a->resize(std::size_t(p.h * p.n * p.d));
    for (auto& x : *a) x = nd(g);
  }
  thread_pool pool(2);
  std::printf("backend: %s (fixed at compile time by -march/-m flags or LONGCTX_FORCE_ARCH)\n",
              longctx::default_arch::name);
  std::printf("longctx %s: K/V storage types, h = h_kv = %lld, d = %lld, n = %lld (Gaussian data)\n",
              version().string, (long long)p.h, (long long)p.d, (long long)p.n);
  std::printf("%-5s %10s %11s %14s %14s %14s\n", "kv", "K+V MB", "decode ms", "decode err", "prefill err",
              "bound");
  const auto print = [](const char* name, const report& r, bool bounded) {
    std::printf("%-5s %10.1f %11.3f %14.3e %14.3e %14s\n", name, r.bytes / 1e6, r.decode_ms, r.decode_err,
                r.prefill_err, bounded ? std::to_string(r.bound).substr(0, 9).c_str() : "-");
  };
  print("f32", run<float>(p, pool, 0.0), false);
  print("bf16", run<bf16>(p, pool, 0x1p-8), true);
  print("f16", run<f16>(p, pool, 0x1p-11), true);
  print("int8", run<q8>(p, pool, 0.0), true);
  std::printf("err: max |o - o_exact| over the decoded token and the prefill's last %lld rows, against double\n"
              "precision on the float K/V (f32: rounding of the fp32 kernels alone). decode: one token over all %lld\n"
              "rows, 2 threads, median of 9 (a hot cache here; bench_attention has cold ones).\n",
              (long long)p.rows, (long long)p.n);

  // Outlier key channels: per-token int8 spends each row's 255 steps on
  // them; per-channel scales divide them (by powers of two, calibrated on
  // the prefill) before the row is quantised and multiply the query instead.
  for (std::size_t r = 0; r < p.k.size() / std::size_t(p.d); ++r)
    for (std::size_t c = 0; c < std::size_t(p.d); c += 16) p.k[r * std::size_t(p.d) + c] *= 20;
  const auto exact = through_cache<float>(p, key_scales::per_token, pool);
  std::printf("\nKeys with 8 of %lld channels 20x the others, dense int8 caches against a float cache\n"
              "(prompt of %lld tokens in one call, then one decoded token; all outputs):\n",
              (long long)p.d, (long long)p.n - 1);
  std::printf("%-22s %12s %12s\n", "int8 keys", "rms err", "max err");
  for (const auto keys : {key_scales::per_token, key_scales::per_channel}) {
    const auto [rms, mx] = difference(through_cache<q8>(p, keys, pool), exact);
    std::printf("%-22s %12.3e %12.3e\n", keys == key_scales::per_token ? "per-token scales" : "per-channel scales", rms,
                mx);
  }
  return 0;
}
