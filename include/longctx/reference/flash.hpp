// Double-precision oracle of FLASH (PAPERS.md section 2): mixed-chunk
// attention written literally as two O(n^2) masked sums (quadratic: same
// chunk, causal j <= i; linear: earlier chunks or all), with per-element
// magnitude bounds for the fp32 error, and the GAU layer in Eigen double.
// For tests only.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "../models/gau.hpp"  // Eigen, through tensor/eigen.hpp
#include "../policies/flash.hpp"

LONGCTX_NAMESPACE_BEGIN
namespace reference {

using matrix_d = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct flash_params {
  index_t chunk = 256;
  bool causal = true;
  flash_norm norm = flash_norm::chunk_mean;
  double scale = 1.0 / 256;
  const matrix_d* bias = nullptr;  // (C, C) or null
};

struct flash_result {
  matrix_d o;           // (n, e)
  matrix_d quad_bound;  // (n, e): sum over visible keys of (scale |q||k| + |B|)^2 |v|
  matrix_d lin_bound;   // (n, e): sum over visible keys of |q_lin||k_lin| |v| / divisor
};

inline matrix_d to_double(matrix_view<const float> m) {
  matrix_d r(m.extent(0), m.extent(1));
  for (index_t i = 0; i < m.extent(0); ++i)
    for (index_t j = 0; j < m.extent(1); ++j) r(i, j) = m(i, j);
  return r;
}

// One chunk, literally: o[i] = sum over visible j of relu(scale q_i.k_j + B_ij)^2 v_j,
// visible: j <= q_offset + i when causal. bound as in flash_result::quad_bound.
struct chunk_result {
  matrix_d o, bound;  // (c_q, d_v)
};
inline chunk_result chunk_attention(const matrix_d& q, const matrix_d& k, const matrix_d& v, double scale,
                                    chunk_mask mask, const matrix_d* bias) {
  const index_t c_q = q.rows(), c_k = k.rows(), d = q.cols(), d_v = v.cols();
  chunk_result r{matrix_d::Zero(c_q, d_v), matrix_d::Zero(c_q, d_v)};
  for (index_t i = 0; i < c_q; ++i)
    for (index_t j = 0; j < c_k; ++j) {
      if (mask.causal && j > mask.q_offset + i) continue;
      double dot = 0, mag = 0;
      for (index_t c = 0; c < d; ++c) dot += q(i, c) * k(j, c), mag += std::abs(q(i, c) * k(j, c));
      const double b = bias ? (*bias)(i, j) : 0.0;
      const double x = std::max(0.0, dot * scale + b), bx = mag * std::abs(scale) + std::abs(b);
      for (index_t c = 0; c < d_v; ++c) {
        r.o(i, c) += x * x * v(j, c);
        r.bound(i, c) += bx * bx * std::abs(v(j, c));
      }
    }
  return r;
}

// The accuracy of chunk attention with compute_precision::bf16 (bf16 q, k,
// v and P, fp32 sums), u the unit roundoff of bf16 (2^-8), beyond fp32
// rounding. Each logit's dot product moves by at most e = (2u + u^2)
// |scale| sum_p |q_p k_p| (q and k rounded, the products exact), so x =
// relu(scale q.k + b) moves by at most e (relu is 1-Lipschitz) and x^2 by at
// most y^2 - x^2 (y = x + e); P = x^2 and v are then rounded:
//   operands(i, c) = sum_j [(y^2 - x^2) + (2u + u^2) y^2] |v_jc|
// bounds |o - o_exact| on the caller's operands, and u rounding(i, c), with
//   rounding(i, c) = sum_j x^2 |v_jc|,
// bounds what P's rounding alone moves: the check against this oracle run on
// operands already rounded to bf16.
struct chunk_bf16_bounds {
  matrix_d operands, rounding;  // (c_q, d_v)
};
inline chunk_bf16_bounds chunk_attention_bf16_bounds(const matrix_d& q, const matrix_d& k, const matrix_d& v,
                                                     double scale, chunk_mask mask, const matrix_d* bias, double u) {
  const index_t c_q = q.rows(), c_k = k.rows(), d = q.cols(), d_v = v.cols();
  chunk_bf16_bounds r{matrix_d::Zero(c_q, d_v), matrix_d::Zero(c_q, d_v)};
  const double du = 2 * u + u * u;
  for (index_t i = 0; i < c_q; ++i)
    for (index_t j = 0; j < c_k; ++j) {
      if (mask.causal && j > mask.q_offset + i) continue;
      double dot = 0, mag = 0;
      for (index_t c = 0; c < d; ++c) dot += q(i, c) * k(j, c), mag += std::abs(q(i, c) * k(j, c));
      const double x = std::max(0.0, dot * scale + (bias ? (*bias)(i, j) : 0.0));
      const double y = x + du * mag * std::abs(scale);
      const double moved = (y * y - x * x) + du * y * y;
      for (index_t c = 0; c < d_v; ++c) {
        r.operands(i, c) += moved * std::abs(v(j, c));
        r.rounding(i, c) += x * x * std::abs(v(j, c));
      }
    }
  return r;
}

// The divisor of row i's linear term, 0 meaning "the term is 0".
// n: the sequence's tokens.
inline double flash_divisor(const flash_params& p, index_t chunk_i, index_t chunks, index_t n) {
  switch (p.norm) {
    case flash_norm::chunk_mean: return double(p.chunk) * double(p.causal ? chunk_i : chunks);
    case flash_norm::chunk_sum: return double(p.chunk);
    case flash_norm::token_count: return p.causal ? double(p.chunk) * double(chunk_i) : double(n);
    case flash_norm::none: break;
  }
  return 1.0;
}

inline flash_result mixed_chunk_attention(const matrix_d& qq, const matrix_d& kq, const matrix_d& ql,
                                          const matrix_d& kl, const matrix_d& v, const flash_params& p) {
  const index_t n = qq.rows(), s = qq.cols(), e = v.cols(), C = p.chunk;
  const index_t chunks = (n + C - 1) / C;
  flash_result r{matrix_d::Zero(n, e), matrix_d::Zero(n, e), matrix_d::Zero(n, e)};
  for (index_t i = 0; i < n; ++i) {
    const double div = flash_divisor(p, i / C, chunks, n);
    for (index_t j = 0; j < n; ++j) {
      const bool quad = i / C == j / C && (!p.causal || j <= i);
      const bool lin = p.causal ? j / C < i / C : true;
      if (quad) {
        double dot = 0, mag = 0;
        for (index_t c = 0; c < s; ++c) dot += qq(i, c) * kq(j, c), mag += std::abs(qq(i, c) * kq(j, c));
        const double b = p.bias ? (*p.bias)(i % C, j % C) : 0.0;
        const double x = std::max(0.0, dot * p.scale + b), bx = mag * std::abs(p.scale) + std::abs(b);
        for (index_t c = 0; c < e; ++c) {
          r.o(i, c) += x * x * v(j, c);
          r.quad_bound(i, c) += bx * bx * std::abs(v(j, c));
        }
      }
      if (lin && div != 0.0) {
        double dot = 0, mag = 0;
        for (index_t c = 0; c < s; ++c) dot += ql(i, c) * kl(j, c), mag += std::abs(ql(i, c) * kl(j, c));
        for (index_t c = 0; c < e; ++c) {
          r.o(i, c) += dot * v(j, c) / div;
          r.lin_bound(i, c) += mag * std::abs(v(j, c)) / div;
        }
      }
    }
  }
  return r;
}

// Rotate-half RoPE in double (kernels/rope.hpp's convention; odd d leaves
// the last component as it is).
inline void rope(matrix_d& x, index_t position0, double base) {
  const index_t d = x.cols(), half = d / 2;
  for (index_t r = 0; r < x.rows(); ++r)
    for (index_t i = 0; i < half; ++i) {
      const double a = double(position0 + r) * std::pow(base, -2.0 * double(i) / double(d));
      const double x1 = x(r, i), x2 = x(r, i + half);
      x(r, i) = x1 * std::cos(a) - x2 * std::sin(a);
      x(r, i + half) = x2 * std::cos(a) + x1 * std::sin(a);
    }
}

// The GAU layer over a whole sequence in double: the float weights and input
// widened, every step in double (Eigen products included).
inline matrix_d gau_forward(const gau& layer, const gau_weights& w, const matrix_d& x) {
  const index_t n = x.rows(), dm = w.d_model(), e = w.e(), s = w.s();
  matrix_d xn(n, dm);
  for (index_t r = 0; r < n; ++r) {
    if (layer.norm == gau_norm::scale_norm) {
      const double nrm = std::max(x.row(r).norm(), double(layer.norm_epsilon));
      xn.row(r) = x.row(r) * (double(w.norm_gain[0]) / nrm);
    } else {
      const double mean = x.row(r).mean();
      const double var = (x.row(r).array() - mean).square().mean();
      for (index_t c = 0; c < dm; ++c)
        xn(r, c) = (x(r, c) - mean) / std::sqrt(var + double(layer.norm_epsilon)) * double(w.norm_gain[c]) +
                   double(w.norm_bias[c]);
    }
  }
  matrix_d h = xn * w.w.cast<double>();
  for (index_t r = 0; r < n; ++r)
    for (index_t c = 0; c < 2 * e + s; ++c) {
      const double t = h(r, c) + double(w.b[c]);
      h(r, c) = t / (1.0 + std::exp(-t));
    }
  matrix_d q[4];
  for (int i = 0; i < 4; ++i) {
    q[i].resize(n, s);
    for (index_t r = 0; r < n; ++r)
      for (index_t c = 0; c < s; ++c) q[i](r, c) = h(r, 2 * e + c) * double(w.gamma(i, c)) + double(w.beta(i, c));
    rope(q[i], 0, layer.rope_base);
  }
  const matrix_d v = h.middleCols(e, e);
  flash_params p;
  p.causal = layer.mixed.mode == flash_mode::causal;
  matrix_d bias;
  if (layer.attention == gau_attention::flash_quad) {
    p.chunk = std::max<index_t>(n, 1);
    p.scale = layer.quad_scale ? double(*layer.quad_scale) : 1.0 / double(n);
    p.norm = flash_norm::none;
    if (layer.quad_bias.data()) {  // the top-left (n, n) block
      bias = to_double(layer.quad_bias).topLeftCorner(n, n);
      p.bias = &bias;
    }
    matrix_d zero = matrix_d::Zero(n, s);  // no linear part: Q_lin = 0
    const matrix_d a = mixed_chunk_attention(q[0], q[1], zero, zero, v, p).o;
    return x + (h.leftCols(e).array() * a.array()).matrix() * w.w_o.cast<double>();
  }
  p.chunk = layer.mixed.chunk;
  p.norm = layer.mixed.norm;
  p.scale = double(layer.mixed.logit_scale());
  if (layer.mixed.bias.data()) {
    bias = to_double(layer.mixed.bias);
    p.bias = &bias;
  }
  const matrix_d a = mixed_chunk_attention(q[0], q[1], q[2], q[3], v, p).o;
  return x + (h.leftCols(e).array() * a.array()).matrix() * w.w_o.cast<double>();
}

}  // namespace reference
LONGCTX_NAMESPACE_END
