// FLASH (arXiv 2202.10447, PAPERS.md section 2): mixed-chunk attention and
// the Gated Attention Unit. Single head. Per chunk g of C tokens:
//   out_g = relu(Q_quad,g K_quad,g^T * scale + B)^2 V_g  +  Q_lin,g S_g / divisor_g,
// S_g = sum of K_lin,h^T V_h over earlier chunks h < g (causal) or all chunks
// (non-causal). Shapes: q_quad, k_quad, q_lin, k_lin (n, s), v (n, e),
// out (n, e). Causal calls stream: any n per call (whole prompt, segments,
// token by token) gives the same bits; the state holds S, the chunk count and
// the unfinished chunk's K_quad, K_lin, V rows.
#pragma once

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include <Eigen/Core>

#include "../kernels/chunk_attention.hpp"
#include "../kernels/executor.hpp"
#include "../kernels/linear_state.hpp"
#include "../kernels/rope.hpp"
#include "../kernels/scratch.hpp"
#include "../tensor/eigen.hpp"

LONGCTX_NAMESPACE_BEGIN

// Normalisation of the linear (cross-chunk) part.
enum class flash_norm {
  chunk_mean,  // / (C * visible chunks), no visible chunk gives 0: the paper's pseudocode (default)
  chunk_sum,   // / C, a plain sum over visible chunks (a popular port)
  none,        // no division: the paper's equations
};

enum class flash_mode { causal, non_causal };

// One forward() call's tokens: q_quad, k_quad, q_lin, k_lin (n, s), v (n, e).
struct flash_input {
  matrix_view<const float> q_quad, k_quad, q_lin, k_lin, v;
};

namespace detail {
// A run of a call's rows inside one chunk: rows [t0, t0 + len) of the call
// sit at positions [p0, p0 + len) of global chunk g.
struct flash_piece {
  index_t t0, len, p0, g;
  bool completes;  // the chunk ends with this piece
  bool buffered;   // the chunk started in an earlier call: keys live in the state
};

// A column slice [c0, c0 + w) of a row-major matrix.
template <class T>
matrix_view<T> columns(matrix_view<T> m, index_t c0, index_t w) {
  return matrix_view<T>(m.data() + c0, typename matrix_view<T>::extents_type(m.extent(0), w), {m.stride(0), 1});
}
}  // namespace detail

struct flash {
  // ---- Parameters (designated initialisers: flash{.chunk = 128}). -------
  index_t chunk = 256;                   // C: tokens per chunk (the last one may be partial)
  flash_mode mode = flash_mode::causal;
  flash_norm norm = flash_norm::chunk_mean;
  std::optional<float> scale{};          // quadratic logit scale; default 1/C
  // Relative-position bias B (C, C) of the quadratic part, indexed by the
  // query's and key's positions inside the chunk (the same for every chunk,
  // as a relative bias is); empty: none.
  matrix_view<const float> bias{};

  // Value columns per task of the linear part: the state is split by columns
  // so the causal scan over chunks runs in parallel without changing a bit
  // (every element of S is its own FMA chain). A multiple of 16 (the widest
  // vector), so slices never share a padded vector.
  static constexpr index_t column_slice = 128;
  // Query rows per task of the quadratic part (K^T is packed per task).
  static constexpr index_t quad_rows_per_task = 2 * chunk_attention_block_q;

  class state_type {
   public:
    state_type() = default;
    index_t s() const noexcept { return s_; }
    index_t e() const noexcept { return e_; }
    index_t chunk() const noexcept { return c_; }
    index_t chunks_folded() const noexcept { return g_; }
    index_t position_in_chunk() const noexcept { return pos_; }
    index_t tokens_seen() const noexcept { return g_ * c_ + pos_; }
    // S (s, e) = sum of finished chunks' K_lin^T V, row stride ld_m.
    linear_state_view<const float> memory() const noexcept {
      return {m_.data(), z_.data(), s_, e_, linear_state_ld(e_)};
    }
    // Floats held: S, z, and the unfinished chunk's buffers; constant in n.
    index_t floats() const noexcept {
      return index_t(m_.size() + z_.size() + kq_.size() + kl_.size() + v_.size());
    }

   private:
    friend struct flash;
    index_t s_ = 0, e_ = 0, c_ = 0, g_ = 0, pos_ = 0;
    bool closed_ = false;                  // a non-causal call consumed the state
    std::vector<float> m_, z_;             // (s, ld_m), (s)
    std::vector<float> kq_, kl_, v_;       // (C, s), (C, s), (C, e)
  };

