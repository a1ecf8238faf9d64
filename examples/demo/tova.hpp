// Demo section: TOVA and the bounded-cache baselines over a long synthetic
// stream under a budget of 1/8 of it, several layers (each with its own cache
// and its own token statistics). Attention is sparse, as in trained models:
// queries and keys follow a slowly drifting latent (recent tokens matter) and
// a few early "needle" tokens keep drawing attention for the whole stream.
// Prints per policy: memory, decode tokens/s, output error against the full
// cache and how many needles are still held at the end.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <tuple>
#include <vector>

#include <longctx/policies/tova.hpp>

namespace demo_tova_detail {

using namespace longctx;

// One layer's stream, (n, h, d) row-major (the (b, n, h, d) layout).
struct layer_stream {
  std::vector<float> q, k, v;
};

// Latent z_t = rho z_{t-1} + sqrt(1 - rho^2) eps per head; k = z, q = z +
// alpha u, v random; needle keys get + beta u. With scale 1/sqrt(d): a recent
// key scores about sqrt(d) rho^lag, a needle alpha beta / sqrt(d), any other
// key about N(0, 1): attention mass sits on the last few tokens and the needles.
inline layer_stream make_stream(unsigned seed, index_t n, index_t h, index_t d, const std::vector<index_t>& needles) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  layer_stream s;
  s.q.resize(std::size_t(n * h * d)), s.k.resize(s.q.size()), s.v.resize(s.q.size());
  const float rho = 0.85f, c = std::sqrt(1 - rho * rho), alpha = 4.0f, beta = 1.6f * std::sqrt(float(d)) / alpha;
  std::vector<float> z(std::size_t(h * d)), u(std::size_t(h * d));
  for (auto& x : z) x = nd(g);
  for (index_t hi = 0; hi < h; ++hi) {  // u: a unit vector per head, scaled by sqrt(d)
    float nrm = 0;
    for (index_t j = 0; j < d; ++j) nrm += (u[std::size_t(hi * d + j)] = nd(g)) * u[std::size_t(hi * d + j)];
    for (index_t j = 0; j < d; ++j) u[std::size_t(hi * d + j)] *= std::sqrt(float(d) / nrm);
  }
  for (index_t t = 0; t < n; ++t) {
    const bool needle = std::binary_search(needles.begin(), needles.end(), t);
    for (index_t i = 0; i < h * d; ++i) {
      z[std::size_t(i)] = rho * z[std::size_t(i)] + c * nd(g);
      const std::size_t at = std::size_t(t * h * d + i);
      s.k[at] = z[std::size_t(i)] + (needle ? beta * u[std::size_t(i)] : 0.0f);
      s.q[at] = z[std::size_t(i)] + alpha / std::sqrt(float(d)) * u[std::size_t(i)];
      s.v[at] = nd(g);
    }
  }
  return s;
}

struct run_result {
  double seconds = 0, bytes = 0;
  std::vector<float> out;           // (layers, n, h, d)
  std::vector<std::vector<index_t>> held;  // per layer, positions of head 0
};

// One multi-layer decode loop for any sequence policy.
template <sequence_policy Policy>
run_result run(const Policy& p, const std::vector<layer_stream>& layers, index_t n, index_t prompt, index_t h,
               index_t d) {
  run_result r;
  r.out.assign(layers.size() * std::size_t(n * h * d), 0.0f);
  std::vector<typename Policy::state_type> caches;
  for (std::size_t l = 0; l < layers.size(); ++l) caches.push_back(p.make_state({1, h, h, d, d}));
  const auto views = [&](std::size_t l) {
    const auto& s = layers[l];
    return std::tuple{from_bnhd<dynamic_extent, const float>(s.q.data(), 1, n, h, d),
                      from_bnhd<dynamic_extent, const float>(s.k.data(), 1, n, h, d),
                      from_bnhd<dynamic_extent, const float>(s.v.data(), 1, n, h, d),
                      from_bnhd(r.out.data() + l * std::size_t(n * h * d), 1, n, h, d)};
  };
  for (std::size_t l = 0; l < layers.size(); ++l) {  // prefill: one segment per layer
    const auto [q, k, v, o] = views(l);
    p.forward(caches[l], {q.tokens(0, prompt), k.tokens(0, prompt), v.tokens(0, prompt)}, o.tokens(0, prompt));
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (index_t t = prompt; t < n; ++t)
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const auto [q, k, v, o] = views(l);
      p.forward(caches[l], {q.tokens(t, 1), k.tokens(t, 1), v.tokens(t, 1)}, o.tokens(t, 1));
    }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (const auto& c : caches) {
    r.bytes += double(c.footprint());
    r.held.push_back(c.held_positions(0));
  }
  return r;
}

}  // namespace demo_tova_detail

