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

#include "../kernels/chunk_attention.hpp"
#include "../runtime/executor.hpp"
#include "../kernels/linear_state.hpp"
#include "../kernels/rope.hpp"
#include "../runtime/scratch.hpp"

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
  template <arch_tag Arch = default_arch, executor Exec = serial_executor>
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

LONGCTX_NAMESPACE_END
