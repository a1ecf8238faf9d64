// This machine's limits, measured by the benchmark binary itself at start-up
// (DESIGN.md section 8: never a hard-coded constant), for 1 thread and for
// the pool size the benchmarks use:
//   fma_flops(t)  fp32 FMA peak of t threads: 16 independent vec<float>
//                 FMA chains per thread (the default backend's width);
//   bf16_dot_flops(t), amx_flops(t)  the same for vdpbf16ps chains and
//                 for tdpbf16ps on four tiles (kernels/machine_limits.hpp),
//                 where the build has the instructions (0 otherwise, or
//                 when the CPU or the OS refuses AMX);
//   read_bytes(t) read bandwidth of t threads: a vectorised sum over an
//                 array of max(1 GiB, 3 x the reported LLC), so a cache that
//                 reports hundreds of MB cannot hold it; the median of 5
//                 passes after a warm-up.
// The benchmarks' "peak" and "of_read_bw" counters are fractions of these,
// and the figures go into the JSON context. LONGCTX_BENCH_LIMITS=0 skips the
// measurement (fractions are then 0), e.g. for a quick --benchmark_list_tests.
#pragma once

#include <cstddef>

namespace longctx::bench {

struct machine_limits {
  double fma_flops[3] = {0, 0, 0};   // by thread count 0 (unused), 1, 2
  double read_bytes[3] = {0, 0, 0};
  double dot_flops[3] = {0, 0, 0};
  double amx_flops[3] = {0, 0, 0};
  std::size_t read_array_bytes = 0, llc_bytes = 0;
  bool measured = false;
};

// Measured once (the first call), then cached; engine_peak measures again.
const machine_limits& limits();

// The figures for t threads (clamped to 1..2; 0 when not measured).
// The peak of the GEMM engine named `engine` (compute.hpp's names: "f32",
// "avx512-bf16", "amx-bf16"): what its "peak" fraction is taken of, the
// larger of the start-up figure and one measured at the call (set_flops
// calls it right after the benchmark's timed loop).
double engine_peak(const char* engine, int threads);
double read_bandwidth(int threads);

}  // namespace longctx::bench
