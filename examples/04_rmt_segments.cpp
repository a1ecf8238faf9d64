// Recurrent Memory Transformer over an unbounded stream: 1M+ tokens through a
// small example backbone in segments of 512 rows with 10 memory tokens, as in
// the 1M/2M-token RMT report. Prints tokens/s, the (constant) memory size and
// the compute ratio against full causal attention at the same length, from
// FLOPs counted by the backbone, and a snapshot of that stream's memory
// restored into a fresh state. Also shows, on a smaller backbone, that
// token-by-token streaming gives the outputs of whole segments.
// Usage: example_04_rmt_segments [--quick] [--tokens N]
#include <algorithm>
#include <array>
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
  std::printf("backend: %s (fixed at compile time by -march/-m flags or LONGCTX_FORCE_ARCH)\n",
              longctx::default_arch::name);
  std::fflush(stdout);  // before the long stream below, also when stdout is a pipe

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
  // embed token ids here); outputs come back without the memory rows. A
  // long run prints a progress line every 5 s or so (flushed: pipes too).
  const index_t chunk = 65536;
  std::vector<float> in(std::size_t(chunk * w)), out(std::size_t(chunk * w));
  const auto t0 = std::chrono::steady_clock::now();
  auto last_report = t0;
  for (index_t done = 0; done < tokens;) {
    const index_t n = std::min(chunk, tokens - done);
    for (index_t i = 0; i < n * w; ++i) in[std::size_t(i)] = u(g);
    policy.forward(state, make_matrix<dynamic_extent, const float>(in.data(), n, w), make_matrix(out.data(), n, w));
    done += n;
    const auto now = std::chrono::steady_clock::now();
    if (!quick && done < tokens && now - last_report >= std::chrono::seconds(5)) {
      std::printf("  ... %ld of %ld tokens, %.0f s\n", long(done), long(tokens),
                  std::chrono::duration<double>(now - t0).count());
      std::fflush(stdout);
      last_report = now;
    }
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

  // At a segment boundary (flushed above) the memory is the whole recurrent
  // state: a snapshot of it, restored into a fresh state, resumes the stream.
  const auto snap = state.snapshot();
  auto resumed = policy.make_state(model, make_matrix<dynamic_extent, const float>(init.data(), policy.memory, w));
  resumed.restore(snap);
  bool same = resumed.segments() == state.segments();
  for (index_t i = 0; i < policy.memory; ++i)
    for (index_t c = 0; c < w; ++c) same = same && resumed.memory()(i, c) == state.memory()(i, c);
  std::printf("  snapshot        %zu bytes after %ld tokens (the %ld x %ld fp32 memory, %zu bytes, + %zu bytes of\n"
              "                  header and segment count); restored into a fresh state: %s\n",
              snap.size(), long(tokens), long(policy.memory), long(w), state.memory_bytes(),
              snap.size() - state.memory_bytes(), same ? "the same memory and segment count" : "DIFFERENT");

  // The same stream with a Transformer-XL cache of the last 512 content rows
  // (rmt::xl): each segment's rows also attend those rows as every layer saw
  // them. Cost per token against no cache, on the same number of tokens (an
  // eighth of the stream), the two runs interleaved three times: medians.
  const index_t part = std::max<index_t>(tokens / 8, policy.content());
  auto per_token = [&](const rmt& p) {
    auto st = p.make_state(model, make_matrix<dynamic_extent, const float>(init.data(), p.memory, w));
    model.reset_flops();
    const auto s0 = std::chrono::steady_clock::now();
    for (index_t done = 0; done < part;) {
      const index_t n = std::min(chunk, part - done);
      for (index_t i = 0; i < n * w; ++i) in[std::size_t(i)] = u(g);
      p.forward(st, make_matrix<dynamic_extent, const float>(in.data(), n, w), make_matrix(out.data(), n, w));
      done += n;
    }
    p.flush(st);
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
    return std::array<double, 3>{t / double(part) * 1e6, model.flops() / double(part), double(st.footprint())};
  };
  const rmt with_xl{.memory = 10, .segment_budget = 512, .xl = 512};
  std::array<std::array<double, 3>, 3> runs_base{}, runs_xl{};
  for (int r = 0; r < 3; ++r) runs_base[std::size_t(r)] = per_token(policy), runs_xl[std::size_t(r)] = per_token(with_xl);
  const auto median = [](std::array<std::array<double, 3>, 3> v) {
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a[0] < b[0]; });
    return v[1];
  };
  const auto base = median(runs_base), xl = median(runs_xl);
  std::printf("XL cache: %ld tokens, segment 512, m = 10, the last %ld content rows cached per layer (medians of 3)\n", long(part),
              long(with_xl.xl));
  std::printf("  no cache        %.2f us/token, %.3g FLOP/token, state %.0f KB\n", base[0], base[1], base[2] / 1e3);
  std::printf("  XL cache 512    %.2f us/token, %.3g FLOP/token, state %.0f KB (%.2fx the time, %.2fx the FLOPs)\n",
              xl[0], xl[1], xl[2] / 1e3, xl[0] / base[0], xl[1] / base[1]);

  // Token-by-token streaming gives the same outputs as whole segments (a
  // smaller backbone and segments, 200 tokens).
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
  std::printf("token-by-token vs whole segments (width 32, L = %ld, m = %ld, 200 tokens): max |diff| = %.2g\n",
              long(sp.segment_budget), long(sp.memory), diff);
  return same ? 0 : 1;
}