  state_type make_state(index_t s, index_t e) const {
    check_params("flash::make_state");
    require(s > 0, "flash::make_state", "s", "must be > 0, got ", s);
    require(e > 0, "flash::make_state", "e", "must be > 0, got ", e);
    state_type st;
    st.s_ = s, st.e_ = e, st.c_ = chunk;
    st.m_.assign(std::size_t(s * linear_state_ld(e)), 0.0f);
    st.z_.assign(std::size_t(s), 0.0f);
    st.kq_.assign(std::size_t(chunk * s), 0.0f);
    st.kl_.assign(std::size_t(chunk * s), 0.0f);
    st.v_.assign(std::size_t(chunk * e), 0.0f);
    return st;
  }

  float logit_scale() const noexcept { return scale ? *scale : 1.0f / float(chunk); }

  // The linear part's normalisation for a chunk that sees `visible` chunks.
  retrieval_norm linear_norm(index_t visible) const noexcept {
    switch (norm) {
      case flash_norm::chunk_mean: return {normaliser::block_mean, 1e-6f, double(chunk) * double(visible)};
      case flash_norm::chunk_sum: return {normaliser::block_mean, 1e-6f, double(chunk)};
      case flash_norm::none: break;
    }
    return {normaliser::none, 1e-6f, 1.0};
  }

