// Google Benchmark main for every bench_* binary: records the backend and the
// machine limits used for the "peak" and "dram" fractions in the context.
// (Debian's libbenchmark prints "Library was built as DEBUG": cosmetic, the
// library is optimised; the benchmarked code is built with our flags.)
#include <benchmark/benchmark.h>

#include <string>

#include "bench.hpp"

int main(int argc, char** argv) {
  benchmark::AddCustomContext("longctx_arch", longctx::default_arch::name);
  benchmark::AddCustomContext("peak_gflops_per_core", std::to_string(longctx::bench::peak_flops_per_core / 1e9));
  benchmark::AddCustomContext("dram_gbs", std::to_string(longctx::bench::dram_bytes_per_s / 1e9));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
