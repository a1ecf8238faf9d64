// The Gated Attention Unit layer of FLASH (arXiv 2202.10447, PAPERS.md
// section 2), a whole-layer driver: norm, SiLU projection to [U | V | Z],
// per-dim scale/offset heads, RoPE, FLASH or FLASH-Quad attention, gated
// output projection. X, Y (n, d_model). Single head. Uses Eigen for the
// projections (the kernels and policies do not).
#pragma once

#include <algorithm>
#include <cmath>
#include <optional>

#include "../kernels/rope.hpp"
#include "../policies/flash.hpp"
#include "layer_driver.hpp"
#include "../tensor/eigen.hpp"

LONGCTX_NAMESPACE_BEGIN

// ---- Gated Attention Unit layer (the paper's appendix pseudocode). --------
//   [U | V | Z] = SiLU(norm(X) W + b),  U, V (n, e), Z (n, s)
//   Q_quad, K_quad, Q_lin, K_lin = Z * gamma_i + beta_i, then RoPE (global positions)
//   A = attention(...) (n, e);  Y = X + (U * A) W_o.
// X, Y (n, d_model). Single head.

/// The GAU layer's input normalisation.
LONGCTX_UNTAGGED_BEGIN
enum class gau_norm {
  scale_norm,  ///< g * x / max(||x||_2, epsilon), g a learned scalar (Nguyen & Salazar; the paper's choice)
  layer_norm,  ///< (x - mean) / sqrt(var + epsilon) * gain + bias, per feature
};
LONGCTX_UNTAGGED_END

/// The GAU layer's attention.
LONGCTX_UNTAGGED_BEGIN
enum class gau_attention {
  mixed_chunk,  ///< FLASH: the `flash` policy (policies/flash.hpp), b = h = h_kv = 1
  flash_quad,   ///< FLASH-Quad: one chunk = the whole call, scale 1/n, no linear part, bias quad_bias
};
LONGCTX_UNTAGGED_END

/// One GAU layer's weights, fp32, row-major (Eigen matrices), filled by the
/// caller; gau::make_state and every forward() check their shapes.
struct gau_weights {
  using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;  ///< row-major float
  matrix w;                  ///< (d_model, 2e + s): the [U | V | Z] projection
  Eigen::RowVectorXf b;      ///< (2e + s)
  matrix gamma, beta;        ///< (4, s): rows q_quad, k_quad, q_lin, k_lin
  matrix w_o;                ///< (e, d_model)
  Eigen::RowVectorXf norm_gain;  ///< layer_norm: (d_model); scale_norm: (1), the scalar g
  Eigen::RowVectorXf norm_bias;  ///< layer_norm: (d_model); scale_norm: unused

  /// \return d_model, the rows of w
  index_t d_model() const noexcept { return index_t(w.rows()); }
  /// \return e, the rows of w_o
  index_t e() const noexcept { return index_t(w_o.rows()); }
  /// \return s, the columns of gamma
  index_t s() const noexcept { return index_t(gamma.cols()); }
};

namespace detail {
// The (1, 1, n, d) view of a matrix (n, d) with any row stride (V is a
// column block of the projection).
template <class T>
tensor4_view<T> single_head(matrix_view<T> m) {
  using E = typename tensor4_view<T>::extents_type;
  const index_t n = m.extent(0), ld = m.stride(0);
  return tensor4_view<T>(m.data(), E(1, 1, n, m.extent(1)), {n * ld, n * ld, ld, 1});
}
}  // namespace detail

