// Bounded KV cache decode (d = 128, H = h_kv = 8, 2 threads; K/V f32, and
// bf16 / f16 / int8 for TOVA at budget 4096): one step
// = append + split-KV decode over budget + 1 rows (logits kept) + scores +
// eviction. Compared with the bare decode kernel on the same rows (the
// eviction overhead is the difference), with the full cache after a 32K
// stream, and the two storage layouts.
//   bench_tova --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include <longctx/attention.hpp>
#include <longctx/policies/tova.hpp>

#include "support/bench.hpp"

using namespace longctx;

namespace {

constexpr index_t H = 8, HKV = 8, D = 128, POOL = 64;

thread_pool& pool() {
  static thread_pool p(2);
  return p;
}

// A cache already holding `rows` random rows (filled by append, no prefill
// attention: the benchmark is the steady-state step).
template <class Policy>
typename Policy::state_type filled(const Policy& p, index_t rows) {
  auto st = p.make_state({1, H, HKV, D, D});
  const index_t block = 1024;
  const auto k = bench::random_floats(std::size_t(HKV * block * D), 1), v = bench::random_floats(std::size_t(HKV * block * D), 2);
  for (index_t r = 0; r < rows; r += block) {
    const index_t n = std::min(block, rows - r);
    st.preload(from_bhnd<dynamic_extent, const float>(k.data(), 1, HKV, block, D).tokens(0, n),
               from_bhnd<dynamic_extent, const float>(v.data(), 1, HKV, block, D).tokens(0, n));
  }
  return st;
}

// kv_row_bytes: one stored row of d values (int8: with its scale).
void set_step_counters(benchmark::State& state, index_t rows, std::size_t kv_row_bytes = D * sizeof(float)) {
  bench::set_bytes(state, double(rows) * HKV * 2 * double(kv_row_bytes), 2);  // K and V streamed once
  bench::set_flops(state, 4.0 * double(rows) * H * D, 2);
  bench::set_tokens(state, 1);
  bench::label(state);
}

template <class Policy>
void run_steps(benchmark::State& state, const Policy& p, typename Policy::state_type& st) {
  const auto q = bench::random_floats(std::size_t(H * POOL * D), 3), k = bench::random_floats(std::size_t(HKV * POOL * D), 4),
             v = bench::random_floats(std::size_t(HKV * POOL * D), 5);
  std::vector<float> o(std::size_t(H * D));
  const auto qv = from_bhnd<dynamic_extent, const float>(q.data(), 1, H, POOL, D);
  const auto kv = from_bhnd<dynamic_extent, const float>(k.data(), 1, HKV, POOL, D);
  const auto vv = from_bhnd<dynamic_extent, const float>(v.data(), 1, HKV, POOL, D);
  index_t t = 0;
  for (auto _ : state) {
    const index_t i = t++ % POOL;
    p.forward(st, {qv.tokens(i, 1), kv.tokens(i, 1), vv.tokens(i, 1)}, from_bhnd(o.data(), 1, H, 1, D), pool());
    benchmark::DoNotOptimize(o.data());
  }
}

// One decode step at a budget (the cache is full: every step evicts).
// The rules the step benchmark runs, by argument.
enum class eviction { tova, window, sinks, h2o };

template <class Rule>
void step_at(benchmark::State& state, index_t budget, kv_layout layout) {
  const bounded_cache<Rule> p{.budget = budget, .layout = layout};
  auto st = filled(p, budget);
  run_steps(state, p, st);
  set_step_counters(state, budget + 1);
  state.SetLabel(std::string(default_arch::name) + " " + Rule::name +
                 (layout == kv_layout::compacted ? " compacted" : ""));
}

// TOVA at budget 4096 caching K/V as f32, bf16, f16, int8 (argument 0-3).
template <class KV>
void step_stored(benchmark::State& state, index_t budget) {
  const bounded_cache<tova_rule, KV> p{.budget = budget};
  auto st = filled(p, budget);
  run_steps(state, p, st);
  set_step_counters(state, budget + 1, (D + kv_storage_traits<KV>::row_prefix) * sizeof(KV));
  state.SetLabel(std::string(default_arch::name) + " tova kv " + kv_storage_traits<KV>::name);
}
void BM_step_storage(benchmark::State& state) {
  switch (state.range(0)) {
    case 1: return step_stored<bf16>(state, state.range(1));
    case 2: return step_stored<f16>(state, state.range(1));
    case 3: return step_stored<q8>(state, state.range(1));
  }
  step_stored<float>(state, state.range(1));
}

void BM_step(benchmark::State& state) {
  const index_t budget = state.range(1);
  const auto layout = static_cast<kv_layout>(state.range(2));
  switch (static_cast<eviction>(state.range(0))) {
    case eviction::tova: return step_at<tova_rule>(state, budget, layout);
    case eviction::h2o: return step_at<h2o_rule>(state, budget, layout);
    case eviction::window: return step_at<window_rule>(state, budget, layout);
    case eviction::sinks: return step_at<sinks_rule>(state, budget, layout);
  }
  state.SkipWithError("no such rule");
}

// The full cache at the end of a 32K stream (grows by one row per step; the
// benchmark's few hundred steps change n by < 2%).
void BM_full_32k(benchmark::State& state) {
  const dense p{};
  auto st = filled(p, 32768);
  run_steps(state, p, st);
  set_step_counters(state, 32768);
  state.SetLabel(std::string(default_arch::name) + " full");
}

// The bare split-KV decode kernel over n rows, no logits: the attention step
// the eviction overhead is measured against.
void BM_decode_kernel(benchmark::State& state) {
  const index_t n = state.range(0);
  const bool logits = state.range(1);
  const auto k = bench::random_floats(std::size_t(HKV * n * D), 1), v = bench::random_floats(std::size_t(HKV * n * D), 2),
             q = bench::random_floats(std::size_t(H * D), 3);
  std::vector<float> o(std::size_t(H * D)), lg(std::size_t(H * n)), lse(static_cast<std::size_t>(H));
  const float scale = default_scale(D);
  for (auto _ : state) {
    decode(from_bhnd<dynamic_extent, const float>(q.data(), 1, H, 1, D),
           from_bhnd<dynamic_extent, const float>(k.data(), 1, HKV, n, D),
           from_bhnd<dynamic_extent, const float>(v.data(), 1, HKV, n, D), from_bhnd(o.data(), 1, H, 1, D), scale,
           no_mask{}, logits ? lse_view(lse.data(), dextents<index_t, 3>(1, H, 1)) : lse_view{}, pool(),
           logits ? from_bhnd(lg.data(), 1, H, 1, n) : tensor4_view<float>{});
    benchmark::DoNotOptimize(o.data());
  }
  set_step_counters(state, n);
  state.SetLabel(std::string(default_arch::name) + (logits ? " decode+logits" : " decode"));
}

// The eviction work of one tova step alone, on the same cache: append the
// row, probabilities from logits + LSE for every head, mean over heads,
// argmin, evict. Isolated because on a shared machine the difference of two
// noisy decode timings cannot resolve a 1% overhead.
void BM_eviction_only(benchmark::State& state) {
  const index_t budget = state.range(0);
  kv_cache<float> st({1, H, HKV, D, D}, kv_cache_options{.reserve = budget + 1});
  const index_t n = budget + 1;
  const auto logits = bench::random_floats(std::size_t(H * n), 6), k = bench::random_floats(std::size_t(HKV * D), 7);
  std::vector<float> prob(std::size_t(H * n)), score(static_cast<std::size_t>(n)), lse(std::size_t(H), 5.0f);
  std::vector<index_t> victims(static_cast<std::size_t>(HKV));
  const auto row = from_bhnd<dynamic_extent, const float>(k.data(), 1, HKV, 1, D);
  for (index_t r = 0; r < budget; ++r) st.append(row, row);
  const eviction_context ctx{st, budget, false};
  for (auto _ : state) {
    st.append(row, row);
    for (index_t hi = 0; hi < H; ++hi)
      probabilities_from_logits(logits.data() + hi * n, lse[std::size_t(hi)], prob.data() + hi * n, n);
    std::copy_n(prob.data(), n, score.data());
    for (index_t hi = 1; hi < H; ++hi) axpy(1.0f, prob.data() + hi * n, score.data(), n);
    scale(1.0f / float(H), score.data(), n);
    const index_t victim = tova_rule{}.victim<default_arch>(ctx, 0, score.data());
    std::fill(victims.begin(), victims.end(), victim);
    st.evict(victims.data());
    benchmark::DoNotOptimize(score.data());
  }
  state.counters["rows"] = double(n);  // no byte/FLOP counters: this is bookkeeping
  state.SetLabel(std::string(default_arch::name) + " eviction work only");
}

// A whole prompt prefilled at budget n / 8: causal attention, the rule's
// observed logits (TOVA: the last row; SnapKV: the last 32), one top-k.
// Against the bare kernel, the difference is the selection's overhead.
template <class Policy>
void prefill_with(benchmark::State& state, const Policy& p, const char* name) {
  const index_t n = state.range(1);
  const auto q = bench::random_floats(std::size_t(H * n * D), 8), k = bench::random_floats(std::size_t(HKV * n * D), 9),
             v = bench::random_floats(std::size_t(HKV * n * D), 10);
  std::vector<float> o(q.size());
  const sequence_input in{from_bhnd<dynamic_extent, const float>(q.data(), 1, H, n, D),
                          from_bhnd<dynamic_extent, const float>(k.data(), 1, HKV, n, D),
                          from_bhnd<dynamic_extent, const float>(v.data(), 1, HKV, n, D)};
  for (auto _ : state) {
    auto st = p.make_state({1, H, HKV, D, D});
    p.forward(st, in, from_bhnd(o.data(), 1, H, n, D), pool());
    benchmark::DoNotOptimize(o.data());
  }
  bench::set_flops(state, 2.0 * double(n) * double(n + 1) * H * D, 2);  // visible pairs, Q K^T and P V
  bench::label(state, name);
}

void BM_prefill(benchmark::State& state) {
  const index_t budget = state.range(1) / 8;
  switch (state.range(0)) {
    case 0: return prefill_with(state, tova{.budget = budget}, "tova");
    case 1: return prefill_with(state, snapkv{.budget = budget}, "snapkv");
    case 2: return prefill_with(state, h2o_cache{.budget = budget}, "h2o");
  }
  prefill_with(state, dense{}, "dense (no selection)");
}

void budgets(benchmark::internal::Benchmark* b) {
  for (int pol : {int(eviction::tova), int(eviction::h2o), int(eviction::window), int(eviction::sinks)})
    for (index_t budget : {512, 1024, 2048, 4096, 8192}) b->Args({pol, budget, int(kv_layout::slots)});
  b->Args({int(eviction::tova), 4096, int(kv_layout::compacted)});
  b->Args({int(eviction::window), 4096, int(kv_layout::compacted)});
  b->ArgNames({"policy", "budget", "layout"});
}

}  // namespace

BENCHMARK(BM_step)->Apply(budgets)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_step_storage)
    ->ArgsProduct({{0, 1, 2, 3}, {4096}})
    ->ArgNames({"kv", "budget"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_decode_kernel)
    ->ArgsProduct({{513, 1025, 2049, 4097, 8193, 32768}, {0, 1}})
    ->ArgNames({"n", "logits"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_eviction_only)->ArgsProduct({{512, 1024, 2048, 4096, 8192}})->ArgNames({"budget"})->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_prefill)
    ->ArgsProduct({{3, 0, 1, 2}, {4096, 32768}})
    ->ArgNames({"rule", "n"})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1)
    ->UseRealTime();
BENCHMARK(BM_full_32k)->Unit(benchmark::kMicrosecond)->UseRealTime();
