// Test support: seeded RNG, random fills, odd shape sweeps, tolerances.
// Catch2 2.13's GENERATE(random(...)) repeats one value, so sweeps use
// GENERATE(range(...)) + rng_for(case) and print seed and shapes with INFO.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <longctx/simd.hpp>

#include "archs.hpp"

namespace longctx::test {

// LONGCTX_TEST_SCALE (default 1) shrinks random sweeps, e.g. 0.1 under qemu.
inline double scale() {
  static const double s = [] {
    const char* e = std::getenv("LONGCTX_TEST_SCALE");
    const double v = e ? std::atof(e) : 1.0;
    return v > 0 ? v : 1.0;
  }();
  return s;
}
inline int scaled(int n) { return std::max(1, static_cast<int>(std::lround(n * scale()))); }

using rng_t = std::mt19937_64;
// One stream per test case index, reproducible: INFO the seed.
inline std::uint64_t seed_for(std::uint64_t test_id, std::uint64_t index) {
  return 0x9E3779B97F4A7C15ull * (test_id + 1) ^ (index * 0xBF58476D1CE4E5B9ull + 12345);
}

inline std::vector<float> random_floats(rng_t& g, std::size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

inline int uniform_int(rng_t& g, int lo, int hi) {  // inclusive
  return std::uniform_int_distribution<int>(lo, hi)(g);
}

// Sizes that break tiling: 1, 2, primes, and tile-1/tile/tile+1 for the tiles given.
inline std::vector<int> odd_sizes(std::initializer_list<int> tiles, int max_size) {
  std::vector<int> s{1, 2, 3, 5, 7, 13, 17, 31, 59, 61, 97, 111, 127, 131, 251, 257};
  for (int t : tiles)
    for (int k = 1; k <= 3; ++k)
      for (int dt : {-1, 0, 1}) s.push_back(k * t + dt);
  std::sort(s.begin(), s.end());
  s.erase(std::unique(s.begin(), s.end()), s.end());
  s.erase(std::remove_if(s.begin(), s.end(), [&](int x) { return x < 1 || x > max_size; }), s.end());
  return s;
}

// Mostly an odd size from the list, sometimes any size in [1, max_size].
inline int random_size(rng_t& g, const std::vector<int>& odd, int max_size) {
  if (uniform_int(g, 0, 2) == 0) return uniform_int(g, 1, max_size);
  return odd[static_cast<std::size_t>(uniform_int(g, 0, static_cast<int>(odd.size()) - 1))];
}

inline constexpr double eps_f32 = std::numeric_limits<float>::epsilon();

// Softmax attention in fp32 against a double oracle (DESIGN.md section 7,
// calibrated here): 8 eps (1 + max|logit|) max|V|.
inline double attention_tolerance(double max_abs_logit, double max_abs_v) {
  return 8 * eps_f32 * (1 + max_abs_logit) * std::max(max_abs_v, 1e-30);
}

template <class A, class B>
double max_abs_diff(const A& a, const B& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
  return m;
}

// Distance in units in the last place between two floats (0 when equal).
inline std::int64_t ulp_distance(float a, float b) {
  if (a == b) return 0;
  auto key = [](float f) {
    std::int32_t i;
    std::memcpy(&i, &f, sizeof i);
    return i < 0 ? std::int64_t(std::numeric_limits<std::int32_t>::min()) - i : std::int64_t(i);
  };
  return std::llabs(key(a) - key(b));
}

}  // namespace longctx::test