inline void demo_tova(bool quick) {
  using namespace demo_tova_detail;
  const index_t n = quick ? 1024 : 6144, prompt = n / 4, budget = n / 8, h = 4, d = 32, n_layers = 4;
  const std::vector<index_t> needles{9, 57, 130, 201};
  std::vector<layer_stream> layers;
  for (index_t l = 0; l < n_layers; ++l) layers.push_back(make_stream(unsigned(11 + l), n, h, d, needles));

  std::printf("\n== TOVA: bounded KV caches (arXiv 2401.06104) ==\n");
  std::printf("%lld layers, h = h_kv = %lld, d = %lld; stream %lld tokens (prompt %lld as one segment, then decode\n"
              "token by token); budget %lld = 1/8 of the stream. Synthetic sparse attention: a drifting latent\n"
              "(recent tokens matter) plus 4 early needles (9, 57, 130, 201) every query keeps attending to.\n",
              (long long)n_layers, (long long)h, (long long)d, (long long)n, (long long)prompt, (long long)budget);
  const run_result full = run(dense{}, layers, n, prompt, h, d);
  std::printf("%-7s %9s %10s %15s %15s %8s\n", "policy", "cache MB", "tokens/s", "mean rel.err", "rel.err last", "needles");
  const auto report = [&](const char* name, const run_result& r) {
    // Per decoded row (layer, token, head): |o - o_full| / |o_full|.
    double sum = 0, last = 0;
    index_t rows = 0, last_rows = 0;
    for (index_t l = 0; l < n_layers; ++l)
      for (index_t t = prompt; t < n; ++t)
        for (index_t hi = 0; hi < h; ++hi) {
          const std::size_t at = std::size_t(((l * n + t) * h + hi) * d);
          double e = 0, f = 0;
          for (index_t j = 0; j < d; ++j) {
            const double a = r.out[at + std::size_t(j)], b = full.out[at + std::size_t(j)];
            e += (a - b) * (a - b);
            f += b * b;
          }
          const double rel = std::sqrt(e / std::max(f, 1e-30));
          sum += rel, ++rows;
          if (t >= n - n / 8) last += rel, ++last_rows;
        }
    int held = 0;
    for (const auto& hp : r.held)
      for (index_t t : needles) held += std::binary_search(hp.begin(), hp.end(), t);
    std::printf("%-7s %9.2f %10.0f %15.3e %15.3e %5d/%lld\n", name, r.bytes / 1e6, double(n - prompt) / r.seconds,
                sum / double(rows), last / double(std::max<index_t>(last_rows, 1)), held,
                (long long)(needles.size() * std::size_t(n_layers)));
  };
  report("full", full);
  report("tova", run(tova{.budget = budget}, layers, n, prompt, h, d));
  report("h2o", run(h2o_cache{.budget = budget}, layers, n, prompt, h, d));
  report("sinks", run(sinks_cache{.budget = budget}, layers, n, prompt, h, d));
  report("window", run(window_cache{.budget = budget}, layers, n, prompt, h, d));
  std::printf("rel.err: per decoded (layer, token, head) row, mean over all rows and over the last eighth of the\n"
              "stream; needles: needle rows still held at the end over all layers. tokens/s: decode, all layers,\n"
              "one thread, on a shared machine. Synthetic statistics, not a language model: this shows which rows\n"
              "each policy keeps and what dropping the others costs, not the paper's perplexities.\n");
}
