// Demo section: exact attention (the kernel every method builds on).
// Accuracy against the double oracle, prefill throughput, decode bandwidth
// per K/V storage type, as fractions of limits measured here and now
// (longctx/kernels/machine_limits.hpp), not constants.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <span>
#include <vector>

#include <longctx/longctx.hpp>
#include <longctx/reference.hpp>

// The same prefill with bf16 K/V and bf16 compute, where the build selects a
// 16-bit engine (longctx/kernels/compute.hpp): time against the f32 run,
// rate against that engine's peak, difference from the f32 output.
template <class Pool>
void demo_bf16_prefill(Pool& pool, const std::vector<float>& q, const std::vector<float>& kf,
                       const std::vector<float>& vf, const std::vector<float>& o32, longctx::index_t n,
                       double f32_seconds, bool quick) {
  using longctx::index_t;
  constexpr index_t H = 8, D = 128;
  const auto bf16_engine = longctx::compute_precision::bf16;
  const char* engine = longctx::active_engine(bf16_engine);
  if constexpr (!longctx::has_bf16_engine<longctx::default_arch>) {
#if LONGCTX_HAS_AVX512_BF16
    // Compiled, but not selected (LONGCTX_BF16_DOT_PAYS = 0): show why.
    const int threads = int(pool.concurrency());
    const double dot = longctx::bf16_dot_peak(pool, threads),
                 fma = longctx::fma_peak(pool, threads);
    std::printf("prefill   bf16 compute runs in f32 here: without AMX flags the only 16-bit\n"
                "          engine is vdpbf16ps, and on the cores these flags target\n"
                "          (AVX512_FP16: Intel's) it runs below the fp32 FMA (%.0f against\n"
                "          %.0f GFLOP/s, measured just now); see README, 16-bit compute\n",
                dot / 1e9, fma / 1e9);
#else
    std::printf("prefill   bf16 compute: no 16-bit engine in this build (AVX512_BF16 or AMX flags), so it would\n"
                "          run in f32; see README, 16-bit compute\n");
#endif
    return;
  } else {
    std::vector<longctx::bf16> k(kf.size()), v(vf.size());
    for (std::size_t i = 0; i < k.size(); ++i) k[i] = longctx::bf16::from_float(kf[i]), v[i] = longctx::bf16::from_float(vf[i]);
    std::vector<float> o(o32.size());
    double best = 1e30;
    try {
      for (int rep = 0; rep < (quick ? 1 : 3); ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        longctx::attention<longctx::default_arch, longctx::bf16>(
            longctx::from_bhnd<128>(q.data(), 1, H, n, D), longctx::from_bhnd<128>(k.data(), 1, H, n, D),
            longctx::from_bhnd<128>(v.data(), 1, H, n, D), longctx::from_bhnd<128>(o.data(), 1, H, n, D),
            1.0f / std::sqrt(float(D)), longctx::causal{}, {}, pool, {}, bf16_engine);
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
    } catch (const longctx::unsupported& e) {
      std::printf("prefill   bf16 compute: %s\n", e.what());
      return;
    }
    double diff = 0;
    for (std::size_t i = 0; i < o.size(); ++i) diff = std::max(diff, double(std::abs(o[i] - o32[i])));
    const int threads = int(pool.concurrency());
    double peak = 0;
    // Each peak exists only where its instructions are compiled; this branch
    // only where one of them is (a qualified name is looked up even here).
#if LONGCTX_HAS_AMX
    peak = longctx::amx_peak(pool, threads);
#elif LONGCTX_HAS_AVX512_BF16
    peak = longctx::bf16_dot_peak(pool, threads);
#endif
    const double flops = 4.0 * H * D * (double(n) * (n + 1) / 2);
    std::printf("prefill   the same with bf16 K/V and bf16 compute (engine %s): %.1f ms, %.2fx the f32 time,\n"
                "          %.1f GFLOP/s (%.0f%% of the %.0f GFLOP/s %s peak measured just now); max |o - o_f32| %.1e\n",
                engine, best * 1e3, best / f32_seconds, flops / best / 1e9, 100 * flops / best / peak, peak / 1e9,
                engine, diff);
  }
}

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
    demo_bf16_prefill(pool, q, k, v, o, n, best, quick);
  }
  {  // decode bandwidth per storage type, against a plain read of the same bytes
    const index_t n_kv = quick ? 4096 : 32768;
    const auto q = rnd(std::size_t(H * D)), k = rnd(std::size_t(H * n_kv * D)), v = rnd(k.size());
    std::vector<float> o(q.size());
    const std::vector<float> plain(2 * k.size(), 1.0f);  // as many bytes as the f32 K and V
    const auto read = [&] { return longctx::read_bandwidth(pool, int(pool.concurrency()), std::span<const float>(plain)); };
    std::printf("decode    H=%ld d=%ld n_kv=%ld, %zu threads, medians of 5; each against a plain vector sum of as many\n"
                "          bytes as the f32 K/V, measured just before it:\n",
                long(H), long(D), long(n_kv), pool.concurrency());
    const auto run = [&]<class KV>(KV) {
      using traits = longctx::kv_storage_traits<KV>;
      longctx::stored_rows<KV> ks(H * n_kv, D), vs(H * n_kv, D);  // rows stored once (int8: with a scale each)
      for (index_t i = 0; i < H * n_kv; ++i) {
        traits::template store_row<longctx::default_arch>(k.data() + i * D, ks.row(i), D);
        traits::template store_row<longctx::default_arch>(v.data() + i * D, vs.row(i), D);
      }
      const auto stored_view = [&](const longctx::stored_rows<KV>& r) {
        using E = typename longctx::tensor4_view<const KV>::extents_type;
        const index_t s = r.stride();
        return longctx::tensor4_view<const KV>(r.row(0), E(1, H, n_kv, D), {H * n_kv * s, n_kv * s, s, 1});
      };
      const double plain_bw = read();
      std::vector<double> times;
      for (int rep = 0; rep < 5; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        longctx::decode<longctx::default_arch, KV>(
            longctx::from_bhnd<128>(q.data(), 1, H, 1, D), stored_view(ks), stored_view(vs),
            longctx::from_bhnd<128>(o.data(), 1, H, 1, D), 1.0f / std::sqrt(float(D)), longctx::no_mask{}, {}, pool);
        times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(times.begin(), times.end());
      const double t = times[2], bytes = double(ks.buf.size() + vs.buf.size()) * sizeof(KV);
      std::printf("          K/V %-4s %4.0f MB: %6.2f ms, %5.1f GB/s (%3.0f%% of the plain read's %.1f GB/s)\n",
                  longctx::kv_storage_traits<KV>::name, bytes / 1e6, t * 1e3, bytes / t / 1e9, 100 * bytes / t / plain_bw,
                  plain_bw / 1e9);
    };
    run(float{});
    run(longctx::bf16{});
    run(longctx::f16{});
    run(longctx::q8{});
  }
}
