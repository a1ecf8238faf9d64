// Google Benchmark main for every bench_* binary: measures this machine's
// limits (limits.hpp) and records them, with the backend, in the context.
// (Debian's libbenchmark prints "Library was built as DEBUG": cosmetic, the
// library is optimised; the benchmarked code is built with our flags.)
#include <benchmark/benchmark.h>

#include <string>

#include "bench.hpp"

int main(int argc, char** argv) {
  benchmark::AddCustomContext("longctx_arch", longctx::default_arch::name);
  const auto& m = longctx::bench::limits();
  for (int t : {1, 2}) {
    const std::string n = std::to_string(t);
    benchmark::AddCustomContext("fma_peak_gflops_" + n + "t", std::to_string(m.fma_flops[t] / 1e9));
    benchmark::AddCustomContext("read_gbs_" + n + "t", std::to_string(m.read_bytes[t] / 1e9));
  }
  benchmark::AddCustomContext("read_array_mib", std::to_string(m.read_array_bytes >> 20));
  benchmark::AddCustomContext("llc_mib", std::to_string(m.llc_bytes >> 20));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
