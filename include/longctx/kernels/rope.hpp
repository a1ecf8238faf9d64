// Rotary position embedding (RoFormer, arXiv 2104.09864), rotate-half
// convention (GPT-NeoX / LLaMA / FLASH ports): for a row x (d) rotated by an
// angle delta, pairs (x[i], x[i + d/2]), i < d/2, rotate by
// delta * base^(-2i/d); an odd d leaves the last component unrotated. The one
// RoPE of the library: GAU rotates by global positions, the KV caches
// re-rotate cached keys by position deltas.
#pragma once

#include <cmath>
#include <vector>

#include "../error.hpp"
#include "../tensor/view.hpp"

LONGCTX_NAMESPACE_BEGIN

namespace detail {
// inv_freq[i] = base^(-2i/d), the expression rope_rotate_row evaluates: the
// matrix form precomputes it once and gets the row function's bits.
inline double rope_inv_freq(index_t i, index_t d, double base) noexcept {
  return std::pow(base, -2.0 * double(i) / double(d));
}

template <class InvFreq>
inline void rope_rotate_row_with(const float* in, float* out, index_t d, double delta, InvFreq&& inv_freq) noexcept {
  const index_t half = d / 2;
  if (delta == 0) {  // R(0) = I, bit for bit (cos 0 = 1, sin 0 = 0 would also give it; this skips the pow)
    if (in != out)
      for (index_t c = 0; c < d; ++c) out[c] = in[c];
    return;
  }
  for (index_t i = 0; i < half; ++i) {
    const double a = delta * inv_freq(i);
    const double c = std::cos(a), sn = std::sin(a), x = in[i], y = in[i + half];
    out[i] = float(x * c - y * sn);
    out[i + half] = float(y * c + x * sn);
  }
  if (d % 2 && in != out) out[d - 1] = in[d - 1];
}
}  // namespace detail

// out (d) = R(delta) in (d). Angle, sine, cosine and the products are double
// and each output rounds to float once: a rotation is exact to float rounding
// whatever the position (a float angle loses its fraction long before 2^24),
// a token's bits do not depend on the rows rotated with it, and rotating by a
// then by b equals rotating by a + b to float rounding. delta 0 copies bit for
// bit. in == out is allowed (each pair is read before it is written).
inline void rope_rotate_row(const float* in, float* out, index_t d, double delta, double base) noexcept {
  detail::rope_rotate_row_with(in, out, d, delta, [&](index_t i) { return detail::rope_inv_freq(i, d, base); });
}

// In place on x (n, d): row r sits at global position position0 + r.
inline void rope_rotate(matrix_view<float> x, index_t position0, double base = 10000.0) {
  constexpr const char* where = "rope_rotate";
  require(position0 >= 0, where, "position0", "must be >= 0, got ", position0);
  require(base > 0 && std::isfinite(base), where, "base", "must be finite and > 0, got ", base);
  require_views(where, "x", x);
  const index_t n = x.extent(0), d = x.extent(1), half = d / 2;
  if (half == 0) return;
  std::vector<double> inv_freq(static_cast<std::size_t>(half));
  for (index_t i = 0; i < half; ++i) inv_freq[std::size_t(i)] = detail::rope_inv_freq(i, d, base);
  for (index_t r = 0; r < n; ++r) {
    float* row = x.data() + r * x.stride(0);
    detail::rope_rotate_row_with(row, row, d, double(position0 + r),
                                 [&](index_t i) { return inv_freq[std::size_t(i)]; });
  }
}

LONGCTX_NAMESPACE_END
