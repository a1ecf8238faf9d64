// Benchmark support: rate counters (FLOP/s, bytes/s, tokens/s) with the
// fraction of this machine's limits, and the backend as label. Limits are
// those of the development machine (DESIGN.md section 8): 2 cores, about
// 115 GFLOP/s fp32 FMA per core and about 30 GB/s DRAM.
#pragma once

#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include <longctx/simd/arch.hpp>

namespace longctx::bench {

inline constexpr double peak_flops_per_core = 115e9;
inline constexpr double dram_bytes_per_s = 30e9;

using benchmark::Counter;

// `flops` per iteration (useful work: causal counts only visible products).
// "peak" is the fraction of `threads` cores' FMA peak.
inline void set_flops(benchmark::State& st, double flops, int threads = 1) {
  st.counters["FLOP/s"] = Counter(flops, Counter::kIsIterationInvariantRate, Counter::kIs1000);
  st.counters["peak"] = Counter(flops / (peak_flops_per_core * threads), Counter::kIsIterationInvariantRate);
}

// `bytes` moved from memory per iteration; "dram" is the fraction of 30 GB/s.
inline void set_bytes(benchmark::State& st, double bytes) {
  st.counters["B/s"] = Counter(bytes, Counter::kIsIterationInvariantRate, Counter::kIs1024);
  st.counters["dram"] = Counter(bytes / dram_bytes_per_s, Counter::kIsIterationInvariantRate);
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
