// Demo section: FLASH. A stack of GAU layers (mixed-chunk attention, causal)
// with deterministic random weights over a long sequence: the whole sequence
// at once vs token by token (constant state), their agreement, throughput.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <longctx/models/gau.hpp>

namespace flash_demo {

inline longctx::gau_weights random_gau_weights(std::mt19937& rng, longctx::index_t dm, longctx::index_t e,
                                              longctx::index_t s) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const auto fill = [&](auto& m, float amp, float offset) {
    for (longctx::index_t i = 0; i < m.size(); ++i) m.data()[i] = offset + amp * u(rng);
  };
  longctx::gau_weights w;
  w.w.resize(dm, 2 * e + s), w.b.resize(2 * e + s), w.gamma.resize(4, s), w.beta.resize(4, s), w.w_o.resize(e, dm);
  fill(w.w, std::sqrt(3.0f / float(dm)), 0.0f);
  fill(w.b, 0.1f, 0.0f);
  fill(w.gamma, 0.2f, 1.0f);
  fill(w.beta, 0.1f, 0.0f);
  fill(w.w_o, 0.5f * std::sqrt(3.0f / float(e)), 0.0f);
  w.norm_gain.setConstant(1, std::sqrt(float(dm)));  // scale norm: g = sqrt(d_model)
  return w;
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace flash_demo

inline void demo_flash(bool quick) {
  using longctx::index_t;
  std::printf("\n== FLASH: GAU layers with mixed-chunk attention ==\n");
  const index_t layers = 4, dm = 256, e = 2 * dm, s = 128, C = 256;
  const index_t n = quick ? 1024 : 32768, n_stream = quick ? 512 : 8192;
  std::mt19937 rng(2202);
  std::vector<longctx::gau_weights> w;
  for (index_t l = 0; l < layers; ++l) w.push_back(flash_demo::random_gau_weights(rng, dm, e, s));
  const longctx::gau layer{.mixed = longctx::flash{.chunk = C}};
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(std::size_t(n * dm));
  for (auto& v : x) v = normal(rng);

  // Whole sequence, layer after layer, on a thread pool.
  longctx::thread_pool pool;
  std::vector<float> par = x;
  auto t0 = std::chrono::steady_clock::now();
  for (index_t l = 0; l < layers; ++l) {
    auto st = layer.make_state(w[std::size_t(l)]);
    layer.forward(st, longctx::make_matrix<longctx::dynamic_extent, const float>(par.data(), n, dm),
                  longctx::make_matrix(par.data(), n, dm), pool);
  }
  const double t_par = flash_demo::seconds_since(t0);

  // Token by token through all layers (one thread), over the first n_stream tokens.
  std::vector<longctx::gau::state_type> states;
  for (index_t l = 0; l < layers; ++l) states.push_back(layer.make_state(w[std::size_t(l)]));
  std::vector<float> row(static_cast<std::size_t>(dm));
  double err = 0, mag = 0;
  t0 = std::chrono::steady_clock::now();
  for (index_t t = 0; t < n_stream; ++t) {
    std::copy_n(x.data() + t * dm, dm, row.data());
    for (index_t l = 0; l < layers; ++l)
      layer.forward(states[std::size_t(l)],
                    longctx::make_matrix<longctx::dynamic_extent, const float>(row.data(), 1, dm),
                    longctx::make_matrix(row.data(), 1, dm));
    for (index_t c = 0; c < dm; ++c) {
      err = std::max(err, std::abs(double(row[std::size_t(c)]) - double(par[std::size_t(t * dm + c)])));
      mag = std::max(mag, std::abs(double(par[std::size_t(t * dm + c)])));
    }
  }
  const double t_stream = flash_demo::seconds_since(t0);
  std::printf("stack     %ld GAU layers, d_model=%ld e=%ld s=%ld C=%ld, scale norm, causal\n", long(layers), long(dm),
              long(e), long(s), long(C));
  std::printf("parallel  n=%ld tokens, %zu threads: %.2f s, %.0f tokens/s\n", long(n), pool.concurrency(), t_par,
              double(n) / t_par);
  std::printf("streaming %ld tokens one at a time, 1 thread: %.2f s, %.0f tokens/s; attention state %zu bytes per "
              "layer (constant)\n",
              long(n_stream), t_stream, double(n_stream) / t_stream, states[0].attention_state().footprint());
  std::printf("agreement streaming vs parallel: max abs diff %.2e (max |y| %.2f); the attention is bit-exact, the\n"
              "          projections round differently as GEMV vs GEMM\n",
              err, mag);
}
