// Infini-attention streaming throughput, H = 8 heads, d_k = d_v = 128,
// segment 2048, fp32, 2 threads: n tokens from 16K to 1M through one state
// (constant memory; Complexity should fit O(n)), linear and delta rules, and
// dense causal attention over the same lengths where it is affordable
// (quadratic; 2K is the reference pass for the FLOP-rate target).
// bm_infini_stream_bf16 streams 64K and 256K tokens with bf16 K/V and bf16
// compute: the local attention runs on the 16-bit engine (its label names
// it), the memory's retrieval and update stay f32. Its `peak` is, like every
// row's here, the fraction of the fp32 FMA peak (the work mixes engines).
// The stream replays one segment of random Q, K, V: every segment costs the
// same whatever its values, and 1M tokens of inputs would need 12 GB.
// Rates are per wall-clock second; the CPU column is the process's CPU time
// (both threads), which stays meaningful when the machine is shared.
#include <string>
#include <type_traits>
#include <vector>

#include <longctx/attention.hpp>
#include <longctx/policies/infini.hpp>

#include "support/bench.hpp"

namespace {

using namespace longctx;

constexpr index_t H = 8, D = 128, N = 2048;
constexpr int threads = 2;

std::vector<float> random_data(std::size_t n, unsigned seed) {
  std::vector<float> v(n);
  unsigned x = seed * 2654435761u + 1;
  for (auto& f : v) {
    x = x * 1664525u + 1013904223u;
    f = float(x >> 8) / float(1 << 24) * 2.0f - 1.0f;
  }
  return v;
}

// Useful FLOPs per token per head: causal softmax attention inside the
// segment (QK^T and PV, 2 FLOPs per multiply-add, visible pairs only, on
// average (N + 1) / 2 keys per query), the retrieval s(Q) M and s(Q) z, and
// the update s(K)^T V (delta: plus the retrieval of every key).
double flops_per_token(update_rule rule) {
  const double attn = 2.0 * 2.0 * double(D) * double(N + 1) / 2.0;
  const double retrieve = 2.0 * D * D + 2.0 * D;
  const double update = 2.0 * D * D + (rule == update_rule::delta ? retrieve : 0.0);
  return (attn + retrieve + update) * H;
}

// KV: the unfinished segment's storage; compute: the local attention's
// products (bf16 runs the 16-bit engine where one is compiled, else f32).
template <class KV = float>
void bm_infini_stream(benchmark::State& st, update_rule rule, compute_precision compute = compute_precision::f32) {
  const index_t n = st.range(0);
  const basic_infini<float, KV> pol{
      .segment = N, .beta = std::vector<float>(H, 0.0f), .update = rule, .compute = compute};
  try {  // an engine this machine cannot run (AMX build, no AMX): skipped, named
    require_engine<default_arch>(compute);
  } catch (const unsupported& e) {
    st.SkipWithError(e.what());
    return;
  }
  const attention_dims dims{1, H, H, D, D};
  std::vector<float> q = random_data(std::size_t(H * N * D), 1), k = random_data(std::size_t(H * N * D), 2),
                     v = random_data(std::size_t(H * N * D), 3), o(std::size_t(H * N * D));
  const infini_input in{from_bhnd<dynamic_extent, const float>(q.data(), 1, H, N, D),
                        from_bhnd<dynamic_extent, const float>(k.data(), 1, H, N, D),
                        from_bhnd<dynamic_extent, const float>(v.data(), 1, H, N, D)};
  const auto out = from_bhnd(o.data(), 1, H, N, D);
  thread_pool pool(threads);
  auto state = pol.make_state(dims);
  for (auto _ : st) {
    for (index_t t = 0; t < n; t += N) pol.forward(state, in, out, pool);
    benchmark::DoNotOptimize(o.data());
    benchmark::ClobberMemory();
  }
  bench::set_tokens(st, double(n));
  bench::set_flops(st, flops_per_token(rule) * double(n), threads);
  st.counters["state_bytes"] = double(state.footprint());
  st.counters["ns/token"] = benchmark::Counter(double(n) * 1e-9, benchmark::Counter::kIsIterationInvariantRate |
                                                                        benchmark::Counter::kInvert);
  st.SetComplexityN(n);
  std::string label = rule == update_rule::delta ? "delta" : "linear";
  if (!std::is_same_v<KV, float>) label += ", bf16 K/V";
  if (compute == compute_precision::bf16)
    label += std::string(", bf16 compute (") + active_engine(compute) + ")";
  bench::label(st, label.c_str());
}

// The same stream with bf16 K/V and bf16 compute in the local attention.
void bm_infini_stream_bf16(benchmark::State& st, update_rule rule) {
  bm_infini_stream<bf16>(st, rule, compute_precision::bf16);
}

// Streaming decode: one token per forward() call for a whole segment (the
// local attention grows from 1 to N keys, then the segment is folded), so
// the time per iteration / N is the average per-token decode latency.
void bm_infini_decode(benchmark::State& st) {
  const infini pol{.segment = N, .beta = std::vector<float>(H, 0.0f)};
  const attention_dims dims{1, H, H, D, D};
  std::vector<float> q = random_data(std::size_t(H * N * D), 1), k = random_data(std::size_t(H * N * D), 2),
                     v = random_data(std::size_t(H * N * D), 3), o(std::size_t(H * N * D));
  const auto qv = from_bhnd<dynamic_extent, const float>(q.data(), 1, H, N, D);
  const auto kv = from_bhnd<dynamic_extent, const float>(k.data(), 1, H, N, D);
  const auto vv = from_bhnd<dynamic_extent, const float>(v.data(), 1, H, N, D);
  const auto out = from_bhnd(o.data(), 1, H, N, D);
  thread_pool pool(threads);
  auto state = pol.make_state(dims);
  pol.forward(state, {qv, kv, vv}, out, pool);  // a non-empty memory
  for (auto _ : st) {
    for (index_t t = 0; t < N; ++t)
      pol.forward(state, {qv.tokens(t, 1), kv.tokens(t, 1), vv.tokens(t, 1)}, out.tokens(t, 1), pool);
    benchmark::DoNotOptimize(o.data());
  }
  bench::set_tokens(st, double(N));
  bench::set_flops(st, flops_per_token(update_rule::linear) * double(N), threads);
  st.counters["ns/token"] = benchmark::Counter(double(N) * 1e-9, benchmark::Counter::kIsIterationInvariantRate |
                                                                        benchmark::Counter::kInvert);
  bench::label(st, "token by token, linear");
}

void bm_dense_causal(benchmark::State& st) {
  const index_t n = st.range(0);
  std::vector<float> q = random_data(std::size_t(H * n * D), 1), k = random_data(std::size_t(H * n * D), 2),
                     v = random_data(std::size_t(H * n * D), 3), o(std::size_t(H * n * D));
  thread_pool pool(threads);
  for (auto _ : st) {
    attention(from_bhnd<dynamic_extent, const float>(q.data(), 1, H, n, D),
              from_bhnd<dynamic_extent, const float>(k.data(), 1, H, n, D),
              from_bhnd<dynamic_extent, const float>(v.data(), 1, H, n, D), from_bhnd(o.data(), 1, H, n, D),
              default_scale(D), causal{}, lse_view{}, pool);
    benchmark::DoNotOptimize(o.data());
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * 2.0 * double(D) * double(n) * double(n + 1) / 2.0 * H;
  bench::set_tokens(st, double(n));
  bench::set_flops(st, flops, threads);
  st.counters["state_bytes"] = double(2 * H * n * D * sizeof(float));  // the KV cache
  st.counters["ns/token"] = benchmark::Counter(double(n) * 1e-9, benchmark::Counter::kIsIterationInvariantRate |
                                                                        benchmark::Counter::kInvert);
  st.SetComplexityN(n);
  bench::label(st, "dense causal");
}

// Every stream row: n tokens, milliseconds, wall-clock rates beside the
// process's CPU time.
void stream_timing(benchmark::internal::Benchmark* b) {
  b->ArgName("n")->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();
}

}  // namespace

BENCHMARK_CAPTURE(bm_infini_stream, linear, longctx::update_rule::linear)
    ->RangeMultiplier(4)
    ->Range(16 << 10, 1 << 20)
    ->Apply(stream_timing)
    ->Complexity(benchmark::oN);
BENCHMARK_CAPTURE(bm_infini_stream, delta, longctx::update_rule::delta)
    ->RangeMultiplier(4)
    ->Range(16 << 10, 1 << 20)
    ->Apply(stream_timing)
    ->Complexity(benchmark::oN);
// bf16 K/V and bf16 compute at 64K and 256K tokens: the f32 rows at the
// same n are the same-run baseline.
BENCHMARK_CAPTURE(bm_infini_stream_bf16, linear, longctx::update_rule::linear)
    ->Arg(64 << 10)
    ->Arg(256 << 10)
    ->Apply(stream_timing);
BENCHMARK_CAPTURE(bm_infini_stream_bf16, delta, longctx::update_rule::delta)
    ->Arg(64 << 10)
    ->Arg(256 << 10)
    ->Apply(stream_timing);
BENCHMARK(bm_infini_decode)->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime();
// Dense beyond 16K costs minutes per pass on two cores (32K: ~20 s, 1M:
// ~6 hours by the O(n^2) fit), so it stops there; the fit gives the rest.
BENCHMARK(bm_dense_causal)
    ->RangeMultiplier(2)
    ->Range(2 << 10, 16 << 10)
    ->ArgName("n")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MeasureProcessCPUTime()
    ->Complexity(benchmark::oNSquared);
