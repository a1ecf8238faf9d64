// Double-precision oracle for softmax attention: the formula, literally, with
// the mask evaluated per element. O(n_q n_kv d); for tests only.
#pragma once

#include <cmath>
#include <concepts>
#include <limits>
#include <vector>

#include "../kernels/mask.hpp"
#include "../tensor/view.hpp"

LONGCTX_NAMESPACE_BEGIN
namespace reference {

struct attention_result {
  std::vector<double> o;    // (n_q, d_v) row-major
  std::vector<double> lse;  // (n_q); -inf for fully masked rows
  std::vector<double> logits;  // (n_q, n_kv) scaled; -inf where masked
};

// One head. q (n_q, d), k (n_kv, d), v (n_kv, d_v); `visible(i, j)`.
template <class Tq, class Tk, class Tv, class Visible>
  requires std::predicate<Visible&, index_t, index_t>
attention_result attention_head(matrix_view<Tq> q, matrix_view<Tk> k, matrix_view<Tv> v, double scale,
                                Visible&& visible) {
  const index_t n_q = q.extent(0), n_kv = k.extent(0), d = q.extent(1), d_v = v.extent(1);
  constexpr double ninf = -std::numeric_limits<double>::infinity();
  attention_result r{std::vector<double>(std::size_t(n_q * d_v), 0.0), std::vector<double>(std::size_t(n_q), ninf),
                     std::vector<double>(std::size_t(n_q * n_kv), ninf)};
  for (index_t i = 0; i < n_q; ++i) {
    double m = ninf;
    double* lg = r.logits.data() + i * n_kv;  // not &logits[...]: empty when n_kv = 0
    for (index_t j = 0; j < n_kv; ++j) {
      if (!visible(i, j)) continue;
      double s = 0;
      for (index_t p = 0; p < d; ++p) s += double(q(i, p)) * double(k(j, p));
      lg[j] = s * scale;
      m = std::max(m, lg[j]);
    }
    if (m == ninf) continue;  // fully masked: o = 0, lse = -inf
    double l = 0;
    for (index_t j = 0; j < n_kv; ++j)
      if (lg[j] != ninf) l += std::exp(lg[j] - m);
    for (index_t j = 0; j < n_kv; ++j) {
      if (lg[j] == ninf) continue;
      const double p = std::exp(lg[j] - m) / l;
      for (index_t c = 0; c < d_v; ++c) r.o[std::size_t(i * d_v + c)] += p * double(v(j, c));
    }
    r.lse[std::size_t(i)] = m + std::log(l);
  }
  return r;
}

template <class Tq, class Tk, class Tv, class Mask>
  requires mask_descriptor<Mask>
attention_result attention_head(matrix_view<Tq> q, matrix_view<Tk> k, matrix_view<Tv> v, double scale,
                                const Mask& mask) {
  const auto b = mask.bind(q.extent(0), k.extent(0));
  return attention_head(q, k, v, scale, [&](index_t i, index_t j) { return b.visible(i, j); });
}

}  // namespace reference
LONGCTX_NAMESPACE_END
