// Google Benchmark main for every bench_* binary: prints the backend, measures
// this machine's limits (limits.hpp) and records them, with the backend, in
// the context; reports through the reporter --benchmark_format asks for, with
// the fraction counters printed as plain numbers (plain_counter_reporter).
// (Debian's libbenchmark prints "Library was built as DEBUG": cosmetic, the
// library is optimised; the benchmarked code is built with our flags.)
#include <benchmark/benchmark.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bench.hpp"

namespace {

// Forwards everything to `inner` (the display reporter the flags choose),
// with the rate flag cleared on the counters bench::is_plain_counter names.
// The runs a reporter receives are final (Google Benchmark has already
// divided the rate counters by the time), so the values stay as they are:
// only the console's "/s" suffix goes. Files written with --benchmark_out
// (JSON, CSV) print counter values without units, so they need no wrapper.
class plain_counter_reporter : public benchmark::BenchmarkReporter {
 public:
  explicit plain_counter_reporter(benchmark::BenchmarkReporter* inner) : inner_(inner) {}

  bool ReportContext(const Context& context) override { return synced().ReportContext(context); }
  void ReportRuns(const std::vector<Run>& runs) override {
    std::vector<Run> plain = runs;
    for (Run& run : plain)
      for (auto& [name, counter] : run.counters)
        if (longctx::bench::is_plain_counter(name)) counter.flags = benchmark::Counter::kDefaults;
    synced().ReportRuns(plain);
  }
  void Finalize() override { synced().Finalize(); }

 private:
  // SetOutputStream is not virtual: hand the streams the library gave this
  // reporter to the one that writes.
  benchmark::BenchmarkReporter& synced() {
    inner_->SetOutputStream(&GetOutputStream());
    inner_->SetErrorStream(&GetErrorStream());
    return *inner_;
  }

  std::unique_ptr<benchmark::BenchmarkReporter> inner_;
};

}  // namespace

int main(int argc, char** argv) {
  // On stderr, with Google Benchmark's own context: stdout may be JSON.
  std::fprintf(stderr, "backend: %s (fixed at compile time by -march/-m flags or LONGCTX_FORCE_ARCH)\n",
               longctx::default_arch::name);
  benchmark::AddCustomContext("longctx_arch", longctx::default_arch::name);
  const auto& m = longctx::bench::limits();
  for (int t : {1, 2}) {
    const std::string n = std::to_string(t);
    benchmark::AddCustomContext("fma_peak_gflops_" + n + "t", std::to_string(m.fma_flops[t] / 1e9));
    benchmark::AddCustomContext("read_gbs_" + n + "t", std::to_string(m.read_bytes[t] / 1e9));
    if (m.dot_flops[t] > 0) benchmark::AddCustomContext("bf16_dot_peak_gflops_" + n + "t", std::to_string(m.dot_flops[t] / 1e9));
    if (m.amx_flops[t] > 0) benchmark::AddCustomContext("amx_peak_gflops_" + n + "t", std::to_string(m.amx_flops[t] / 1e9));
  }
  benchmark::AddCustomContext("read_array_mib", std::to_string(m.read_array_bytes >> 20));
  benchmark::AddCustomContext("llc_mib", std::to_string(m.llc_bytes >> 20));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  plain_counter_reporter display(benchmark::CreateDefaultDisplayReporter());
  benchmark::RunSpecifiedBenchmarks(&display);
  benchmark::Shutdown();
  return 0;
}
