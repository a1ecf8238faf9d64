// This machine's limits, measured with the kernels' vector code (DESIGN.md
// section 8: never a hard-coded peak): what the benchmarks and the demo
// quote fractions of. A kernel-layer file: it needs both simd/ and
// runtime/ (executors), which are one layer.
//   fma_peak<Arch>(pool, threads): fp32 FLOP/s of `threads` threads, each
//     running 16 independent vec<float, Arch> FMA chains (enough to cover
//     the FMA latency on every backend); the best of 5 runs of ~0.05 s (a
//     peak: a neighbour on a shared machine only ever lowers a run, and a
//     median of such runs made kernels read above 100% of it).
//   bf16_dot_peak(pool, threads): the same for vdpbf16ps (16 chains of
//     16 lanes x 2 bf16 products: 64 FLOPs each), AVX512_BF16 builds only;
//   amx_peak(pool, threads): FLOP/s of tdpbf16ps on four accumulator tiles
//     from operands held in tiles (16 x 16 x 32 products: 16384 FLOPs
//     each), AMX builds only; 0 when the CPU or the OS refuses AMX;
//   read_bandwidth<Arch>(pool, threads, a): bytes/s of `threads` threads
//     summing the floats of `a` with vector loads (each pass reads all of
//     a); the median of 5 passes after a warm-up. Make `a` larger than the
//     last-level cache for a DRAM figure.
#pragma once

#include <algorithm>
#include <chrono>
#include <span>
#include <vector>

#include "../runtime/executor.hpp"
#include "amx_tiles.hpp"
#include "../simd/blas1.hpp"
#include "../simd/vec.hpp"

LONGCTX_NAMESPACE_BEGIN

namespace detail {
template <arch_tag Arch>
float fma_chains(long iters, float seed) noexcept {
  using V = vec<float, Arch>;
  V a[16];
  for (int i = 0; i < 16; ++i) a[i] = V::broadcast(seed + float(i));
  const V m = V::broadcast(0.999999f), c = V::broadcast(1e-7f);
  for (long r = 0; r < iters; ++r)
    LONGCTX_UNROLL for (int i = 0; i < 16; ++i) a[i] = fma(a[i], m, c);
  V s = a[0];
  for (int i = 1; i < 16; ++i) s = s + a[i];
  return reduce_add(s);
}
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace detail

template <arch_tag Arch = default_arch, executor Exec>
double fma_peak(Exec&& pool, int threads) {
  const long iters = 10'000'000 / std::max(1, Arch::width / 4);
  std::vector<double> runs;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<float> sink(static_cast<std::size_t>(threads));
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(threads, [&](index_t t) { sink[std::size_t(t)] = detail::fma_chains<Arch>(iters, float(t + rep)); });
    const double s = detail::seconds_since(t0);
    volatile float keep = sink[0];
    static_cast<void>(keep);
    runs.push_back(2.0 * 16 * Arch::width * double(iters) * threads / s);
  }
  return *std::max_element(runs.begin(), runs.end());
}

namespace detail {
// The best of 5 runs of `threads` threads each calling body(t, rep) once,
// at `flops` FLOPs per call.
template <executor Exec, class Body>
double best_rate(Exec&& pool, int threads, double flops, Body&& body) {
  std::vector<double> runs;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<float> sink(static_cast<std::size_t>(threads));
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(threads, [&](index_t t) { sink[std::size_t(t)] = body(t, rep); });
    const double s = seconds_since(t0);
    volatile float keep = sink[0];
    static_cast<void>(keep);
    runs.push_back(flops * threads / s);
  }
  return *std::max_element(runs.begin(), runs.end());
}
}  // namespace detail

#if LONGCTX_HAS_AVX512_BF16
namespace detail {
inline float dot_chains(long iters, float seed) noexcept {
  __m512 a[16];
  for (int i = 0; i < 16; ++i) a[i] = _mm512_set1_ps(seed + float(i));
  const __m512i x = _mm512_set1_epi32(0x3f803f80), y = _mm512_set1_epi32(0x33d633d6);  // (1, 1), (1e-7, 1e-7)
  for (long r = 0; r < iters; ++r)
    LONGCTX_UNROLL for (int i = 0; i < 16; ++i) a[i] = _mm512_dpbf16_ps(a[i], (__m512bh)x, (__m512bh)y);
  __m512 s = a[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, a[i]);
  return _mm512_reduce_add_ps(s);
}
}  // namespace detail

template <executor Exec>
double bf16_dot_peak(Exec&& pool, int threads) {
  const long iters = 2'500'000;
  return detail::best_rate(pool, threads, 64.0 * 16 * double(iters),
                           [&](index_t t, int rep) { return detail::dot_chains(iters, float(t + rep)); });
}
#endif

#if LONGCTX_HAS_AMX
namespace detail {
inline float amx_loop(long iters) noexcept {
  using U = amx_unit<true>;
  alignas(64) static const bf16 ones[16 * 32] = {};
  alignas(64) float out[16 * 16];
  U::configure();
  U::zero<0>(), U::zero<1>(), U::zero<2>(), U::zero<3>();
  U::load<4>(ones, 64), U::load<5>(ones, 64), U::load<6>(ones, 64), U::load<7>(ones, 64);
  for (long r = 0; r < iters; ++r) {
    U::dp<0, 4, 6>();
    U::dp<1, 4, 7>();
    U::dp<2, 5, 6>();
    U::dp<3, 5, 7>();
  }
  U::store<0>(out, 64);
  U::release();
  return out[0];
}
}  // namespace detail

template <executor Exec>
double amx_peak(Exec&& pool, int threads) {
  try {
    request_amx_permission();
  } catch (const unsupported&) {
    return 0.0;
  }
  const long iters = 200'000;
  return detail::best_rate(pool, threads, 4.0 * 16384 * double(iters),
                           [&](index_t, int) { return detail::amx_loop(iters); });
}
#endif

template <arch_tag Arch = default_arch, executor Exec>
double read_bandwidth(Exec&& pool, int threads, std::span<const float> a) {
  constexpr index_t tasks = 256;
  const index_t per = index_t(a.size()) / tasks;
  std::vector<double> runs;
  for (int rep = 0; rep < 6; ++rep) {
    std::vector<float> part(tasks);
    const auto chunk = [&](index_t t) { part[std::size_t(t)] = sum<Arch>(a.data() + t * per, per); };
    const auto t0 = std::chrono::steady_clock::now();
    if (threads == 1) {
      for (index_t t = 0; t < tasks; ++t) chunk(t);
    } else {
      pool.parallel_for(tasks, chunk);
    }
    const double s = detail::seconds_since(t0);
    volatile float keep = part[0];
    static_cast<void>(keep);
    if (rep > 0) runs.push_back(double(tasks * per) * sizeof(float) / s);  // pass 0 warms up
  }
  std::sort(runs.begin(), runs.end());
  return runs[runs.size() / 2];
}

LONGCTX_NAMESPACE_END
