// Benchmark support: rate counters (FLOP/s, bytes/s, tokens/s) with the
// fraction of this machine's limits as the same binary measured them at
// start-up (limits.hpp), and the backend as label.
#pragma once

#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <longctx/simd/arch.hpp>

#include "limits.hpp"

namespace longctx::bench {

using benchmark::Counter;

// Counters that are fractions ("peak", "of_read_bw") or times ("ns/token"),
// not rates. They are declared with kIsIterationInvariantRate so that Google
// Benchmark multiplies them by the iterations and divides them by the
// measured seconds, which makes them the fraction (the time); the reporter in
// main.cpp then clears the rate flag, which would only make the console
// print "/s" (with kInvert: "s") after them. JSON has the same values.
inline bool is_plain_counter(std::string_view name) {
  return name == "peak" || name == "of_read_bw" || name == "ns/token";
}

// `flops` per iteration (useful work: causal counts only visible products).
// "peak" is the fraction of the measured FMA peak of `threads` threads.
// With `engine` (a GEMM engine's name, kernels/compute.hpp): of that
// engine's peak (bf16 dot product, AMX tiles), measured likewise.
inline void set_flops(benchmark::State& st, double flops, int threads = 1, const char* engine = "f32") {
  st.counters["FLOP/s"] = Counter(flops, Counter::kIsIterationInvariantRate, Counter::kIs1000);
  const double peak = engine_peak(engine, threads);
  st.counters["peak"] = Counter(peak > 0 ? flops / peak : 0.0, Counter::kIsIterationInvariantRate);
}

// `bytes` read from memory per iteration; "of_read_bw" is the fraction of
// the read bandwidth `threads` threads measured (a plain sum over an array
// larger than the LLC).
inline void set_bytes(benchmark::State& st, double bytes, int threads) {
  st.counters["B/s"] = Counter(bytes, Counter::kIsIterationInvariantRate, Counter::kIs1024);
  const double bw = read_bandwidth(threads);
  st.counters["of_read_bw"] = Counter(bw > 0 ? bytes / bw : 0.0, Counter::kIsIterationInvariantRate);
}

inline void set_tokens(benchmark::State& st, double tokens) {
  st.counters["tokens/s"] = Counter(tokens, Counter::kIsIterationInvariantRate, Counter::kIs1000);
}

// n floats uniform in [-1, 1), reproducible from `seed`: benchmark inputs.
inline std::vector<float> random_floats(std::size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

template <class Arch = default_arch>
inline void label(benchmark::State& st, const char* extra = nullptr) {
  std::string l = Arch::name;
  if (extra) (l += " ") += extra;
  st.SetLabel(l);
}

}  // namespace longctx::bench