/// The Gated Attention Unit layer of FLASH, a whole-layer driver (a
/// layer_driver): X (n, d_model) -> Y = X + (U * A) W_o with [U | V | Z] =
/// SiLU(norm(X) W + b), the four scale/offset heads of Z, RoPE with global
/// positions and A the FLASH (mixed_chunk) or FLASH-Quad attention (docs:
/// papers, section 2). Single head. A state is made from the layer's
/// weights and keeps them by reference.
///
/// Cost of n rows: O(n d_model (3e + s)) for the projections plus the
/// attention: mixed_chunk as flash (O(n C (s + e)) + O(n s e)), flash_quad
/// O(n^2 (s + e)). Causal mixed-chunk attention streams: any split of the
/// rows (token by token) agrees with one call up to the projections'
/// rounding; flash_quad and non-causal need the whole sequence in one call
/// on a fresh state.
///
/// Contract: make_state() and forward() check the weights' shapes,
/// norm_epsilon > 0 and a finite rope_base > 0; forward() also checks x, y
/// ((n, d_model), contiguous rows; y is x or disjoint from it), the state,
/// and for flash_quad no chunk bias, a finite quad_scale and a quad_bias of
/// at least (n, n) (mixed_chunk: no quad_bias), all before
/// changing the state; errors throw invalid_argument. Thread safety: the
/// layer and its weights are read-only and may serve many states on many
/// threads; a state is used by one thread at a time.
struct gau {
  gau_norm norm = gau_norm::scale_norm;  ///< scale_norm (the paper) or layer_norm
  gau_attention attention = gau_attention::mixed_chunk;  ///< FLASH or FLASH-Quad
  flash mixed{};  ///< mixed_chunk: chunk, mode, normalisation, bias; its compute serves flash_quad too
  std::optional<float> quad_scale{};   ///< flash_quad: logit scale; default 1/n
  /// flash_quad: the relative-position bias B of relu(Q K^T / n + B)^2,
  /// (n_max, n_max) over positions 0..n_max-1 of the sequence; a call of n
  /// rows uses its top-left (n, n) block (entry (i, j): query i, key j).
  /// Empty (data null): no bias. The layer keeps the view, not the values.
  matrix_view<const float> quad_bias{};
  float norm_epsilon = 1e-5f;  ///< the norm's epsilon, > 0
  double rope_base = 10000.0;  ///< RoPE base, finite and > 0

  /// A GAU stream: the weights it was made from (by reference), the FLASH
  /// state, the position and work buffers reused across calls. Copyable and
  /// movable (copies share the weights). Used by one thread at a time.
  class state_type {
   public:
    /// An empty state forward() rejects; assign one from make_state.
    state_type() = default;
    /// \return rows seen: the next row's global (RoPE) position
    index_t position() const noexcept { return pos_; }
    /// \return the mixed_chunk attention's state (unused by flash_quad)
    const flash::state_type& attention_state() const noexcept { return attn_; }
    /// Bytes held: the attention state and the work buffers of the largest
    /// call (those grow with the longest call's n, not with the stream).
    /// \return the bytes
    std::size_t footprint() const noexcept {
      std::size_t floats = std::size_t(xn_.size() + h_.size() + a_.size());
      for (const auto& q : q_) floats += std::size_t(q.size());
      return attn_.footprint() + floats * sizeof(float);
    }

   private:
    friend struct gau;
    const gau_weights* w_ = nullptr;  // the layer's weights, which must outlive the state
    flash::state_type attn_;
    index_t pos_ = 0;
    bool closed_ = false;
    gau_weights::matrix xn_, h_, q_[4], a_;  // work buffers, reused across calls
  };

  /// A state bound to the layer's weights (kept by reference: they must
  /// outlive it, as a backbone outlives its rmt_state).
  /// \param w the weights; their shapes give d_model, e, s
  /// \return the state at position 0
  /// \throws invalid_argument when a weight's shape or a parameter is wrong
  state_type make_state(const gau_weights& w) const {
    check_weights(w, "gau::make_state");
    state_type st;
    st.w_ = &w;
    st.attn_ = mixed.make_state(attention_dims{.b = 1, .h = 1, .h_kv = 1, .d = w.s(), .d_v = w.e()});
    return st;
  }

