// Recurrent Memory Transformer over an unbounded stream: 1M+ tokens through a
// small example backbone in segments of 512 rows with 10 memory tokens, as in
// the 1M/2M-token RMT report. Prints tokens/s, the (constant) memory size and
// the compute ratio against full causal attention at the same length, from
// FLOPs counted by the backbone. Also shows token-by-token streaming and a
// memory snapshot. Usage: example_04_rmt_segments [--quick] [--tokens N]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include <longctx/longctx.hpp>
#include <longctx/models/rmt.hpp>
#include <longctx/models/rmt_backbone.hpp>

using namespace longctx;

int main(int argc, char** argv) {
  bool quick = false;
  index_t tokens = 1 << 20;
  for (int a = 1; a < argc; ++a) {
    if (!std::strcmp(argv[a], "--quick")) quick = true;
    else if (!std::strcmp(argv[a], "--tokens") && a + 1 < argc) tokens = std::atol(argv[++a]);
  }
  if (quick) tokens = 16384;

  // The user's model: here the library's small example backbone (2 pre-norm
  // blocks, width 64, 4 heads), attention through the exact kernel.
  thread_pool pool(2);
  const rmt_backbone_config cfg{.width = 64, .heads = 4, .layers = 2};
  rmt_reference_backbone<> model(cfg, &pool);
  const index_t w = cfg.width;

  // Decoder layout [read; segment; write]: 512 packed rows = 10 + 492 + 10.
  const rmt policy{.memory = 10, .segment_budget = 512};
  std::mt19937 g(42);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> init(std::size_t(policy.memory * w));  // learned in a real model
  for (auto& x : init) x = u(g);
  auto state = policy.make_state(model, make_matrix<dynamic_extent, const float>(init.data(), policy.memory, w));

  // Stream the input in chunks of 64k token embeddings (a real model would
  // embed token ids here); outputs come back without the memory rows.
  const index_t chunk = 65536;
  std::vector<float> in(std::size_t(chunk * w)), out(std::size_t(chunk * w));
  const auto t0 = std::chrono::steady_clock::now();
  for (index_t done = 0; done < tokens;) {
    const index_t n = std::min(chunk, tokens - done);
    for (index_t i = 0; i < n * w; ++i) in[std::size_t(i)] = u(g);
    policy.forward(state, make_matrix<dynamic_extent, const float>(in.data(), n, w), make_matrix(out.data(), n, w));
    done += n;
  }
  policy.flush(state);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const double rmt_flops = model.flops();
  const double N = double(tokens);
  const double full_flops = model.linear_flops(tokens) + model.attention_flops(N * (N + 1) / 2);
  std::printf("RMT: %ld tokens in %llu segments of %ld content tokens (L = %ld, m = %ld), %.2f s\n", long(tokens),
              static_cast<unsigned long long>(state.segments()), long(policy.content()), long(policy.segment_budget),
              long(policy.memory), secs);
  std::printf("  throughput      %.0f tokens/s (%.2f GFLOP/s counted, 2 threads)\n", N / secs, rmt_flops / secs / 1e9);
  std::printf("  memory state    %zu bytes (m x width fp32), the same after every segment\n", state.memory_bytes());
  std::printf("  compute         %.3g FLOP; full causal attention over %ld tokens: %.3g FLOP\n", rmt_flops,
              long(tokens), full_flops);
  std::printf("  ratio           full / RMT = %.1fx (full attention at this rate: ~%.0f s)\n",
              full_flops / rmt_flops, full_flops / (rmt_flops / secs));

  // Token-by-token streaming gives the same outputs as whole segments.
  rmt_reference_backbone<> small({.width = 32, .heads = 2, .layers = 2});
  const rmt sp{.memory = 4, .segment_budget = 64};
  std::vector<float> mem0(std::size_t(4 * 32)), x(std::size_t(200 * 32)), y_whole(x.size()), y_tok(x.size());
  for (auto& v : mem0) v = u(g);
  for (auto& v : x) v = u(g);
  auto a = sp.make_state(small, make_matrix<dynamic_extent, const float>(mem0.data(), 4, 32));
  auto b = sp.make_state(small, make_matrix<dynamic_extent, const float>(mem0.data(), 4, 32));
  sp.forward(a, make_matrix<dynamic_extent, const float>(x.data(), 200, 32), make_matrix(y_whole.data(), 200, 32));
  for (index_t i = 0; i < 200; ++i)
    sp.forward(b, make_matrix<dynamic_extent, const float>(x.data() + i * 32, 1, 32),
               make_matrix(y_tok.data() + i * 32, 1, 32));
  double diff = 0;
  for (std::size_t i = 0; i < x.size(); ++i) diff = std::max(diff, double(std::abs(y_whole[i] - y_tok[i])));
  std::printf("token-by-token vs whole segments: max |diff| = %.2g\n", diff);

  // The memory is the whole recurrent state at a segment boundary.
  sp.flush(b);
  const auto snap = b.snapshot();
  std::printf("snapshot: %zu bytes (header + %ld x %ld floats)\n", snap.size(), long(sp.memory), long(32));
  return 0;
}
