// Double-precision oracle for RMT: the visibility of each convention written
// block by block from its description (PAPERS.md section 3), the example
// backbone as literal formulas over a whole packed sequence (no cache), and
// the segment recurrence. Row-major std::vector<double>; for tests only.
#pragma once

#include <cmath>
#include <vector>

#include "../models/rmt.hpp"
#include "../models/rmt_backbone.hpp"
#include "attention.hpp"

LONGCTX_NAMESPACE_BEGIN
namespace reference {

// Keys [xl (X); read (m); segment (s); write (w)]; query = packed key position q >= X.
inline bool rmt_decoder_visible(rmt_convention conv, rmt_xl xl_vis, index_t X, index_t m, index_t s, index_t q,
                                index_t j, bool read_sees_xl = false) {
  enum kind { xl, read, seg, write };
  auto block = [&](index_t p) { return p < X ? xl : p < X + m ? read : p < X + m + s ? seg : write; };
  const kind bq = block(q), bj = block(j);
  const bool mem_sees_xl = xl_vis == rmt_xl::visible_to_memory;
  if (bq == seg) return j <= q;  // every convention: the segment is causal over everything before it
  // Memory rows see the XL cache only if asked, and the port's read block
  // only if asked again (read_sees_xl).
  if (bj == xl) return mem_sees_xl && !(conv == rmt_convention::isolated_read && bq == read && !read_sees_xl);
  switch (conv) {
    case rmt_convention::causal: return j <= q;
    case rmt_convention::block_visible: return bq == read ? bj == read : true;
    case rmt_convention::isolated_read: return bq == read ? bj == read : true;
  }
  return false;
}

// The example backbone on a whole packed sequence x (n, width) in double,
// after X Transformer-XL rows given as the hidden state entering each layer
// (xl_in[l], (X, width); empty: X = 0): queries are the n packed rows, keys
// [XL; packed]; visible(i, j) for packed row i and key j in [0, X + n). If
// states is non-null it receives, per layer, the (n, width) hidden state
// entering that layer of the packed rows (what a later XL cache holds).
template <arch_tag Arch, class Visible>
std::vector<double> rmt_backbone_forward(const rmt_reference_backbone<Arch>& bb, const std::vector<double>& x,
                                         const std::vector<index_t>& pos, Visible&& visible,
                                         const std::vector<std::vector<double>>& xl_in = {},
                                         std::vector<std::vector<double>>* states = nullptr) {
  const index_t w = bb.width(), n = index_t(pos.size()), heads = bb.config().heads, dh = w / heads,
                hd = bb.config().hidden;
  const index_t X = xl_in.empty() ? 0 : index_t(xl_in[0].size()) / w;
  std::vector<double> h(x);
  for (index_t i = 0; i < n; ++i)
    for (index_t c = 0; c < w; ++c) h[std::size_t(i * w + c)] += double(bb.position_embedding(pos[std::size_t(i)], c));
  auto layer_norm = [&](const std::vector<double>& in) {
    const index_t rows = index_t(in.size()) / w;
    std::vector<double> out(in.size());
    for (index_t i = 0; i < rows; ++i) {
      double mean = 0, var = 0;
      for (index_t c = 0; c < w; ++c) mean += in[std::size_t(i * w + c)];
      mean /= double(w);
      for (index_t c = 0; c < w; ++c) var += std::pow(in[std::size_t(i * w + c)] - mean, 2);
      var /= double(w);
      const double r = 1.0 / std::sqrt(var + double(rmt_reference_backbone<Arch>::layer_norm_eps));
      for (index_t c = 0; c < w; ++c) out[std::size_t(i * w + c)] = (in[std::size_t(i * w + c)] - mean) * r;
    }
    return out;
  };
  auto matmul = [&](const std::vector<double>& a, index_t k, const auto& W) {  // (rows, k) x (k, cols)
    const index_t cols = W.cols(), rows = index_t(a.size()) / k;
    std::vector<double> out(std::size_t(rows * cols), 0.0);
    for (index_t i = 0; i < rows; ++i)
      for (index_t p = 0; p < k; ++p)
        for (index_t c = 0; c < cols; ++c) out[std::size_t(i * cols + c)] += a[std::size_t(i * k + p)] * double(W(p, c));
    return out;
  };
  if (states) states->clear();
  std::size_t l = 0;
  for (const auto& L : bb.layers()) {
    if (states) states->push_back(h);
    std::vector<double> all = X ? xl_in[l] : std::vector<double>{};  // [XL; packed] entering layer l
    all.insert(all.end(), h.begin(), h.end());
    const auto qkv = matmul(layer_norm(all), w, L.wqkv);  // (X + n, 3 w)
    std::vector<double> o(std::size_t(n * w), 0.0);
    for (index_t hh = 0; hh < heads; ++hh) {
      auto col = [&](index_t part, index_t r0, index_t rows) {  // (rows, dh) of q, k or v for head hh
        using E = matrix_view<const double>::extents_type;
        return matrix_view<const double>(qkv.data() + r0 * 3 * w + part * w + hh * dh, E(rows, dh), {3 * w, 1});
      };
      const auto r = attention_head(col(0, X, n), col(1, 0, X + n), col(2, 0, X + n), 1.0 / std::sqrt(double(dh)),
                                    visible);
      for (index_t i = 0; i < n; ++i)
        for (index_t c = 0; c < dh; ++c) o[std::size_t(i * w + hh * dh + c)] = r.o[std::size_t(i * dh + c)];
    }
    const auto proj = matmul(o, w, L.wo);
    for (std::size_t t = 0; t < h.size(); ++t) h[t] += proj[t];
    auto t = matmul(layer_norm(h), w, L.w1);
    for (index_t i = 0; i < n; ++i)
      for (index_t c = 0; c < hd; ++c) {
        const double v = t[std::size_t(i * hd + c)] + double(L.b1(c));
        t[std::size_t(i * hd + c)] = 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
      }
    const auto mlp = matmul(t, hd, L.w2);
    for (index_t i = 0; i < n; ++i)
      for (index_t c = 0; c < w; ++c) h[std::size_t(i * w + c)] += mlp[std::size_t(i * w + c)] + double(L.b2(c));
    ++l;
  }
  return layer_norm(h);
}

struct rmt_result {
  std::vector<double> out;                   // (n, width): segment rows only
  std::vector<std::vector<double>> memory;   // memory after each segment, (m, width) each
};

// The recurrence over input (n, width) with initial memory (m, width). The
// last segment may be partial; its write rows are computed (as rmt::flush).
template <arch_tag Arch>
rmt_result rmt_run(const rmt& p, const rmt_reference_backbone<Arch>& bb, const std::vector<double>& initial_memory,
                   const std::vector<double>& in) {
  const index_t w = bb.width(), m = p.memory, c = p.content(), n = index_t(in.size()) / w;
  const bool dec = p.layout == rmt_layout::decoder;
  rmt_result r{std::vector<double>(in.size()), {}};
  std::vector<double> mem = initial_memory;
  // The XL cache (p.xl > 0): per layer, the hidden state entering it of the
  // last xl content rows so far, in temporal order.
  std::vector<std::vector<double>> xl_state(p.xl > 0 ? bb.layers().size() : 0);
  for (index_t i0 = 0; i0 < n; i0 += c) {
    const index_t s = std::min(c, n - i0);
    std::vector<double> x;
    std::vector<index_t> pos;
    x.insert(x.end(), mem.begin(), mem.end());
    for (index_t k = 0; k < m; ++k) pos.push_back(p.positions(rmt_block::read, k, m, s));
    x.insert(x.end(), in.begin() + i0 * w, in.begin() + (i0 + s) * w);
    for (index_t k = 0; k < s; ++k) pos.push_back(p.positions(rmt_block::segment, k, m, s));
    if (dec) {
      x.insert(x.end(), mem.begin(), mem.end());
      for (index_t k = 0; k < m; ++k) pos.push_back(p.positions(rmt_block::write, k, m, s));
    }
    const index_t X = xl_state.empty() ? 0 : index_t(xl_state[0].size()) / w;
    std::vector<std::vector<double>> states;
    const auto y = rmt_backbone_forward(
        bb, x, pos,
        [&](index_t i, index_t j) {
          return dec ? rmt_decoder_visible(p.convention, p.xl_visibility, X, m, s, X + i, j, p.read_sees_xl) : true;
        },
        X ? xl_state : std::vector<std::vector<double>>{}, p.xl > 0 ? &states : nullptr);
    for (std::size_t l = 0; l < xl_state.size(); ++l) {  // append the content rows, keep the last xl
      auto& z = xl_state[l];
      z.insert(z.end(), states[l].begin() + m * w, states[l].begin() + (m + s) * w);
      const index_t rows = index_t(z.size()) / w;
      if (rows > p.xl) z.erase(z.begin(), z.begin() + (rows - p.xl) * w);
    }
    std::copy(y.begin() + m * w, y.begin() + (m + s) * w, r.out.begin() + i0 * w);
    const index_t mem_row = dec ? m + s : 0;
    mem.assign(y.begin() + mem_row * w, y.begin() + (mem_row + m) * w);
    r.memory.push_back(mem);
  }
  return r;
}

}  // namespace reference
LONGCTX_NAMESPACE_END