  // Attends the call's n tokens. Causal: continues the state's sequence
  // (tokens_seen() earlier tokens). Non-causal: the call is the whole
  // sequence; the state must be fresh and cannot be used again.
  template <class Arch = default_arch, executor Exec = serial_executor>
  void forward(state_type& st, const flash_input& in, matrix_view<float> out, Exec&& exec = {}) const {
    constexpr const char* where = "flash::forward";
    check_params(where);
    require(st.c_ == chunk && st.s_ > 0, where, "state", "made for chunk ", st.c_, " (s ", st.s_,
            "), this policy has chunk ", chunk);
    require(!st.closed_, where, "state", "already consumed by a non-causal call (make a new state)");
    const index_t n = in.q_quad.extent(0), s = st.s_, e = st.e_;
    const auto shapes = [&] {
      return detail::concat("q_quad ", shape_of(in.q_quad), ", k_quad ", shape_of(in.k_quad), ", q_lin ",
                            shape_of(in.q_lin), ", k_lin ", shape_of(in.k_lin), ", v ",
                            shape_of(in.v), ", out ", shape_of(out), ", state s ", s, " e ", e);
    };
    for (auto [view, name] : {std::pair{in.q_quad, "q_quad"}, std::pair{in.k_quad, "k_quad"},
                              std::pair{in.q_lin, "q_lin"}, std::pair{in.k_lin, "k_lin"}}) {
      require(view.extent(0) == n && view.extent(1) == s, where, name, "must be (n, s): ", shapes);
      require_unit_inner_stride(view, where, name);
      require_data(view, where, name);
    }
    require(in.v.extent(0) == n && in.v.extent(1) == e, where, "v", "must be (n, e): ", shapes);
    require(out.extent(0) == n && out.extent(1) == e, where, "out", "must be (n, e): ", shapes);
    require_unit_inner_stride(in.v, where, "v");
    require_unit_inner_stride(out, where, "out");
    require_data(in.v, where, "v");
    require_data(out, where, "out");
    if (mode == flash_mode::non_causal) {
      require(st.tokens_seen() == 0, where, "state", "non-causal attention needs the whole sequence in one call on "
              "a fresh state; this one has seen ", st.tokens_seen(), " tokens");
      st.closed_ = true;
    }
    if (n == 0) return;
    const bool causal = mode == flash_mode::causal;

    // Split the call at chunk boundaries.
    std::vector<detail::flash_piece> pieces;
    for (index_t t = 0, pos = st.pos_, g = st.g_; t < n;) {
      const index_t len = std::min(n - t, chunk - pos);
      pieces.push_back({t, len, pos, g, pos + len == chunk, pos > 0});
      t += len;
      pos += len;
      if (pos == chunk) pos = 0, ++g;
    }
    const detail::flash_piece first = pieces.front();
    if (first.buffered) {  // the unfinished chunk's keys join the buffer first
      copy_rows(in.k_quad, first.t0, first.len, st.kq_.data() + first.p0 * s, s);
      copy_rows(in.k_lin, first.t0, first.len, st.kl_.data() + first.p0 * s, s);
      copy_rows(in.v, first.t0, first.len, st.v_.data() + first.p0 * e, e);
    }

    // Quadratic part: every (piece, row group) is independent.
    const float sc = logit_scale();
    // A task packs its keys' K^T and V (as much copying as 1/50 of the
    // task's FLOPs per row): whole chunks per task when there are enough of
    // them to keep the executor busy, row groups otherwise.
    const index_t rows_per_task =
        index_t(pieces.size()) >= 4 * index_t(exec.concurrency()) ? chunk : quad_rows_per_task;
    std::vector<index_t> task_piece, task_row;
    for (std::size_t p = 0; p < pieces.size(); ++p)
      for (index_t r = 0; r < pieces[p].len; r += rows_per_task) {
        task_piece.push_back(index_t(p));
        task_row.push_back(r);
      }
    exec.parallel_for(index_t(task_piece.size()), [&](index_t task) {
      const detail::flash_piece& pc = pieces[std::size_t(task_piece[std::size_t(task)])];
      const index_t r0 = task_row[std::size_t(task)], nr = std::min(rows_per_task, pc.len - r0);
      // Keys this row group can see: causal stops at its last row.
      const index_t keys = causal ? pc.p0 + r0 + nr : pc.p0 + pc.len;
      const matrix_view<const float> k =
          pc.buffered ? make_matrix<dynamic_extent, const float>(st.kq_.data(), keys, s)
                      : in.k_quad.rows(pc.t0, keys);
      const matrix_view<const float> v =
          pc.buffered ? make_matrix<dynamic_extent, const float>(st.v_.data(), keys, e) : in.v.rows(pc.t0, keys);
      matrix_view<const float> b{};
      if (bias.data())
        b = matrix_view<const float>(bias.data() + (pc.p0 + r0) * bias.stride(0),
                                     matrix_view<const float>::extents_type(nr, keys), {bias.stride(0), 1});
      thread_local scratch_buffer<float> buf;
      const index_t pack = chunk_pack_scratch<Arch>(keys, s, e);
      float* scratch = buf.grow(pack + chunk_rows_scratch<Arch>(keys, e));
      const chunk_operands ops = prepare_chunk<Arch>(k, v, scratch, nr > 2);
      chunk_attention_rows<Arch, false>(in.q_quad.rows(pc.t0 + r0, nr), ops, out.rows(pc.t0 + r0, nr), sc, b,
                                        chunk_mask{causal, pc.p0 + r0}, scratch + pack);
    });

    // Linear part: per column slice of S, the scan over chunks in order.
    const index_t slices = (e + column_slice - 1) / column_slice, ld_m = linear_state_ld(e);
    std::vector<float> ones(std::size_t(std::min(e, column_slice)), 1.0f);
    std::vector<float> z_slices(std::size_t(slices * s), 0.0f);  // z is unused by FLASH's norms
    const index_t total_chunks = causal ? 0 : (n + chunk - 1) / chunk;
    exec.parallel_for(slices, [&](index_t sl) {
      const index_t c0 = sl * column_slice, w = std::min(column_slice, e - c0);
      linear_state_view<float> mem{st.m_.data() + c0, z_slices.data() + sl * s, s, w, ld_m};
      thread_local scratch_buffer<float> buf;
      float* scratch =
          buf.grow(std::max(linear_update_scratch(s, w), linear_retrieve_scratch(s, w)));
      const retrieval_combine add{ones.data(), ones.data()};
      const auto fold = [&](const detail::flash_piece& pc) {
        const index_t rows = pc.p0 + pc.len;
        const matrix_view<const float> kl = pc.buffered ? make_matrix<dynamic_extent, const float>(st.kl_.data(), rows, s)
                                                        : in.k_lin.rows(pc.t0, rows);
        const matrix_view<const float> v = pc.buffered ? make_matrix<dynamic_extent, const float>(st.v_.data(), rows, e)
                                                       : in.v.rows(pc.t0, rows);
        linear_update<Arch, float>(mem, feature_map::identity, update_rule::linear, linear_norm(0), kl,
                                   detail::columns(v, c0, w), scratch);
      };
      const auto retrieve = [&](const detail::flash_piece& pc, index_t visible) {
        linear_retrieve<Arch, float>(mem, feature_map::identity, linear_norm(visible), in.q_lin.rows(pc.t0, pc.len),
                                     detail::columns(out.rows(pc.t0, pc.len), c0, w), add, scratch);
      };
      if (causal) {
        for (const auto& pc : pieces) {
          // Chunk 0 reads an all-zero S: its linear term is exactly 0, skipped.
          if (pc.g > 0) retrieve(pc, pc.g);
          if (pc.completes) fold(pc);
        }
      } else {
        for (const auto& pc : pieces) fold(pc);
        for (const auto& pc : pieces) retrieve(pc, total_chunks);
      }
    });

    // The trailing unfinished chunk, if it began in this call, joins the buffer.
    const detail::flash_piece last = pieces.back();
    if (causal && !last.completes && !last.buffered) {
      copy_rows(in.k_quad, last.t0, last.len, st.kq_.data(), s);
      copy_rows(in.k_lin, last.t0, last.len, st.kl_.data(), s);
      copy_rows(in.v, last.t0, last.len, st.v_.data(), e);
    }
    const index_t total = st.pos_ + n;
    st.g_ += total / chunk;
    st.pos_ = total % chunk;
  }

