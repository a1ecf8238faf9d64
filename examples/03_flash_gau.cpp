// Example 03: FLASH (Gated Attention Unit + mixed-chunk attention).
//
// A small stack of GAU layers with deterministic random weights runs over a
// long sequence twice: the whole sequence at once (each layer in one call,
// on a thread pool), and token by token through every layer with a constant
// state per layer (sum of finished chunks' K_lin^T V + the unfinished chunk).
// The attention is bit-exact between the two; the projections differ only by
// GEMV vs GEMM rounding. Prints agreement and throughput.
//
//   example_03_flash_gau [--quick]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include <longctx/models/gau.hpp>
#include <longctx/policies/flash.hpp>

namespace {

using longctx::index_t;

// One GAU layer's weights (d_model dm, expansion e, shared dimension s),
// random but scaled so activations stay O(1) through the stack; a real
// model loads trained ones into the same struct.
longctx::gau_weights random_gau_weights(std::mt19937& rng, index_t dm, index_t e, index_t s) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const auto fill = [&](auto& m, float amp, float offset) {
    for (index_t i = 0; i < m.size(); ++i) m.data()[i] = offset + amp * u(rng);
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

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::printf("backend: %s (fixed at compile time by -march/-m flags or LONGCTX_FORCE_ARCH)\n",
              longctx::default_arch::name);
  std::printf("== FLASH: GAU layers with mixed-chunk attention ==\n");
  {  // A GAU stack: the whole sequence at once vs token by token.
    const index_t layers = 4, dm = 256, e = 2 * dm, s = 128, C = 256;
    const index_t n = quick ? 1024 : 32768, n_stream = quick ? 512 : 8192;
    std::mt19937 rng(2202);
    std::vector<longctx::gau_weights> w;
    for (index_t l = 0; l < layers; ++l) w.push_back(random_gau_weights(rng, dm, e, s));
    const longctx::gau layer{.mixed = longctx::flash{.chunk = C}};
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> x(std::size_t(n * dm));
    for (auto& v : x) v = normal(rng);

    // Whole sequence, layer after layer (in place), on a thread pool.
    longctx::thread_pool pool;
    std::vector<float> par = x;
    auto t0 = std::chrono::steady_clock::now();
    for (index_t l = 0; l < layers; ++l) {
      auto st = layer.make_state(w[std::size_t(l)]);
      layer.forward(st, longctx::make_matrix<longctx::dynamic_extent, const float>(par.data(), n, dm),
                    longctx::make_matrix(par.data(), n, dm), pool);
    }
    const double t_par = seconds_since(t0);

    // Token by token through all layers (one thread), over the first
    // n_stream tokens, against the whole-sequence outputs.
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
    const double t_stream = seconds_since(t0);
    std::printf("stack     %ld GAU layers, d_model=%ld e=%ld s=%ld C=%ld, scale norm, causal\n", long(layers),
                long(dm), long(e), long(s), long(C));
    std::printf("parallel  n=%ld tokens, %zu threads: %.2f s, %.0f tokens/s\n", long(n), pool.concurrency(), t_par,
                double(n) / t_par);
    std::printf("streaming %ld tokens one at a time, 1 thread: %.2f s, %.0f tokens/s; attention state %zu bytes per "
                "layer (constant)\n",
                long(n_stream), t_stream, double(n_stream) / t_stream, states[0].attention_state().footprint());
    std::printf("agreement streaming vs parallel: max abs diff %.2e (max |y| %.2f); the attention is bit-exact, the\n"
                "          projections round differently as GEMV vs GEMM\n",
                err, mag);
  }

  // The attention policy on its own: one call vs token by token, bit for bit.
  const index_t n = quick ? 700 : 3000, s = 64, e = 96;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> in(std::size_t(n * (4 * s + e)));
  for (auto& v : in) v = u(rng);
  // One (n, 4s + e) buffer, as a fused projection would write it: columns
  // [Q_quad | K_quad | Q_lin | K_lin | V], each a (1, 1, n, cols) view.
  const auto part = [&](index_t off, index_t cols) {
    using view = longctx::tensor4_view<const float>;
    const index_t ld = 4 * s + e;
    return view(in.data() + off, view::extents_type(1, 1, n, cols), {n * ld, n * ld, ld, 1});
  };
  const longctx::flash_input x{part(0, s), part(s, s), part(4 * s, e), part(2 * s, s), part(3 * s, s)};
  const longctx::flash pol{.chunk = 128};
  const longctx::attention_dims dims{.d = s, .d_v = e};
  std::vector<float> whole(std::size_t(n * e)), tok(std::size_t(n * e));
  auto st = pol.make_state(dims);
  pol.forward(st, x, longctx::from_bhnd(whole.data(), 1, 1, n, e));
  auto st1 = pol.make_state(dims);
  for (index_t t = 0; t < n; ++t)
    pol.forward(st1, {x.q.tokens(t, 1), x.k.tokens(t, 1), x.v.tokens(t, 1), x.q_lin.tokens(t, 1), x.k_lin.tokens(t, 1)},
                longctx::from_bhnd(tok.data() + t * e, 1, 1, 1, e));
  std::printf("mixed-chunk attention n=%ld C=128: token-by-token %s the whole-sequence call\n", long(n),
              tok == whole ? "equals (bit for bit)" : "DIFFERS FROM");
  return tok == whole ? 0 : 1;
}
