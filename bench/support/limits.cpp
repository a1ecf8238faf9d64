// See limits.hpp.
#include "limits.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <longctx/runtime/executor.hpp>
#include <longctx/simd/blas1.hpp>
#include <longctx/simd/vec.hpp>

namespace longctx::bench {
namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// fp32 FMAs of one thread over `iters` rounds of 16 independent chains.
float fma_chains(long iters, float seed) {
  using V = vec<float, default_arch>;
  V a[16];
  for (int i = 0; i < 16; ++i) a[i] = V::broadcast(seed + float(i));
  const V m = V::broadcast(0.999999f), c = V::broadcast(1e-7f);
  for (long r = 0; r < iters; ++r)
    LONGCTX_UNROLL for (int i = 0; i < 16; ++i) a[i] = fma(a[i], m, c);
  V s = a[0];
  for (int i = 1; i < 16; ++i) s = s + a[i];
  return reduce_add(s);
}

double measure_fma(thread_pool& pool, int threads) {
  constexpr long iters = 20'000'000;
  std::vector<double> runs;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<float> sink(std::size_t(threads));
    const auto t0 = clock_type::now();
    pool.parallel_for(threads, [&](index_t t) { sink[std::size_t(t)] = fma_chains(iters, float(t + rep)); });
    const double s = seconds_since(t0);
    volatile float keep = sink[0];
    static_cast<void>(keep);
    runs.push_back(2.0 * 16 * default_arch::width * double(iters) * threads / s);
  }
  std::sort(runs.begin(), runs.end());
  return runs[runs.size() / 2];
}

double measure_read(thread_pool& pool, int threads, const std::vector<float>& a) {
  constexpr index_t tasks = 256;
  const index_t n = index_t(a.size()), per = n / tasks;
  std::vector<double> runs;
  for (int rep = 0; rep < 6; ++rep) {
    std::vector<float> part(tasks);
    const auto t0 = clock_type::now();
    if (threads == 1) {
      for (index_t t = 0; t < tasks; ++t) part[std::size_t(t)] = sum<default_arch>(a.data() + t * per, per);
    } else {
      pool.parallel_for(tasks, [&](index_t t) { part[std::size_t(t)] = sum<default_arch>(a.data() + t * per, per); });
    }
    const double s = seconds_since(t0);
    volatile float keep = part[0];
    static_cast<void>(keep);
    if (rep > 0) runs.push_back(double(tasks * per) * sizeof(float) / s);  // pass 0 warms up
  }
  std::sort(runs.begin(), runs.end());
  return runs[runs.size() / 2];
}

machine_limits measure() {
  machine_limits m;
  const char* env = std::getenv("LONGCTX_BENCH_LIMITS");
  if (env && std::strcmp(env, "0") == 0) return m;
  const long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
  m.llc_bytes = llc > 0 ? std::size_t(llc) : 0;
  m.read_array_bytes = std::max<std::size_t>(std::size_t(1) << 30, 3 * m.llc_bytes);
  std::vector<float> a(m.read_array_bytes / sizeof(float), 1.0f);  // touched: pages are real
  thread_pool pool(2);
  for (int t : {1, 2}) {
    m.fma_flops[t] = measure_fma(pool, t);
    m.read_bytes[t] = measure_read(pool, t, a);
  }
  m.measured = true;
  return m;
}

}  // namespace

const machine_limits& limits() {
  static const machine_limits m = measure();
  return m;
}
double fma_peak(int threads) { return limits().fma_flops[std::clamp(threads, 1, 2)]; }
double read_bandwidth(int threads) { return limits().read_bytes[std::clamp(threads, 1, 2)]; }

}  // namespace longctx::bench