 private:
  void check_params(const char* where) const {
    require(chunk > 0, where, "chunk", "must be > 0, got ", chunk);
    require(!scale || std::isfinite(*scale), where, "scale", "must be finite, got ", scale.value_or(0.0f));
    if (bias.data()) {
      require(bias.extent(0) == chunk && bias.extent(1) == chunk, where, "bias", "must be (C, C) = (", chunk, ", ",
              chunk, "), got ", shape_of(bias));
      require_unit_inner_stride(bias, where, "bias");
    }
  }
  static void copy_rows(matrix_view<const float> src, index_t t0, index_t len, float* dst, index_t cols) {
    for (index_t r = 0; r < len; ++r)
      std::copy_n(src.data() + (t0 + r) * src.stride(0), cols, dst + r * cols);
  }
};

// ---- Gated Attention Unit layer (the paper's appendix pseudocode). --------
//   [U | V | Z] = SiLU(norm(X) W + b),  U, V (n, e), Z (n, s)
//   Q_quad, K_quad, Q_lin, K_lin = Z * gamma_i + beta_i, then RoPE (global positions)
//   A = attention(...) (n, e);  Y = X + (U * A) W_o.
// X, Y (n, d_model). Single head.

enum class gau_norm {
  scale_norm,  // g * x / max(||x||_2, epsilon), g a learned scalar (Nguyen & Salazar; the paper's choice)
  layer_norm,  // (x - mean) / sqrt(var + epsilon) * gain + bias, per feature
};

enum class gau_attention {
  mixed_chunk,  // FLASH: the `flash` policy above
  flash_quad,   // FLASH-Quad: one chunk = the whole call, scale 1/n, no linear part
};

// One layer's weights, fp32, row-major.
struct gau_weights {
  using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  matrix w;                  // (d_model, 2e + s): the [U | V | Z] projection
  Eigen::RowVectorXf b;      // (2e + s)
  matrix gamma, beta;        // (4, s): rows q_quad, k_quad, q_lin, k_lin
  matrix w_o;                // (e, d_model)
  Eigen::RowVectorXf norm_gain;  // layer_norm: (d_model); scale_norm: (1), the scalar g
  Eigen::RowVectorXf norm_bias;  // layer_norm: (d_model); scale_norm: unused

  index_t d_model() const noexcept { return index_t(w.rows()); }
  index_t e() const noexcept { return index_t(w_o.rows()); }
  index_t s() const noexcept { return index_t(gamma.cols()); }
};

struct gau {
  gau_norm norm = gau_norm::scale_norm;
  gau_attention attention = gau_attention::mixed_chunk;
  flash mixed{};                       // mixed_chunk: chunk, mode, normalisation, bias
  std::optional<float> quad_scale{};   // flash_quad: logit scale; default 1/n
  float norm_epsilon = 1e-5f;
  double rope_base = 10000.0;

  class state_type {
   public:
    state_type() = default;
    index_t position() const noexcept { return pos_; }
    const flash::state_type& attention_state() const noexcept { return attn_; }

   private:
    friend struct gau;
    flash::state_type attn_;
    index_t pos_ = 0;
    bool closed_ = false;
    gau_weights::matrix xn_, h_, q_[4], a_;  // work buffers, reused across calls
  };

  state_type make_state(const gau_weights& w) const {
    check_weights(w, "gau::make_state");
    state_type st;
    st.attn_ = mixed.make_state(w.s(), w.e());
    return st;
  }

