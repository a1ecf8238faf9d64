// Double-precision oracle of the linear-state kernel: M (d_k, d_v), z (d_k),
// retrieval phi(q) M * norm and the linear / whole-block delta updates,
// literally. Also carries magnitude sums (|phi(k)|^T |v|, |phi(k)|) so tests
// can bound the fp32 kernel's rounding error per row. For tests only.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "../kernels/linear_state.hpp"
#include "../tensor/view.hpp"

LONGCTX_NAMESPACE_BEGIN
namespace reference {

struct linear_state {
  index_t d_k = 0, d_v = 0;
  std::vector<double> m, z;          // (d_k, d_v) row-major, (d_k)
  std::vector<double> m_abs, z_abs;  // magnitudes of everything summed into m, z
  double terms = 0;                  // keys folded (rounding steps per element of m, z)

  linear_state() = default;
  linear_state(index_t dk, index_t dv)
      : d_k(dk), d_v(dv), m(std::size_t(dk * dv), 0.0), z(std::size_t(dk), 0.0),
        m_abs(std::size_t(dk * dv), 0.0), z_abs(std::size_t(dk), 0.0) {}
};

struct retrieval_result {
  std::vector<double> o;      // (n, d_v) row-major
  std::vector<double> bound;  // (n): sum of magnitudes the row's value is made of (see above)
};

inline std::vector<double> features(feature_map f, const double* x, index_t d) {
  std::vector<double> y(static_cast<std::size_t>(d));
  for (index_t p = 0; p < d; ++p) y[std::size_t(p)] = feature_value(f, x[p]);
  return y;
}

// One row: phi(q) M * factor, and its magnitude bound
// |factor| (max_c (|phi q| m_abs)_c + max_c |value_c| (|phi q| . z_abs)).
inline double retrieve_row(const linear_state& s, feature_map f, const retrieval_norm& nm, const double* q,
                           double* out) {
  const std::vector<double> ph = features(f, q, s.d_k);
  bool z_empty = true;
  for (double x : s.z) z_empty = z_empty && x == 0.0;
  double den = 0, den_abs = 0;
  for (index_t p = 0; p < s.d_k; ++p) {
    den += ph[std::size_t(p)] * s.z[std::size_t(p)];
    den_abs += std::abs(ph[std::size_t(p)]) * s.z_abs[std::size_t(p)];
  }
  double fac = 1;
  switch (nm.kind) {
    case normaliser::z_denominator:
      if (z_empty) {
        fac = 0;
      } else {
        const double e = nm.epsilon;
        const double d = std::abs(den) < e ? (den < 0 ? -e : e) : den;
        fac = 1 / d;
      }
      break;
    case normaliser::block_mean: fac = nm.divisor == 0 ? 0.0 : 1 / nm.divisor; break;
    case normaliser::none: den_abs = 0; break;
  }
  if (nm.kind != normaliser::z_denominator) den_abs = 0;
  double num_abs = 0, val_max = 0;
  for (index_t c = 0; c < s.d_v; ++c) {
    double acc = 0, acc_abs = 0;
    for (index_t p = 0; p < s.d_k; ++p) {
      acc += ph[std::size_t(p)] * s.m[std::size_t(p * s.d_v + c)];
      acc_abs += std::abs(ph[std::size_t(p)]) * s.m_abs[std::size_t(p * s.d_v + c)];
    }
    out[c] = acc * fac;
    num_abs = std::max(num_abs, acc_abs);
    val_max = std::max(val_max, std::abs(out[c]));
  }
  return std::abs(fac) * (num_abs + val_max * den_abs);
}

template <class T>
retrieval_result retrieve(const linear_state& s, feature_map f, const retrieval_norm& nm, matrix_view<T> q) {
  const index_t n = q.extent(0);
  retrieval_result r{std::vector<double>(std::size_t(n * s.d_v)), std::vector<double>(std::size_t(n))};
  std::vector<double> row(static_cast<std::size_t>(s.d_k));
  for (index_t i = 0; i < n; ++i) {
    for (index_t p = 0; p < s.d_k; ++p) row[std::size_t(p)] = double(q(i, p));
    r.bound[std::size_t(i)] = retrieve_row(s, f, nm, row.data(), &r.o[std::size_t(i * s.d_v)]);
  }
  return r;
}

// Fold keys k (n, d_k), values v (n, d_v); delta reads the state from before
// the block for every key.
template <class Tk, class Tv>
void update(linear_state& s, feature_map f, update_rule rule, const retrieval_norm& nm, matrix_view<Tk> k,
            matrix_view<Tv> v) {
  const index_t n = k.extent(0);
  const linear_state old = s;
  std::vector<double> kr(static_cast<std::size_t>(s.d_k)), ret(static_cast<std::size_t>(s.d_v), 0.0);
  for (index_t t = 0; t < n; ++t) {
    for (index_t p = 0; p < s.d_k; ++p) kr[std::size_t(p)] = double(k(t, p));
    double bound = 0;
    if (rule == update_rule::delta) bound = retrieve_row(old, f, nm, kr.data(), ret.data());
    const std::vector<double> ph = features(f, kr.data(), s.d_k);
    for (index_t p = 0; p < s.d_k; ++p) {
      const double a = ph[std::size_t(p)];
      s.z[std::size_t(p)] += a;
      s.z_abs[std::size_t(p)] += std::abs(a);
      for (index_t c = 0; c < s.d_v; ++c) {
        const double val = double(v(t, c)) - ret[std::size_t(c)];
        s.m[std::size_t(p * s.d_v + c)] += a * val;
        s.m_abs[std::size_t(p * s.d_v + c)] +=
            std::abs(a) * (std::abs(double(v(t, c))) + std::abs(ret[std::size_t(c)]) + bound);
      }
    }
  }
  s.terms += double(n);
}

}  // namespace reference
LONGCTX_NAMESPACE_END
