// Rotary position embedding (RoFormer, arXiv 2104.09864), rotate-half
// convention (GPT-NeoX / FLASH ports): for a row x (d) at global position t,
// pairs (x[i], x[i + d/2]), i < d/2, rotate by angle t * base^(-2i/d);
// an odd d leaves the last component unrotated. In place on x (n, d).
#pragma once

#include <cmath>
#include <vector>

#include "../error.hpp"
#include "../tensor/view.hpp"

LONGCTX_NAMESPACE_BEGIN

// Angles and their sine / cosine are computed in double from the integer
// position, then rounded once to float: a token's rotation is the same bits
// whether it is processed in a block or alone, and exact to float rounding at
// positions in the millions (a float position would lose integers past 2^24
// and a float angle loses its fractional part long before).
inline void rope_rotate(matrix_view<float> x, index_t position0, double base = 10000.0) {
  constexpr const char* where = "rope_rotate";
  require(position0 >= 0, where, "position0", "must be >= 0, got ", position0);
  require(base > 0 && std::isfinite(base), where, "base", "must be finite and > 0, got ", base);
  require_unit_inner_stride(x, where, "x");
  require_data(x, where, "x");
  const index_t n = x.extent(0), d = x.extent(1), half = d / 2;
  if (half == 0) return;
  std::vector<double> inv_freq(static_cast<std::size_t>(half));
  for (index_t i = 0; i < half; ++i) inv_freq[std::size_t(i)] = std::pow(base, -2.0 * double(i) / double(d));
  for (index_t r = 0; r < n; ++r) {
    float* row = x.data() + r * x.stride(0);
    const double t = double(position0 + r);
    for (index_t i = 0; i < half; ++i) {
      const double a = t * inv_freq[std::size_t(i)];
      const float c = float(std::cos(a)), s = float(std::sin(a));
      const float x1 = row[i], x2 = row[i + half];
      row[i] = x1 * c - x2 * s;
      row[i + half] = x2 * c + x1 * s;
    }
  }
}

LONGCTX_NAMESPACE_END