  // Y (n, d_model) = layer(X (n, d_model)), continuing the state's sequence
  // (positions start at position()). Causal mixed-chunk attention streams:
  // calling it token by token agrees with one call up to the projections'
  // rounding (Eigen's GEMV and GEMM round differently); the attention itself
  // is bit-exact. flash_quad and non-causal need the whole sequence in one
  // call on a fresh state. y may alias x.
  template <class Arch = default_arch, executor Exec = serial_executor>
  void forward(const gau_weights& w, state_type& st, matrix_view<const float> x, matrix_view<float> y,
               Exec&& exec = {}) const {
    constexpr const char* where = "gau::forward";
    check_weights(w, where);
    const index_t n = x.extent(0), dm = w.d_model(), e = w.e(), s = w.s(), hw = 2 * e + s;
    require(st.attn_.s() == s && st.attn_.e() == e, where, "state", "made for s ", st.attn_.s(), ", e ",
            st.attn_.e(), ", weights have s ", s, ", e ", e);
    require(!st.closed_, where, "state", "already consumed by a whole-sequence call (make a new state)");
    require(x.extent(1) == dm, where, "x", "must be (n, d_model = ", dm, "), got ", shape_of(x));
    require(y.extent(0) == n && y.extent(1) == dm, where, "y", "must be (n, d_model) = (", n, ", ", dm, "), got ",
            shape_of(y));
    require_unit_inner_stride(x, where, "x");
    require_unit_inner_stride(y, where, "y");
    require_data(x, where, "x");
    require_data(y, where, "y");
    const bool whole = attention == gau_attention::flash_quad || mixed.mode == flash_mode::non_causal;
    if (whole) {
      require(st.pos_ == 0, where, "state", "flash_quad / non-causal attention needs the whole sequence in one "
              "call on a fresh state; this one is at position ", st.pos_);
      st.closed_ = true;
    }
    if (n == 0) return;
    using row_map = Eigen::Map<const gau_weights::matrix, Eigen::Unaligned, Eigen::OuterStride<>>;
    using row_map_mut = Eigen::Map<gau_weights::matrix, Eigen::Unaligned, Eigen::OuterStride<>>;
    const row_map X(x.data(), n, dm, Eigen::OuterStride<>(x.stride(0)));
    st.xn_.resize(n, dm);
    st.h_.resize(n, hw);
    for (auto& q : st.q_) q.resize(n, s);
    st.a_.resize(n, e);

    // Row blocks run in parallel through the projections (Eigen itself is
    // single-threaded here); block size only changes which GEMM shape runs.
    constexpr index_t RB = 128;
    const index_t blocks = (n + RB - 1) / RB;
    exec.parallel_for(blocks, [&](index_t blk) {
      const index_t r0 = blk * RB, nr = std::min(RB, n - r0);
      for (index_t r = r0; r < r0 + nr; ++r) normalise_row(w, X.row(r), st.xn_.row(r));
      st.h_.middleRows(r0, nr).noalias() = st.xn_.middleRows(r0, nr) * w.w;
      for (index_t r = r0; r < r0 + nr; ++r) {
        float* hr = st.h_.row(r).data();
        for (index_t c = 0; c < hw; ++c) {
          const float t = hr[c] + w.b[c];
          hr[c] = t / (1.0f + std::exp(-t));  // SiLU; exp(-t) = inf gives -0 / 0, never NaN for finite t
        }
        const float* z = hr + 2 * e;
        for (int i = 0; i < 4; ++i) {
          float* qr = st.q_[i].row(r).data();
          const float* g = w.gamma.row(i).data();
          const float* bb = w.beta.row(i).data();
          for (index_t c = 0; c < s; ++c) qr[c] = z[c] * g[c] + bb[c];
        }
      }
      for (auto& q : st.q_) rope_rotate(as_view(q).rows(r0, nr), st.pos_ + r0, rope_base);
    });

    const auto view_of = [](const gau_weights::matrix& m) { return matrix_view<const float>(as_view(m)); };
    const matrix_view<const float> v(st.h_.data() + e, matrix_view<const float>::extents_type(n, e), {hw, 1});
    const matrix_view<float> a = as_view(st.a_);
    if (attention == gau_attention::mixed_chunk) {
      mixed.forward<Arch>(st.attn_, flash_input{view_of(st.q_[0]), view_of(st.q_[1]), view_of(st.q_[2]),
                                                view_of(st.q_[3]), v},
                          a, exec);
    } else {
      require(mixed.bias.data() == nullptr, where, "mixed.bias", "flash_quad takes no (C, C) chunk bias");
      const float sc = quad_scale ? *quad_scale : 1.0f / float(n);
      const bool causal = mixed.mode == flash_mode::causal;
      // Rows in parallel blocks; each packs the keys its rows can see.
      const index_t qb = (n + flash::quad_rows_per_task - 1) / flash::quad_rows_per_task;
      exec.parallel_for(qb, [&](index_t blk) {
        const index_t r0 = blk * flash::quad_rows_per_task, nr = std::min(flash::quad_rows_per_task, n - r0);
        const index_t keys = causal ? r0 + nr : n;
        thread_local scratch_buffer<float> buf;
        const index_t pack = chunk_pack_scratch<Arch>(keys, s, e);
        float* scratch = buf.grow(pack + chunk_rows_scratch<Arch>(keys, e));
        const chunk_operands ops = prepare_chunk<Arch>(view_of(st.q_[1]).rows(0, keys), v.rows(0, keys), scratch);
        chunk_attention_rows<Arch, false>(view_of(st.q_[0]).rows(r0, nr), ops, a.rows(r0, nr), sc, {},
                                          chunk_mask{causal, r0}, scratch + pack);
      });
    }

    exec.parallel_for(blocks, [&](index_t blk) {
      const index_t r0 = blk * RB, nr = std::min(RB, n - r0);
      st.a_.middleRows(r0, nr).array() *= st.h_.block(r0, 0, nr, e).array();  // U * A
      row_map_mut Y(y.data() + r0 * y.stride(0), nr, dm, Eigen::OuterStride<>(y.stride(0)));
      if (y.data() != x.data()) Y = X.middleRows(r0, nr);
      Y.noalias() += st.a_.middleRows(r0, nr) * w.w_o;
    });
    st.pos_ += n;
  }