  /// Y (n, d_model) = layer(X (n, d_model)), continuing the state's sequence
  /// (positions start at position()). Causal mixed-chunk attention streams:
  /// calling it token by token agrees with one call up to the projections'
  /// rounding (Eigen's GEMV and GEMM round differently); the attention itself
  /// is bit-exact. flash_quad and non-causal need the whole sequence in one
  /// call on a fresh state. y may alias x.
  /// \tparam Arch the SIMD backend (default_arch)
  /// \param st a state from make_state()
  /// \param x (n, d_model) input rows, contiguous rows
  /// \param y (n, d_model) output rows: x itself (in place) or disjoint
  /// \param exec the executor for row blocks and the attention
  /// \throws invalid_argument on bad weights, views or state; st unchanged
  template <arch_tag Arch = default_arch, executor Exec = serial_executor>
  void forward(state_type& st, matrix_view<const float> x, matrix_view<float> y, Exec&& exec = {}) const {
    constexpr const char* where = "gau::forward";
    require(st.w_ != nullptr, where, "state", "not made by make_state");
    const gau_weights& w = *st.w_;
    check_weights(w, where);  // the weights may have been resized since make_state
    const index_t n = x.extent(0), dm = w.d_model(), e = w.e(), s = w.s(), hw = 2 * e + s;
    const attention_dims ad = st.attn_.dims();
    require(ad.d == s && ad.d_v == e, where, "state", "made for s ", ad.d, ", e ", ad.d_v, ", weights have s ", s,
            ", e ", e);
    require(!st.closed_, where, "state", "already consumed by a whole-sequence call (make a new state)");
    require(x.extent(1) == dm, where, "x", "must be (n, d_model = ", dm, "), got ", shape_of(x));
    require(y.extent(0) == n && y.extent(1) == dm, where, "y", "must be (n, d_model) = (", n, ", ", dm, "), got ",
            shape_of(y));
    require_views(where, "x", x, "y", y);
    // y may be x itself (in place: x is read into the norm before y is
    // written, row block by row block); any other overlap is rejected.
    if (y.data() != x.data() || y.stride(0) != x.stride(0)) require_disjoint(where, "y", y, "x", x);
    const bool whole = attention == gau_attention::flash_quad || mixed.mode == flash_mode::non_causal;
    if (whole)
      require(st.pos_ == 0, where, "state", "flash_quad / non-causal attention needs the whole sequence in one "
              "call on a fresh state; this one is at position ", st.pos_);
    if (attention == gau_attention::flash_quad) {
      require(mixed.bias.data() == nullptr, where, "mixed.bias",
              "flash_quad takes no (C, C) chunk bias; its bias is quad_bias, (n_max, n_max)");
      require(!quad_scale || std::isfinite(*quad_scale), where, "quad_scale", "must be finite, got ",
              quad_scale.value_or(0.0f));
      if (quad_bias.data()) {
        require(quad_bias.extent(0) >= n && quad_bias.extent(1) >= n, where, "quad_bias",
                "must cover the call's (n, n) = (", n, ", ", n, ") query-key pairs, got ", shape_of(quad_bias));
        require_views(where, "quad_bias", quad_bias);
      }
    } else {
      require(quad_bias.data() == nullptr, where, "quad_bias",
              "is FLASH-Quad's bias; mixed_chunk attention takes mixed.bias (C, C)");
      mixed.check_state_usable(st.attn_, where);  // what the attention would reject of its state
    }
    // Every check passed: from here the call completes. (A whole-sequence
    // call used to close the state before the attention's own checks, so a
    // rejected call left it consumed; fuzz finding layers-gau-closed.)
    require_compute_precision(where, mixed.compute);  // flash_quad uses it too
    require_engine<Arch>(mixed.compute);
    if (whole) st.closed_ = true;
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
      // One batch, one head: (1, 1, n, .) views over the matrices.
      mixed.forward<Arch>(st.attn_,
                          flash_input{detail::single_head(view_of(st.q_[0])), detail::single_head(view_of(st.q_[1])),
                                      detail::single_head(v), detail::single_head(view_of(st.q_[2])),
                                      detail::single_head(view_of(st.q_[3]))},
                          detail::single_head(a), exec);
    } else {
      const float sc = quad_scale ? *quad_scale : 1.0f / float(n);
      const bool causal = mixed.mode == flash_mode::causal;
      // Rows in parallel blocks; each packs the keys its rows can see.
      const index_t qb = (n + flash::quad_rows_per_task - 1) / flash::quad_rows_per_task;
      exec.parallel_for(qb, [&](index_t blk) {
        const index_t r0 = blk * flash::quad_rows_per_task, nr = std::min(flash::quad_rows_per_task, n - r0);
        const index_t keys = causal ? r0 + nr : n;
        thread_local scratch_buffer<float> buf;
        const packed_chunk<Arch> packed(mixed.compute, view_of(st.q_[1]).rows(0, keys), v.rows(0, keys),
                                       buf.grow(packed_chunk<Arch>::scratch_floats(mixed.compute, keys, s, e)));
        // The bias rows of this block; the kernel reads columns [0, keys).
        const matrix_view<const float> bias = quad_bias.data() ? quad_bias.rows(r0, nr) : matrix_view<const float>{};
        packed.attend(view_of(st.q_[0]).rows(r0, nr), a.rows(r0, nr), sc, bias, chunk_mask{causal, r0});
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
      // The factor stays in double: g / epsilon passes FLT_MAX for a tiny
      // epsilon (1e-40), and a zero row times an infinite float factor was
      // NaN (fuzz finding layers-gau-norm-epsilon); |x_c| f <= g always.
      const double f = double(w.norm_gain[0]) / std::max(std::sqrt(ss), double(norm_epsilon));
      for (index_t c = 0; c < dm; ++c) out[c] = float(double(xr[c]) * f);
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
    // Checked here, before a whole-sequence call closes its state (rope_rotate
    // checks it too, but only once the call is under way; fuzz finding
    // layers-gau-closed-rope).
    require(rope_base > 0 && std::isfinite(rope_base), where, "rope_base", "must be finite and > 0, got ", rope_base);
  }
};

static_assert(layer_driver<gau, gau::state_type>, "gau must satisfy layer_driver");

LONGCTX_NAMESPACE_END
