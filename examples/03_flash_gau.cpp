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
#include <cstring>

#include "demo/flash.hpp"

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  demo_flash(quick);

  // The attention policy on its own: one call vs token by token, bit for bit.
  using longctx::index_t;
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
