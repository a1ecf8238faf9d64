// Double-precision oracle of Infini-attention (PAPERS.md section 1) for one
// query head over a whole token sequence: per segment, retrieval from the old
// memory, causal softmax attention inside the segment, gate, then the update.
// q, q_mem (n, d_k); k, k_mem (n, d_k); v (n, d_v). For tests only.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "attention.hpp"
#include "linear_state.hpp"

LONGCTX_NAMESPACE_BEGIN
namespace reference {

struct infini_head_params {
  index_t segment = 1;
  double scale = 1;
  std::vector<double> gate;  // (d_v): sigmoid(beta) per value column
  feature_map phi = feature_map::elu_plus_one;
  update_rule rule = update_rule::linear;
  double epsilon = 1e-6;
  bool read_only = false;
};

struct infini_head_result {
  std::vector<double> o;          // (n, d_v)
  std::vector<double> max_logit;  // (n): max |scaled logit| of the row's local attention
  std::vector<double> mem_bound;  // (n): magnitude bound of the row's retrieval (linear_state.hpp)
  std::vector<double> mem_terms;  // (n): keys folded into the memory the row read
  double max_v = 0;               // max |v| over the sequence
  linear_state state;             // the memory after the sequence
};

// `state` is the initial memory (all zero: the paper's first segment). A
// trailing partial segment is attended to but not folded, as in streaming.
template <class T>
infini_head_result infini_head(matrix_view<T> q, matrix_view<T> k, matrix_view<T> v, matrix_view<T> q_mem,
                               matrix_view<T> k_mem, const infini_head_params& p, linear_state state) {
  const index_t n = q.extent(0), d_v = v.extent(1);
  infini_head_result r;
  r.o.assign(std::size_t(n * d_v), 0.0);
  r.max_logit.assign(std::size_t(n), 0.0);
  r.mem_bound.assign(std::size_t(n), 0.0);
  r.mem_terms.assign(std::size_t(n), 0.0);
  for (index_t t = 0; t < n; ++t)
    for (index_t c = 0; c < d_v; ++c) r.max_v = std::max(r.max_v, std::abs(double(v(t, c))));
  const retrieval_norm nm{normaliser::z_denominator, float(p.epsilon), 1.0};
  for (index_t s0 = 0; s0 < n; s0 += p.segment) {
    const index_t len = std::min(p.segment, n - s0);
    const retrieval_result mem = retrieve(state, p.phi, nm, q_mem.rows(s0, len));
    const attention_result dot =
        attention_head(q.rows(s0, len), k.rows(s0, len), v.rows(s0, len), p.scale, causal{});
    for (index_t i = 0; i < len; ++i) {
      const std::size_t row = std::size_t(s0 + i);
      for (index_t c = 0; c < d_v; ++c) {
        const double g = p.gate[std::size_t(c)];
        r.o[row * std::size_t(d_v) + std::size_t(c)] =
            g * mem.o[std::size_t(i * d_v + c)] + (1 - g) * dot.o[std::size_t(i * d_v + c)];
      }
      for (index_t j = 0; j <= i; ++j)
        r.max_logit[row] = std::max(r.max_logit[row], std::abs(dot.logits[std::size_t(i * len + j)]));
      r.mem_bound[row] = mem.bound[std::size_t(i)];
      r.mem_terms[row] = state.terms;
    }
    if (len == p.segment && !p.read_only) update(state, p.phi, p.rule, nm, k_mem.rows(s0, len), v.rows(s0, len));
  }
  r.state = std::move(state);
  return r;
}

}  // namespace reference
LONGCTX_NAMESPACE_END
