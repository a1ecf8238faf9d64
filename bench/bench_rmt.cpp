// RMT driver over the example backbone (fp32, 2 threads):
//   BM_rmt_segments/segments:S  tokens/s against the number of segments S (linear, Complexity oN);
//   BM_rmt_overhead/s:S/m:M     S content tokens per segment with M memory tokens vs M = 0
//                               (memory-token overhead against segment length);
//   BM_rmt_stream/n:N and BM_full_causal/n:N: the same backbone over N tokens, with
//                               RMT (L = 512, m = 10) and with full causal attention over
//                               the whole input (quadratic), for contrast.
// Rates are per second of *process* CPU time (MeasureProcessCPUTime: all
// threads): the development machine is shared, and wall time there measures
// the neighbours. On an idle machine wall time ~ CPU time / 2. flop/token is
// the backbone's counted work per content token, independent of the machine.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include <longctx/models/rmt.hpp>
#include <longctx/models/rmt_backbone.hpp>

#include "support/bench.hpp"

using namespace longctx;

namespace {

// Streams `tokens` tokens through a fresh state per iteration; counts FLOPs.
void run_rmt(benchmark::State& st, const rmt_backbone_config& cfg, const rmt& p, index_t tokens) {
  thread_pool pool(2);
  rmt_reference_backbone<> bb(cfg, &pool);
  const index_t w = cfg.width;
  const auto in = bench::random_floats(std::size_t(tokens * w), 1), mem0 = bench::random_floats(std::size_t(p.memory * w), 2);
  std::vector<float> out(std::size_t(tokens * w));
  double flops = 0;
  for (auto _ : st) {
    auto s = p.make_state(bb, make_matrix<dynamic_extent, const float>(mem0.data(), p.memory, w));
    bb.reset_flops();
    p.forward(s, make_matrix<dynamic_extent, const float>(in.data(), tokens, w), make_matrix(out.data(), tokens, w));
    p.flush(s);
    flops = bb.flops();
    benchmark::DoNotOptimize(out.data());
  }
  bench::set_tokens(st, double(tokens));
  bench::set_flops(st, flops, 2);
  st.counters["memory_bytes"] = double(p.memory * w * index_t(sizeof(float)));
  st.counters["flop/token"] = flops / double(tokens);
}

// Small backbone and segments so 10,000 segments fit in a benchmark run.
const rmt_backbone_config scaling_cfg{.width = 32, .heads = 2, .layers = 1};
// The demo/example backbone.
const rmt_backbone_config demo_cfg{.width = 64, .heads = 4, .layers = 2};

void BM_rmt_segments(benchmark::State& st) {
  const rmt p{.memory = 4, .segment_budget = 64};
  const index_t segments = st.range(0);
  run_rmt(st, scaling_cfg, p, segments * p.content());
  st.SetComplexityN(segments);
  bench::label(st, "L=64 m=4 width=32");
}
BENCHMARK(BM_rmt_segments)->RangeMultiplier(10)->Range(10, 10000)->ArgName("segments")->Complexity(benchmark::oN)->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime();

void BM_rmt_overhead(benchmark::State& st) {
  const index_t s = st.range(0), m = st.range(1);
  const rmt p{.memory = m, .segment_budget = s + 2 * m};
  run_rmt(st, demo_cfg, p, 8 * s);
  bench::label(st, m ? "with memory" : "m=0 (backbone alone)");
}
BENCHMARK(BM_rmt_overhead)
    ->ArgsProduct({{108, 236, 492, 1004}, {0, 10}})
    ->ArgNames({"s", "m"})
    ->Unit(benchmark::kMillisecond)
    ->MeasureProcessCPUTime();

void BM_rmt_stream(benchmark::State& st) {
  const rmt p{.memory = 10, .segment_budget = 512};
  run_rmt(st, demo_cfg, p, st.range(0));
  st.SetComplexityN(st.range(0));
  bench::label(st, "L=512 m=10");
}
BENCHMARK(BM_rmt_stream)->RangeMultiplier(2)->Range(1024, 8192)->ArgName("n")->Complexity(benchmark::oN)->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime();

// The same backbone, one causal pass over the whole input (what RMT replaces).
void BM_full_causal(benchmark::State& st) {
  const index_t n = st.range(0), w = demo_cfg.width;
  thread_pool pool(2);
  rmt_reference_backbone<> bb(demo_cfg, &pool);
  const auto in = bench::random_floats(std::size_t(n * w), 1);
  std::vector<float> out(std::size_t(n * w));
  auto pos = std::vector<index_t>(std::size_t(n));
  for (index_t i = 0; i < n; ++i) pos[std::size_t(i)] = i;
  auto cache = bb.make_cache();
  double flops = 0;
  for (auto _ : st) {
    cache.clear();
    bb.reset_flops();
    bb.forward(cache, make_matrix<dynamic_extent, const float>(in.data(), n, w), pos, causal{}, make_matrix(out.data(), n, w));
    flops = bb.flops();
    benchmark::DoNotOptimize(out.data());
  }
  bench::set_tokens(st, double(n));
  bench::set_flops(st, flops, 2);
  st.counters["flop/token"] = flops / double(n);
  st.SetComplexityN(n);
  bench::label(st, "full causal");
}
BENCHMARK(BM_full_causal)->RangeMultiplier(2)->Range(1024, 8192)->ArgName("n")->Complexity(benchmark::oNSquared)->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime();

}  // namespace
