// Example 07: K/V stored as bf16 or f16. Q, outputs and the softmax stay
// float; the kernels read the 16-bit rows and convert them in registers
// (decode) or once per packed tile (prefill). One layer (h = h_kv = 8,
// d = 128, n = 4096 tokens, Gaussian Q/K/V): per storage type the K/V bytes,
// the decode time of one token over the whole cache, and the largest error
// of the decoded token and of the prefill's last 64 rows against the same
// attention in double precision on the float K/V, next to the bound the
// tests use: u (1 + 2 L) max|V| with u the type's unit roundoff (bf16 2^-8,
// f16 2^-11) and L = scale * max_j sum_p |q_p k_jp|.
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
  std::vector<KV> k(p.k.size()), v(p.v.size());  // the cache: rounded once, to nearest even
  from_float_row<default_arch>(p.k.data(), k.data(), index_t(k.size()));
  from_float_row<default_arch>(p.v.data(), v.data(), index_t(v.size()));
  r.bytes = double(k.size() + v.size()) * sizeof(KV);
  const auto kv = from_bhnd<dynamic_extent, const KV>(k.data(), 1, h, n, d);
  const auto vv = from_bhnd<dynamic_extent, const KV>(v.data(), 1, h, n, d);
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
  return r;
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
  std::printf("longctx %s, backend %s: K/V storage types, h = h_kv = %lld, d = %lld, n = %lld (Gaussian data)\n",
              version().string, default_arch::name, (long long)p.h, (long long)p.d, (long long)p.n);
  std::printf("%-5s %10s %11s %14s %14s %14s\n", "kv", "K+V MB", "decode ms", "decode err", "prefill err",
              "bound (16-bit)");
  const auto print = [](const char* name, const report& r, bool bounded) {
    std::printf("%-5s %10.1f %11.3f %14.3e %14.3e %14s\n", name, r.bytes / 1e6, r.decode_ms, r.decode_err,
                r.prefill_err, bounded ? std::to_string(r.bound).substr(0, 9).c_str() : "-");
  };
  print("f32", run<float>(p, pool, 0.0), false);
  print("bf16", run<bf16>(p, pool, 0x1p-8), true);
  print("f16", run<f16>(p, pool, 0x1p-11), true);
  std::printf("err: max |o - o_exact| over the decoded token and the prefill's last %lld rows, against double\n"
              "precision on the float K/V (f32: rounding of the fp32 kernels alone). decode: one token over all %lld\n"
              "rows, 2 threads, median of 9 (a hot cache here; bench_attention has cold ones).\n",
              (long long)p.rows, (long long)p.n);
  return 0;
}
