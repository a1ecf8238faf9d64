// Example 02: streaming 1M tokens through an Infini-attention layer.
//
// A 4-head Infini layer (d = 64, segments of 256 tokens) reads a stream one
// segment at a time; its state (per head M (64 x 64) and z (64), plus the
// unfinished segment) never grows. The first segment plants 16 key/value
// pairs per head; then random distractor tokens flow in. At growing
// distances we probe the memory with the planted keys (a second layer with
// the gate at pure memory, read-only, reading a copy of the stream's memory,
// so the stream is not disturbed) and print how far the retrieved values are
// from the planted ones, for the linear and the delta update rules.
//
//   example_02_infini_streaming [--quick]
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include <longctx/policies/infini.hpp>

namespace {

using longctx::index_t;

// Uniform floats in [-a, a] from a 64-bit LCG: cheap enough to generate
// every distractor token on the fly.
struct lcg {
  std::uint64_t s;
  float next(float a = 1.0f) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return a * (float(s >> 40) / float(1 << 24) * 2.0f - 1.0f);
  }
  void fill(std::vector<float>& v, float a = 1.0f) {
    for (auto& x : v) x = next(a);
  }
};

struct probe_result {
  double rel_error, cosine;
};

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::printf("backend: %s (fixed at compile time by -march/-m flags or LONGCTX_FORCE_ARCH)\n",
              longctx::default_arch::name);
  constexpr index_t H = 4, D = 64, N = 256, P = 16;
  const index_t total = quick ? index_t(1) << 16 : index_t(1) << 20;  // tokens streamed
  const longctx::attention_dims dims{1, H, H, D, D};
  longctx::thread_pool pool(2);

  std::printf("Infini-attention streaming: H=%ld d=%ld segment=%ld, %ld tokens, %zu threads\n", long(H), long(D),
              long(N), long(total), pool.concurrency());
  std::printf("%-8s %14s %12s %10s\n", "rule", "distractors", "rel. error", "cosine");

  for (const auto rule : {longctx::update_rule::linear, longctx::update_rule::delta}) {
    const char* name = rule == longctx::update_rule::linear ? "linear" : "delta";
    // Streaming layer: gate sigmoid(0) = 1/2 in every head. The probe is the
    // same configuration with the gate at pure memory (beta = +inf), read-only:
    // another configuration, so it gets its own state and a copy of the memory.
    const longctx::infini layer{.segment = N, .beta = std::vector<float>(H, 0.0f), .update = rule};
    longctx::infini probe = layer;
    probe.beta.assign(H, std::numeric_limits<float>::infinity());
    probe.memory = longctx::memory_mode::read_only;
    auto state = layer.make_state(dims);

    // Planted pairs: key i is +3 on its own D / P dimensions and -3 elsewhere,
    // so under ELU+1 (4 vs 0.05) the planted keys barely overlap; values in [-1, 1].
    lcg rng{1234};
    std::vector<float> kp(std::size_t(H * P * D)), vp(kp.size());
    for (index_t h = 0; h < H; ++h)
      for (index_t i = 0; i < P; ++i)
        for (index_t c = 0; c < D; ++c) kp[std::size_t((h * P + i) * D + c)] = c / (D / P) == i ? 3.0f : -3.0f;
    rng.fill(vp);
    auto kpv = longctx::from_bhnd<longctx::dynamic_extent, const float>(kp.data(), 1, H, P, D);  // (1, H, P, D)
    auto vpv = longctx::from_bhnd<longctx::dynamic_extent, const float>(vp.data(), 1, H, P, D);

    // One segment of inputs, reused for every segment of the stream: (1, H, N, D).
    std::vector<float> q(std::size_t(H * N * D)), k(q.size()), v(q.size()), o(q.size());
    auto qv = longctx::from_bhnd<longctx::dynamic_extent, const float>(q.data(), 1, H, N, D);
    auto kv = longctx::from_bhnd<longctx::dynamic_extent, const float>(k.data(), 1, H, N, D);
    auto vv = longctx::from_bhnd<longctx::dynamic_extent, const float>(v.data(), 1, H, N, D);
    auto ov = longctx::from_bhnd(o.data(), 1, H, N, D);

    // Segment 0: the planted pairs, cycled to fill the segment.
    rng.fill(q);
    for (index_t h = 0; h < H; ++h)
      for (index_t t = 0; t < N; ++t)
        for (index_t c = 0; c < D; ++c) {
          k[std::size_t((h * N + t) * D + c)] = kp[std::size_t((h * P + t % P) * D + c)];
          v[std::size_t((h * N + t) * D + c)] = vp[std::size_t((h * P + t % P) * D + c)];
        }
    layer.forward(state, {qv, kv, vv}, ov, pool);

    std::vector<float> po(std::size_t(H * P * D));
    auto probe_memory = [&]() -> probe_result {
      auto probe_state = probe.make_state(dims);
      probe_state.assign_memory(state);
      probe.forward(probe_state, {kpv, kpv, vpv}, longctx::from_bhnd(po.data(), 1, H, P, D), pool);
      double err = 0, ref = 0, dot = 0, no = 0;
      for (std::size_t i = 0; i < po.size(); ++i) {
        err += (po[i] - vp[i]) * double(po[i] - vp[i]);
        ref += double(vp[i]) * vp[i];
        dot += double(po[i]) * vp[i];
        no += double(po[i]) * po[i];
      }
      return {std::sqrt(err / ref), dot / std::sqrt(no * ref + 1e-300)};
    };

    double seconds = 0;  // in forward() only, not in generating the distractors
    index_t streamed = 0;
    auto stream_segment = [&] {
      rng.fill(q), rng.fill(k), rng.fill(v);
      const auto t0 = std::chrono::steady_clock::now();
      layer.forward(state, {qv, kv, vv}, ov, pool);
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    // Probes after 0, 1, 4, 16, ... segments of distractors, and at the end.
    std::vector<index_t> checkpoints;
    for (index_t c = 0; c < total - N; c = c == 0 ? N : 4 * c) checkpoints.push_back(c);
    checkpoints.push_back(total - N);
    for (const index_t checkpoint : checkpoints) {
      for (; streamed < checkpoint; streamed += N) stream_segment();
      const probe_result r = probe_memory();
      std::printf("%-8s %14ld %12.3f %10.3f\n", name, long(streamed), r.rel_error, r.cosine);
    }
    const auto fp = state.memory_footprint();
    std::printf("%-8s streamed %ld tokens in %.1f s: %.0f tokens/s; state %.2f MB (memory %.1f KB), constant;"
                " a dense KV cache would hold %.0f MB\n",
                name, long(state.tokens_seen()), seconds, double(streamed) / seconds, double(state.footprint()) / 1e6,
                double(fp.memory_values) * 4 / 1e3, 2.0 * double(H * state.tokens_seen() * D) * 4 / 1e6);
  }
  std::printf("rel. error = ||retrieved - planted|| / ||planted|| (1 = nothing left; 0 = perfect);\n"
              "the memory is a linear-attention average, so its recall fades as distractors accumulate.\n");
  return 0;
}
