// Demo section: RMT. Streams 1M+ tokens (quick: 16k) through the small example
// backbone in segments of 512 rows with 10 memory tokens; prints tokens/s, the
// constant memory size, and the compute ratio against full causal attention
// at that length from the FLOPs the backbone counts. Plus a check that
// token-by-token streaming equals whole segments.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <longctx/longctx.hpp>
#include <longctx/models/rmt.hpp>
#include <longctx/models/rmt_backbone.hpp>

inline void demo_rmt(bool quick) {
  using longctx::index_t;
  std::printf("\n== RMT: memory tokens with segment recurrence ==\n");
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  longctx::thread_pool pool(2);
  const longctx::rmt_backbone_config cfg{.width = 64, .heads = 4, .layers = 2};
  longctx::rmt_reference_backbone<> model(cfg, &pool);
  const index_t w = cfg.width;
  const longctx::rmt policy{.memory = 10, .segment_budget = 512};
  std::vector<float> init(std::size_t(policy.memory * w));
  for (auto& x : init) x = u(rng);
  auto state = policy.make_state(model, longctx::make_matrix<longctx::dynamic_extent, const float>(init.data(), policy.memory, w));

  const index_t tokens = quick ? 16384 : (index_t(1) << 20), chunk = 65536;
  std::vector<float> in(std::size_t(chunk * w)), out(in.size());
  for (auto& x : in) x = u(rng);  // the same embeddings every chunk: generation is not what is timed
  const auto t0 = std::chrono::steady_clock::now();
  auto last_report = t0;  // the full run takes a while: a progress line every 5 s or so
  for (index_t done = 0; done < tokens; done += chunk) {
    const index_t n = std::min(chunk, tokens - done);
    policy.forward(state, longctx::make_matrix<longctx::dynamic_extent, const float>(in.data(), n, w),
                   longctx::make_matrix(out.data(), n, w));
    const auto now = std::chrono::steady_clock::now();
    if (!quick && done + n < tokens && now - last_report >= std::chrono::seconds(5)) {
      std::printf("          ... %ld of %ld tokens, %.0f s\n", long(done + n), long(tokens),
                  std::chrono::duration<double>(now - t0).count());
      std::fflush(stdout);
      last_report = now;
    }
  }
  policy.flush(state);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double N = double(tokens), flops = model.flops();
  const double full = model.linear_flops(tokens) + model.attention_flops(N * (N + 1) / 2);
  std::printf("stream    %ld tokens, %llu segments (L = %ld: %ld memory + %ld content + %ld memory), width %ld, "
              "%ld layers, 2 threads\n",
              long(tokens), static_cast<unsigned long long>(state.segments()), long(policy.segment_budget),
              long(policy.memory), long(policy.content()), long(policy.memory), long(w), long(cfg.layers));
  std::printf("          %.2f s, %.0f tokens/s, %.2f GFLOP/s counted\n", secs, N / secs, flops / secs / 1e9);
  std::printf("memory    %zu bytes (10 x %ld fp32), constant over the stream\n", state.memory_bytes(), long(w));
  std::printf("compute   RMT %.3g FLOP vs full causal attention over %ld tokens %.3g FLOP: %.1fx less\n", flops,
              long(tokens), full, full / flops);

  // Token-by-token == whole segments (per-segment KV cache in the backbone).
  longctx::rmt_reference_backbone<> small({.width = 32, .heads = 2, .layers = 2});
  const longctx::rmt sp{.memory = 4, .segment_budget = 64};
  std::vector<float> mem0(4 * 32), x(150 * 32), yw(x.size()), yt(x.size());
  for (auto& v : mem0) v = u(rng);
  for (auto& v : x) v = u(rng);
  auto cm = [](const float* p, index_t n, index_t c) { return longctx::make_matrix<longctx::dynamic_extent, const float>(p, n, c); };
  auto a = sp.make_state(small, cm(mem0.data(), 4, 32)), b = sp.make_state(small, cm(mem0.data(), 4, 32));
  sp.forward(a, cm(x.data(), 150, 32), longctx::make_matrix(yw.data(), 150, 32));
  for (index_t i = 0; i < 150; ++i) sp.forward(b, cm(x.data() + i * 32, 1, 32), longctx::make_matrix(yt.data() + i * 32, 1, 32));
  double diff = 0;
  for (std::size_t i = 0; i < x.size(); ++i) diff = std::max(diff, double(std::abs(yw[i] - yt[i])));
  std::printf("streaming token-by-token vs whole segments: max |diff| %.1e\n", diff);
}
