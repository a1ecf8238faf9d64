// The random Infini-attention problem of the policy tests: q, k, v (and
// the separate memory inputs) in either layout, shared by infini.cpp and
// infini_snapshot.cpp.
#pragma once

#include <algorithm>
#include <vector>

#include <longctx/policies/infini.hpp>

#include "../support/support.hpp"

namespace infini_test {
using namespace longctx;

struct tensor4 {
  std::vector<float> data;
  tensor4_view<float> view;
  tensor4(test::rng_t& g, index_t b, index_t h, index_t n, index_t d, bool bnhd, float lo = -1, float hi = 1) {
    data = test::random_floats(g, std::size_t(std::max<index_t>(1, b * h * n * d)), lo, hi);
    view = bnhd ? from_bnhd(data.data(), b, n, h, d) : from_bhnd(data.data(), b, h, n, d);
  }
};

struct problem {
  attention_dims dims;  // d_v given (not 0)
  index_t n = 0;
  bool bnhd = false, separate_mem = false;
  tensor4 q, k, v, qm, km;
  problem(test::rng_t& g, attention_dims d, index_t n_, bool bnhd_, bool sep)
      : dims(d), n(n_), bnhd(bnhd_), separate_mem(sep), q(g, d.b, d.h, n_, d.d, bnhd_),
        k(g, d.b, d.h_kv, n_, d.d, bnhd_), v(g, d.b, d.h_kv, n_, d.d_v, bnhd_, -2, 2),
        qm(g, d.b, d.h, n_, d.d, bnhd_), km(g, d.b, d.h_kv, n_, d.d, bnhd_) {}
  infini_input input(index_t t, index_t len) const {
    infini_input in{q.view.tokens(t, len), k.view.tokens(t, len), v.view.tokens(t, len)};
    if (separate_mem) in.q_mem = qm.view.tokens(t, len), in.k_mem = km.view.tokens(t, len);
    return in;
  }
};

}  // namespace infini_test
