// See limits.hpp; the measurements are longctx/kernels/machine_limits.hpp's.
#include "limits.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include <longctx/kernels/machine_limits.hpp>

namespace longctx::bench {
namespace {

machine_limits measure() {
  machine_limits m;
  const char* env = std::getenv("LONGCTX_BENCH_LIMITS");
  if (env && std::strcmp(env, "0") == 0) return m;
  const long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
  m.llc_bytes = llc > 0 ? std::size_t(llc) : 0;
  m.read_array_bytes = std::max<std::size_t>(std::size_t(1) << 30, 3 * m.llc_bytes);
  const std::vector<float> a(m.read_array_bytes / sizeof(float), 1.0f);  // touched: pages are real
  thread_pool pool(2);
  for (int t : {1, 2}) {
    m.fma_flops[t] = longctx::fma_peak(pool, t);
    m.read_bytes[t] = longctx::read_bandwidth(pool, t, a);
#if LONGCTX_HAS_AVX512_BF16
    m.dot_flops[t] = longctx::bf16_dot_peak(pool, t);
#endif
#if LONGCTX_HAS_AMX
    m.amx_flops[t] = longctx::amx_peak(pool, t);
#endif
  }
  m.measured = true;
  return m;
}

}  // namespace

const machine_limits& limits() {
  static const machine_limits m = measure();
  return m;
}
double engine_peak(const char* engine, int threads) {
  const int t = std::clamp(threads, 1, 2);
  const machine_limits& m = limits();
  if (!m.measured) return 0;
  // Measured again now, right after the benchmark that asks (tens of ms),
  // and the larger figure kept: a neighbour during one measurement (the
  // peak of this 2-vCPU host drifts by 7% within minutes) no longer inflates
  // every fraction in the run.
  static std::mutex mu;
  static thread_pool pool(2);
  const std::lock_guard<std::mutex> lock(mu);
  if (std::strcmp(engine, "avx512-bf16") == 0) {
#if LONGCTX_HAS_AVX512_BF16
    return std::max(m.dot_flops[t], longctx::bf16_dot_peak(pool, t));
#else
    return 0;
#endif
  }
  if (std::strcmp(engine, "amx-bf16") == 0) {
#if LONGCTX_HAS_AMX
    return m.amx_flops[t] > 0 ? std::max(m.amx_flops[t], longctx::amx_peak(pool, t)) : 0;
#else
    return 0;
#endif
  }
  return std::max(m.fma_flops[t], longctx::fma_peak(pool, t));
}
double read_bandwidth(int threads) { return limits().read_bytes[std::clamp(threads, 1, 2)]; }

}  // namespace longctx::bench