 private:
  template <class In, class Out>
  void normalise_row(const gau_weights& w, const In& xr, Out&& out) const {
    const index_t dm = index_t(xr.size());
    if (norm == gau_norm::scale_norm) {
      double ss = 0;
      for (index_t c = 0; c < dm; ++c) ss += double(xr[c]) * double(xr[c]);
      const float f = float(double(w.norm_gain[0]) / std::max(std::sqrt(ss), double(norm_epsilon)));
      for (index_t c = 0; c < dm; ++c) out[c] = xr[c] * f;
    } else {
      double mean = 0, var = 0;
      for (index_t c = 0; c < dm; ++c) mean += xr[c];
      mean /= double(dm);
      for (index_t c = 0; c < dm; ++c) var += (xr[c] - mean) * (xr[c] - mean);
      var /= double(dm);
      const double inv = 1.0 / std::sqrt(var + double(norm_epsilon));
      for (index_t c = 0; c < dm; ++c)
        out[c] = float((double(xr[c]) - mean) * inv) * w.norm_gain[c] + w.norm_bias[c];
    }
  }

  void check_weights(const gau_weights& w, const char* where) const {
    const index_t dm = w.d_model(), e = w.e(), s = w.s();
    require(dm > 0 && e > 0 && s > 0, where, "weights", "d_model, e, s must be > 0, got ", dm, ", ", e, ", ", s);
    require(w.w.cols() == 2 * e + s, where, "weights.w", "must be (d_model, 2e + s) = (", dm, ", ", 2 * e + s,
            "), got (", w.w.rows(), ", ", w.w.cols(), ")");
    require(w.b.size() == 2 * e + s, where, "weights.b", "must have 2e + s = ", 2 * e + s, " entries, got ",
            w.b.size());
    require(w.gamma.rows() == 4 && w.beta.rows() == 4 && w.beta.cols() == s, where, "weights.gamma/beta",
            "must be (4, s = ", s, "), got (", w.gamma.rows(), ", ", w.gamma.cols(), ") and (", w.beta.rows(), ", ",
            w.beta.cols(), ")");
    require(w.w_o.cols() == dm, where, "weights.w_o", "must be (e, d_model = ", dm, "), got (", w.w_o.rows(), ", ",
            w.w_o.cols(), ")");
    if (norm == gau_norm::scale_norm)
      require(w.norm_gain.size() == 1, where, "weights.norm_gain", "scale_norm needs 1 gain, got ",
              w.norm_gain.size());
    else
      require(w.norm_gain.size() == dm && w.norm_bias.size() == dm, where, "weights.norm_gain/norm_bias",
              "layer_norm needs d_model = ", dm, " entries each, got ", w.norm_gain.size(), " and ",
              w.norm_bias.size());
    require(norm_epsilon > 0, where, "norm_epsilon", "must be > 0, got ", norm_epsilon);
  }
};

LONGCTX_NAMESPACE_END
