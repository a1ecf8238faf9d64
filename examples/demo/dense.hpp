// Demo section: exact attention (the kernel every method builds on).
// Accuracy against the double oracle, prefill throughput, decode bandwidth
// per K/V storage type, as fractions of limits measured here and now
// (longctx/runtime/limits.hpp), not constants.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <span>
#include <vector>

#include <longctx/longctx.hpp>
#include <longctx/reference.hpp>

inline void demo_dense(bool quick) {
  using longctx::index_t;
  std::printf("\n== Exact attention (tiled prefill, split-KV decode) ==\n");
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto rnd = [&](std::size_t n) {
    std::vector<float> x(n);
    for (auto& v : x) v = u(rng);
    return x;
  };
  longctx::thread_pool pool;

  {  // accuracy: odd shapes, GQA, causal, against double
    const index_t h = 4, h_kv = 2, n = 333, d = 111;
    auto q = rnd(std::size_t(h * n * d)), k = rnd(std::size_t(h_kv * n * d)), v = rnd(std::size_t(h_kv * n * d));
    std::vector<float> o(q.size());
    longctx::attention(longctx::from_bhnd(q.data(), 1, h, n, d), longctx::from_bhnd(k.data(), 1, h_kv, n, d),
                       longctx::from_bhnd(v.data(), 1, h_kv, n, d), longctx::from_bhnd(o.data(), 1, h, n, d),
                       0.3f, longctx::causal{}, {}, pool);
    double err = 0;
    for (index_t hi = 0; hi < h; ++hi) {
      const auto ref = longctx::reference::attention_head(
          longctx::matrix_view<const float>(longctx::from_bhnd(q.data(), 1, h, n, d).head(0, hi)),
          longctx::matrix_view<const float>(longctx::from_bhnd(k.data(), 1, h_kv, n, d).head(0, hi / 2)),
          longctx::matrix_view<const float>(longctx::from_bhnd(v.data(), 1, h_kv, n, d).head(0, hi / 2)), 0.3,
          longctx::causal{});
      for (index_t i = 0; i < n * d; ++i) err = std::max(err, std::abs(ref.o[std::size_t(i)] - o[std::size_t(hi * n * d + i)]));
    }
    std::printf("accuracy  h=%ld h_kv=%ld n=%ld d=%ld causal: max abs error vs double %.2e\n", long(h), long(h_kv),
                long(n), long(d), err);
  }

  const index_t H = 8, D = 128;
  const double peak = longctx::fma_peak(pool, int(pool.concurrency()));
  {  // prefill throughput
    const index_t n = quick ? 1024 : 4096;
    auto q = rnd(std::size_t(H * n * D)), k = rnd(q.size()), v = rnd(q.size());
    std::vector<float> o(q.size());
    double best = 1e30;
    for (int rep = 0; rep < (quick ? 1 : 3); ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      longctx::attention(longctx::from_bhnd<128>(q.data(), 1, H, n, D), longctx::from_bhnd<128>(k.data(), 1, H, n, D),
                         longctx::from_bhnd<128>(v.data(), 1, H, n, D), longctx::from_bhnd<128>(o.data(), 1, H, n, D),
                         1.0f / std::sqrt(float(D)), longctx::causal{}, {}, pool);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    const double flops = 4.0 * H * D * (double(n) * (n + 1) / 2);
    std::printf("prefill   causal H=%ld d=%ld n=%ld, %zu threads: %.1f ms, %.1f GFLOP/s (%.0f%% of the %.0f GFLOP/s\n"
                "          fp32 FMA peak measured just now)\n",
                long(H), long(D), long(n), pool.concurrency(), best * 1e3, flops / best / 1e9, 100 * flops / best / peak,
                peak / 1e9);
  }
  {  // decode bandwidth per storage type, against a plain read of the same bytes
    const index_t n_kv = quick ? 4096 : 32768;
    const auto q = rnd(std::size_t(H * D)), k = rnd(std::size_t(H * n_kv * D)), v = rnd(k.size());
    std::vector<float> o(q.size());
    const std::vector<float> plain(2 * k.size(), 1.0f);  // as many bytes as the f32 K and V
    const double read = longctx::read_bandwidth(pool, int(pool.concurrency()), std::span<const float>(plain));
    std::printf("decode    H=%ld d=%ld n_kv=%ld, %zu threads; a plain vector sum of as many bytes as the f32 K/V reads %.1f GB/s:\n",
                long(H), long(D), long(n_kv), pool.concurrency(), read / 1e9);
    const auto run = [&]<class KV>(KV) {
      std::vector<KV> ks(k.size()), vs(v.size());
      longctx::from_float_row<longctx::default_arch>(k.data(), ks.data(), index_t(k.size()));
      longctx::from_float_row<longctx::default_arch>(v.data(), vs.data(), index_t(v.size()));
      double best = 1e30;
      for (int rep = 0; rep < (quick ? 2 : 5); ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        longctx::decode<longctx::default_arch, KV>(
            longctx::from_bhnd<128>(q.data(), 1, H, 1, D), longctx::from_bhnd<128, const KV>(ks.data(), 1, H, n_kv, D),
            longctx::from_bhnd<128, const KV>(vs.data(), 1, H, n_kv, D), longctx::from_bhnd<128>(o.data(), 1, H, 1, D),
            1.0f / std::sqrt(float(D)), longctx::no_mask{}, {}, pool);
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      const double bytes = 2.0 * double(H * n_kv * D) * sizeof(KV);
      std::printf("          K/V %-4s %4.0f MB: %6.2f ms, %5.1f GB/s (%3.0f%% of the plain read)\n",
                  longctx::kv_storage_traits<KV>::name, bytes / 1e6, best * 1e3, bytes / best / 1e9,
                  100 * bytes / best / read);
    };
    run(float{});
    run(longctx::bf16{});
    run(longctx::f16{});
  }
}
