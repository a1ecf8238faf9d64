// FLASH (arXiv 2202.10447, PAPERS.md section 2): mixed-chunk attention as a
// sequence policy (policies/protocol.hpp). Per query head and chunk g of C
// tokens:
//   out_g = relu(Q_quad,g K_quad,g^T * scale + B)^2 V_g  +  Q_lin,g S_g / divisor_g,
// S_g = sum of K_lin,h^T V_h over earlier chunks h < g (causal) or all chunks
// (non-causal). Shapes: q = Q_quad, q_lin (b, h, n, s); k = K_quad, k_lin
// (b, h_kv, n, s); v (b, h_kv, n, e); out (b, h, n, e). GQA: query head hi
// reads KV head hi / (h / h_kv) for both parts (its K_quad, V and its S).
// Causal calls stream: any n per call (whole prompt, segments, token by
// token) gives the same bits; the state holds, per (batch, KV head), S, and
// the unfinished chunk's K_quad, K_lin, V rows, plus the chunk count.
// The GAU layer that produces these inputs is models/gau.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "../kernels/chunk_attention.hpp"
#include "../kernels/linear_state.hpp"
#include "../runtime/executor.hpp"
#include "../runtime/scratch.hpp"
#include "protocol.hpp"
#include "snapshot.hpp"

LONGCTX_NAMESPACE_BEGIN

/// Normalisation of the linear (cross-chunk) part.
LONGCTX_UNTAGGED_BEGIN
enum class flash_norm {
  chunk_mean,  ///< / (C * visible chunks), no visible chunk gives 0: the paper's pseudocode (default)
  chunk_sum,   ///< / C, a plain sum over visible chunks (a popular port)
  none,        ///< no division: the paper's equations
  /// / the number of tokens folded into S: non-causal, the true sequence
  /// length n (a partial last chunk counts its real rows: the port that
  /// divides by n); causal, C * visible chunks (only whole chunks are ever
  /// visible), so the same divisor as chunk_mean, bit for bit.
  token_count,
};
LONGCTX_UNTAGGED_END

/// causal (streaming; S from earlier chunks only) or non_causal (S over all
/// chunks: one call is the whole sequence).
LONGCTX_UNTAGGED_BEGIN
enum class flash_mode { causal, non_causal };
LONGCTX_UNTAGGED_END

/// One forward() call's tokens. FLASH's four scale/offset heads: q, k are the
/// quadratic part's Q_quad, K_quad; q_lin, k_lin the linear part's, empty
/// (data null) meaning "the same as q / k". flash_input{q, k, v} is a valid
/// sequence_input (braces: parenthesised aggregate init needs clang 16).
struct flash_input {
  tensor4_view<const float> q, k, v;           ///< (b, h, n, s), (b, h_kv, n, s), (b, h_kv, n, e)
  tensor4_view<const float> q_lin{}, k_lin{};  ///< (b, h, n, s), (b, h_kv, n, s); empty: q, k
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

inline constexpr const char* flash_kind = "flash";
}  // namespace detail

/// FLASH mixed-chunk attention as a sequence_policy. Per query head and
/// chunk g of C tokens, out_g = relu(Q_quad,g K_quad,g^T scale + B)^2 V_g +
/// Q_lin,g S_g / divisor_g, with S_g the sum of K_lin,h^T V_h over earlier
/// chunks h < g (causal) or all chunks (non-causal); no softmax (docs:
/// papers, section 2). The GAU layer that produces these inputs is gau.
///
/// Shapes: q, q_lin (b, h, n, s); k, k_lin (b, h_kv, n, s); v (b, h_kv, n,
/// e); out (b, h, n, e); attention_dims d = s, d_v = e. GQA: query head hi
/// reads KV head hi / (h / h_kv) for both parts. Causal calls stream: any n
/// per call (whole prompt, segments, token by token) gives the same bits.
///
/// Cost of n tokens: O(b h n C (s + e)) quadratic at most, O(b h n s e)
/// linear retrieval, O(b h_kv C s e) per finished chunk; per token
/// O(C (s + e) + s e) per head, flat in the stream length. State: per
/// (batch, KV head) S (s x e, rows padded to 16 floats) and the unfinished
/// chunk's K_quad, K_lin, V rows: b h_kv (s ld + C (2 s + e)) floats.
///
/// Contract: make_state() checks dims, chunk > 0, a finite scale and a
/// bias of (C, C) with a contiguous last axis; forward() checks the state
/// (made by a flash of this configuration, not consumed by a non-causal
/// call), the shapes, strides and data of q, k, v, out, the shapes and
/// inner strides of q_lin, k_lin, and that out aliases none of them; a
/// non-causal call needs a fresh state and consumes it. Every failure throws
/// invalid_argument and leaves the state unchanged.
///
/// Thread safety: the policy is immutable and may serve many states on many
/// threads (the bias is read, never written); a state is used by one thread
/// at a time.
struct flash {
  // ---- Parameters (designated initialisers: flash{.chunk = 128}). -------
  index_t chunk = 256;                   ///< C: tokens per chunk (the last one may be partial)
  flash_mode mode = flash_mode::causal;  ///< causal (streaming) or non-causal (one call)
  flash_norm norm = flash_norm::chunk_mean;  ///< the linear part's divisor
  std::optional<float> scale{};          ///< quadratic logit scale; default 1/C
  /// Relative-position bias B (C, C) of the quadratic part, indexed by the
  /// query's and key's positions inside the chunk (the same for every chunk
  /// and head, as a relative bias is); empty: none. Its shape is part of the
  /// configuration a state records, its values are not (they are read live:
  /// keep the memory alive and unchanged while states use it).
  matrix_view<const float> bias{};
  /// The quadratic part's products: bf16 runs the AMX or AVX512_BF16 engine
  /// on bf16-rounded Q, K, V and P, relu^2 and the sums in fp32
  /// (kernels/chunk_attention.hpp; fp32 where the build has no 16-bit
  /// engine). The linear part stays fp32. Not in the fingerprint (rounding
  /// only): a state may be continued with either.
  compute_precision compute = compute_precision::f32;

  // Value columns per task of the linear part: the state is split by columns
  // so the causal scan over chunks runs in parallel without changing a bit
  // (every element of S is its own FMA chain). A multiple of 16 (the widest
  // vector), so slices never share a padded vector.
  static constexpr index_t column_slice = 128;
  // Query rows per task of the quadratic part (K^T is packed per task).
  static constexpr index_t quad_rows_per_task = 2 * chunk_attention_block_q;

  using input_type = flash_input;  ///< q, k, v and the optional q_lin, k_lin

  /// The state: per (batch, KV head) S and the unfinished chunk's rows, the
  /// chunk count. Made by make_state() (a default-constructed one is
  /// rejected); copyable and movable. Used by one thread at a time.
  class state_type {
   public:
    /// An empty state no policy accepts; assign one from make_state.
    state_type() = default;
    /// \return the dims, d = s, d_v = e (resolved, never 0)
    attention_dims dims() const noexcept { return dims_; }
    /// \return C
    index_t chunk() const noexcept { return c_; }
    /// \return chunks completed (and, causal, folded into S)
    index_t chunks_folded() const noexcept { return g_; }
    /// \return tokens of the unfinished chunk
    index_t position_in_chunk() const noexcept { return pos_; }
    /// \return tokens attended so far
    index_t tokens_seen() const noexcept { return g_ * c_ + pos_; }
    /// S (s, e) of batch b, KV head kv_head: the sum of finished chunks'
    /// K_lin^T V (row stride linear_state_ld(e)). Bounds asserted in debug
    /// builds only.
    /// \param b the batch index
    /// \param kv_head the KV head
    /// \return a read-only view of S
    matrix_view<const float> memory(index_t b, index_t kv_head) const noexcept {
      LONGCTX_ASSERT(b >= 0 && b < dims_.b && kv_head >= 0 && kv_head < dims_.h_kv);
      return make_matrix<dynamic_extent, const float>(m(b * dims_.h_kv + kv_head), dims_.d, dims_.d_v, ld_m_);
    }
    /// Bytes held: S and the unfinished chunk's buffers of every lane;
    /// constant in the number of tokens seen.
    /// \return the bytes allocated
    std::size_t footprint() const noexcept {
      return (m_.size() + kq_.size() + kl_.size() + v_.size()) * sizeof(float);
    }

    /// One longctx snapshot (kind "flash"). Payload: chunks folded, position
    /// in chunk, the non-causal "consumed" flag, every lane's S (s x e, no
    /// padding), then every lane's unfinished chunk rows (K_quad, K_lin: pos
    /// x s; V: pos x e).
    /// \return the bytes; restore() of a same-configuration state reads them
    snapshot_bytes snapshot() const {
      snapshot_writer w(detail::flash_kind, fp_);
      w.put(std::int64_t(g_));
      w.put(std::int64_t(pos_));
      w.put(std::uint8_t(closed_));
      const index_t s = dims_.d, e = dims_.d_v;
      for (index_t l = 0; l < lanes(); ++l)
        for (index_t r = 0; r < s; ++r) w.put_array(m(l) + r * ld_m_, std::size_t(e));
      for (index_t l = 0; l < lanes(); ++l) {
        w.put_array(kq(l), std::size_t(pos_ * s));
        w.put_array(kl(l), std::size_t(pos_ * s));
        w.put_array(v(l), std::size_t(pos_ * e));
      }
      return std::move(w).finish();
    }

    /// Restores a snapshot of a state of the same configuration (dims and
    /// policy parameters, by fingerprint). Strong guarantee: the bytes are
    /// parsed into a fresh state that replaces this one only on success
    /// (counts in range, every value of S and of the buffered rows finite).
    /// \param bytes a snapshot() of a state of this configuration
    /// \throws invalid_argument naming the argument "bytes" and the field
    void restore(std::span<const std::byte> bytes) {
      constexpr const char* where = "flash::state_type::restore";
      require(c_ > 0, where, "state", "not made by make_state");
      snapshot_reader rd(bytes, detail::flash_kind, fp_, where);
      state_type fresh;
      fresh.dims_ = dims_, fresh.c_ = c_, fresh.fp_ = fp_;
      fresh.allocate();
      const auto g = rd.get<std::int64_t>("chunks folded");
      // tokens_seen() = g C must not overflow.
      rd.check(g >= 0 && g <= (std::numeric_limits<std::int64_t>::max() - c_) / c_, "chunks folded",
               [&] { return detail::concat(g, " outside [0, 2^63 / C)"); });
      const auto pos = rd.get<std::int64_t>("position in chunk");
      rd.check(pos >= 0 && pos < c_, "position in chunk",
               [&] { return detail::concat(pos, " outside [0, C = ", c_, ")"); });
      const auto closed = rd.get<std::uint8_t>("consumed");
      rd.check(closed <= 1, "consumed", [&] { return detail::concat("flag must be 0 or 1, got ", int(closed)); });
      fresh.g_ = index_t(g), fresh.pos_ = index_t(pos), fresh.closed_ = closed == 1;
      const index_t s = dims_.d, e = dims_.d_v;
      for (index_t l = 0; l < lanes(); ++l)
        for (index_t r = 0; r < s; ++r) {
          float* row = fresh.m(l) + r * ld_m_;
          rd.get_array(row, std::size_t(e), "S");
          rd.check(std::all_of(row, row + e, [](float x) { return std::isfinite(x); }), "S",
                   [&] { return detail::concat("non-finite value in row ", r, " of lane ", l); });
        }
      const auto rows = [&](float* x, index_t count, const char* field, index_t l) {
        rd.get_array(x, std::size_t(count), field);
        rd.check(std::all_of(x, x + count, [](float y) { return std::isfinite(y); }), field,
                 [&] { return detail::concat("non-finite value in lane ", l); });
      };
      for (index_t l = 0; l < lanes(); ++l) {
        rows(fresh.kq(l), fresh.pos_ * s, "K_quad rows", l);
        rows(fresh.kl(l), fresh.pos_ * s, "K_lin rows", l);
        rows(fresh.v(l), fresh.pos_ * e, "V rows", l);
      }
      rd.finish();
      *this = std::move(fresh);
    }

   private:
    friend struct flash;
    // One lane per (batch, KV head), lane = b * h_kv + kv_head.
    index_t lanes() const noexcept { return dims_.b * dims_.h_kv; }
    float* m(index_t l) noexcept { return m_.data() + l * dims_.d * ld_m_; }
    const float* m(index_t l) const noexcept { return m_.data() + l * dims_.d * ld_m_; }
    float* kq(index_t l) noexcept { return kq_.data() + l * c_ * dims_.d; }
    float* kl(index_t l) noexcept { return kl_.data() + l * c_ * dims_.d; }
    float* v(index_t l) noexcept { return v_.data() + l * c_ * dims_.d_v; }
    const float* kq(index_t l) const noexcept { return kq_.data() + l * c_ * dims_.d; }
    const float* kl(index_t l) const noexcept { return kl_.data() + l * c_ * dims_.d; }
    const float* v(index_t l) const noexcept { return v_.data() + l * c_ * dims_.d_v; }
    // Zeroed buffers for dims_ and c_ (S's padding columns must stay zero).
    void allocate() {
      ld_m_ = linear_state_ld(dims_.d_v);
      const std::size_t ln = std::size_t(lanes());
      m_.assign(ln * std::size_t(dims_.d * ld_m_), 0.0f);
      kq_.assign(ln * std::size_t(c_ * dims_.d), 0.0f);
      kl_.assign(ln * std::size_t(c_ * dims_.d), 0.0f);
      v_.assign(ln * std::size_t(c_ * dims_.d_v), 0.0f);
    }

    attention_dims dims_{};
    index_t c_ = 0, g_ = 0, pos_ = 0, ld_m_ = 0;
    bool closed_ = false;             // a non-causal call consumed the state
    std::uint64_t fp_ = 0;            // the configuration make_state saw (flash::fingerprint)
    std::vector<float> m_;            // (lanes, s, ld_m)
    std::vector<float> kq_, kl_, v_;  // (lanes, C, s), (lanes, C, s), (lanes, C, e)
  };

  /// A fresh state for dims (d = s, d_v = e, 0 meaning s): S = 0, chunk 0.
  /// \param dims b, h, h_kv, d = s, d_v = e
  /// \return the state
  /// \throws invalid_argument naming the bad parameter or "dims"
  state_type make_state(const attention_dims& dims) const {
    constexpr const char* where = "flash::make_state";
    require_dims(dims, where);
    check_params(where);
    state_type st;
    st.dims_ = resolved(dims);
    st.c_ = chunk;
    st.fp_ = fingerprint(st.dims_);
    st.allocate();
    return st;
  }

  /// \return the quadratic part's logit scale: `scale`, or 1 / C
  float logit_scale() const noexcept { return scale ? *scale : 1.0f / float(chunk); }

  /// The linear part's normalisation for a chunk that sees `visible` chunks.
  /// \param visible chunks folded into the S it reads
  /// \param tokens the tokens those chunks hold (the last may be partial)
  /// \return the divisor rule of `norm`
  retrieval_norm linear_norm(index_t visible, index_t tokens) const noexcept {
    switch (norm) {
      case flash_norm::chunk_mean: return {normaliser::block_mean, 1e-6f, double(chunk) * double(visible)};
      case flash_norm::chunk_sum: return {normaliser::block_mean, 1e-6f, double(chunk)};
      case flash_norm::token_count: return {normaliser::block_mean, 1e-6f, double(tokens)};
      case flash_norm::none: break;
    }
    return {normaliser::none, 1e-6f, 1.0};
  }

  /// What a state records of its configuration: dims and every parameter but
  /// the bias values (their shape and presence are in).
  /// \param a the dims, d_v resolved
  /// \return the configuration fingerprint
  std::uint64_t fingerprint(const attention_dims& a) const noexcept {
    config_fingerprint f = fingerprint_of(a);
    f.add(std::int64_t(chunk)).add(std::int32_t(mode)).add(std::int32_t(norm));
    f.add(std::uint8_t(scale.has_value())).add(scale.value_or(0.0f));
    f.add(std::uint8_t(bias.data() != nullptr));
    if (bias.data())
      f.add(std::int64_t(bias.extent(0))).add(std::int64_t(bias.extent(1))).add(std::uint8_t(bias.unit_inner_stride()));
    return f.value();
  }

  /// Attends the call's n tokens. Causal: continues the state's sequence
  /// (tokens_seen() earlier tokens). Non-causal: the call is the whole
  /// sequence; the state must be fresh and cannot be used again.
  /// \tparam Arch the SIMD backend (default_arch)
  /// \param st a state from this policy's make_state()
  /// \param in q = Q_quad (b, h, n, s), k = K_quad (b, h_kv, n, s), v (b,
  ///   h_kv, n, e), optional q_lin, k_lin of the shapes of q, k
  /// \param out (b, h, n, e), disjoint from every input
  /// \param exec the executor (serial by default)
  /// \throws invalid_argument when st is of another configuration or
  ///   consumed, or a view is wrong; st is then unchanged
  template <arch_tag Arch = default_arch, executor Exec = serial_executor>
  void forward(state_type& st, const flash_input& in, tensor4_view<float> out, Exec&& exec = {}) const {
    constexpr const char* where = "flash::forward";
    check_state(st, where);
    require(!st.closed_, where, "state", "already consumed by a non-causal call (make a new state)");
    const attention_dims& a = st.dims_;
    const tensor4_view<const float> q_lin = in.q_lin.data() ? in.q_lin : in.q;
    const tensor4_view<const float> k_lin = in.k_lin.data() ? in.k_lin : in.k;
    require_sequence_call(where, a, in.q, in.k, in.v, out);
    require_like(where, "q_lin", q_lin, "q", in.q);
    require_like(where, "k_lin", k_lin, "k", in.k);
    require_disjoint(where, "out", out, "q_lin", q_lin, "k_lin", k_lin);
    require_engine<Arch>(compute);  // an engine that cannot run here throws before the state changes
    const index_t n = in.q.extent(2);
    if (mode == flash_mode::non_causal) {
      require(st.tokens_seen() == 0, where, "state", "non-causal attention needs the whole sequence in one call on "
              "a fresh state; this one has seen ", st.tokens_seen(), " tokens");
      st.closed_ = true;
    }
    if (n == 0) return;
    const bool causal = mode == flash_mode::causal;
    const index_t s = a.d, e = a.d_v, h_kv = a.h_kv, group = a.h / a.h_kv, lanes = st.lanes();

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
    if (first.buffered)  // the unfinished chunk's keys join the buffer first
      buffer_rows(st, in.k, k_lin, in.v, first.t0, first.len, first.p0);

    // Quadratic part: every (lane, piece, row group) is independent; a task
    // packs its lane's K^T and V once for all query heads of the group.
    const float sc = logit_scale();
    // A task's packing costs as much copying as 1/50 of its FLOPs per row:
    // whole chunks per task when there are enough of them to keep the
    // executor busy, row groups otherwise.
    const index_t rows_per_task =
        index_t(pieces.size()) * lanes >= 4 * index_t(exec.concurrency()) ? chunk : quad_rows_per_task;
    std::vector<index_t> task_piece, task_row;
    for (std::size_t p = 0; p < pieces.size(); ++p)
      for (index_t r = 0; r < pieces[p].len; r += rows_per_task) {
        task_piece.push_back(index_t(p));
        task_row.push_back(r);
      }
    const index_t lane_tasks = index_t(task_piece.size());
    exec.parallel_for(lanes * lane_tasks, [&](index_t task) {
      const index_t lane = task / lane_tasks, bi = lane / h_kv, hk = lane % h_kv;
      const detail::flash_piece& pc = pieces[std::size_t(task_piece[std::size_t(task % lane_tasks)])];
      const index_t r0 = task_row[std::size_t(task % lane_tasks)], nr = std::min(rows_per_task, pc.len - r0);
      // Keys this row group can see: causal stops at its last row.
      const index_t keys = causal ? pc.p0 + r0 + nr : pc.p0 + pc.len;
      const matrix_view<const float> k = pc.buffered
                                             ? make_matrix<dynamic_extent, const float>(st.kq(lane), keys, s)
                                             : matrix_view<const float>(in.k.head(bi, hk)).rows(pc.t0, keys);
      const matrix_view<const float> v = pc.buffered
                                             ? make_matrix<dynamic_extent, const float>(st.v(lane), keys, e)
                                             : matrix_view<const float>(in.v.head(bi, hk)).rows(pc.t0, keys);
      matrix_view<const float> b{};
      if (bias.data())
        b = matrix_view<const float>(bias.data() + (pc.p0 + r0) * bias.stride(0),
                                     matrix_view<const float>::extents_type(nr, keys), {bias.stride(0), 1});
      thread_local scratch_buffer<float> buf;
      const packed_chunk<Arch> packed(compute, k, v, buf.grow(packed_chunk<Arch>::scratch_floats(compute, keys, s, e)),
                                     nr * group > 2);
      for (index_t hi = hk * group; hi < (hk + 1) * group; ++hi)
        packed.attend(matrix_view<const float>(in.q.head(bi, hi)).rows(pc.t0 + r0, nr),
                     matrix_view<float>(out.head(bi, hi)).rows(pc.t0 + r0, nr), sc, b, chunk_mask{causal, pc.p0 + r0});
    });

    // Linear part: per (lane, column slice of S), the scan over chunks in
    // order; every query head of the group retrieves a chunk before the
    // lane's S folds it.
    const index_t slices = (e + column_slice - 1) / column_slice, ld_m = st.ld_m_;
    std::vector<float> ones(std::size_t(std::min(e, column_slice)), 1.0f);
    // z is unused by FLASH's norms, but linear_update keeps one: a throwaway per task.
    std::vector<float> z_tasks(std::size_t(lanes * slices * s), 0.0f);
    const index_t total_chunks = causal ? 0 : (n + chunk - 1) / chunk;
    exec.parallel_for(lanes * slices, [&](index_t task) {
      const index_t lane = task / slices, sl = task % slices, bi = lane / h_kv, hk = lane % h_kv;
      const index_t c0 = sl * column_slice, w = std::min(column_slice, e - c0);
      linear_state_view<float> mem{st.m(lane) + c0, z_tasks.data() + task * s, s, w, ld_m};
      thread_local scratch_buffer<float> buf;
      float* scratch = buf.grow(std::max(linear_update_scratch(s, w), linear_retrieve_scratch(s, w)));
      const retrieval_combine add{ones.data(), ones.data()};
      const matrix_view<const float> kl_in(k_lin.head(bi, hk)), v_in(in.v.head(bi, hk));
      const auto fold = [&](const detail::flash_piece& pc) {
        const index_t rows = pc.p0 + pc.len;
        const matrix_view<const float> kl =
            pc.buffered ? make_matrix<dynamic_extent, const float>(st.kl(lane), rows, s) : kl_in.rows(pc.t0, rows);
        const matrix_view<const float> v =
            pc.buffered ? make_matrix<dynamic_extent, const float>(st.v(lane), rows, e) : v_in.rows(pc.t0, rows);
        linear_update<Arch, float>(mem, feature_map::identity, update_rule::linear, linear_norm(0, 0), kl,
                                   detail::columns(v, c0, w), scratch);
      };
      const auto retrieve = [&](const detail::flash_piece& pc, index_t visible, index_t tokens) {
        for (index_t hi = hk * group; hi < (hk + 1) * group; ++hi)
          linear_retrieve<Arch, float>(mem, feature_map::identity, linear_norm(visible, tokens),
                                       matrix_view<const float>(q_lin.head(bi, hi)).rows(pc.t0, pc.len),
                                       detail::columns(matrix_view<float>(out.head(bi, hi)).rows(pc.t0, pc.len), c0, w),
                                       add, scratch);
      };
      if (causal) {
        for (const auto& pc : pieces) {
          // Chunk 0 reads an all-zero S: its linear term is exactly 0, skipped.
          if (pc.g > 0) retrieve(pc, pc.g, pc.g * chunk);
          if (pc.completes) fold(pc);
        }
      } else {
        for (const auto& pc : pieces) fold(pc);
        for (const auto& pc : pieces) retrieve(pc, total_chunks, n);
      }
    });

    // The trailing unfinished chunk, if it began in this call, joins the buffer.
    const detail::flash_piece last = pieces.back();
    if (causal && !last.completes && !last.buffered) buffer_rows(st, in.k, k_lin, in.v, last.t0, last.len, 0);
    const index_t total = st.pos_ + n;
    st.g_ += total / chunk;
    st.pos_ = total % chunk;
  }

  /// What forward() checks of the state alone (made by this configuration,
  /// not consumed), for a layer that validates before changing its own state.
  /// \param st the state
  /// \param where the caller, for the message
  /// \throws invalid_argument when forward() would reject st
  void check_state_usable(const state_type& st, const char* where) const {
    check_state(st, where);
    require(!st.closed_, where, "state", "already consumed by a non-causal call (make a new state)");
  }

 private:
  void check_params(const char* where) const {
    require(chunk > 0, where, "chunk", "must be > 0, got ", chunk);
    require_compute_precision(where, compute);
    require(!scale || std::isfinite(*scale), where, "scale", "must be finite, got ", scale.value_or(0.0f));
    if (bias.data()) {
      require(bias.extent(0) == chunk && bias.extent(1) == chunk, where, "bias", "must be (C, C) = (", chunk, ", ",
              chunk, "), got ", shape_of(bias));
      require_unit_inner_stride(bias, where, "bias");
    }
  }

  // The cheap per-call check: the state's recorded configuration equals this
  // policy's. Only on a mismatch are the parameters checked, for a precise
  // message when the policy itself is invalid.
  void check_state(const state_type& st, const char* where) const {
    if (st.c_ > 0 && st.fp_ == fingerprint(st.dims_)) [[likely]]
      return;
    require(st.c_ > 0, where, "state", "not made by make_state");
    check_params(where);
    require(false, where, "state", "made by a flash of another configuration (state chunk ", st.c_,
            ", this policy's chunk ", chunk, "; or mode, norm, scale, bias shape differ)");
  }

  // Rows [t0, t0 + len) of every lane's K_quad, K_lin, V into buffer rows
  // [p0, p0 + len).
  static void buffer_rows(state_type& st, const tensor4_view<const float>& kq, const tensor4_view<const float>& kl,
                          const tensor4_view<const float>& v, index_t t0, index_t len, index_t p0) {
    const index_t s = st.dims_.d, e = st.dims_.d_v, h_kv = st.dims_.h_kv;
    for (index_t l = 0; l < st.lanes(); ++l) {
      const index_t bi = l / h_kv, hk = l % h_kv;
      copy_rows(kq.head(bi, hk), t0, len, st.kq(l) + p0 * s, s);
      copy_rows(kl.head(bi, hk), t0, len, st.kl(l) + p0 * s, s);
      copy_rows(v.head(bi, hk), t0, len, st.v(l) + p0 * e, e);
    }
  }
  static void copy_rows(matrix_view<const float> src, index_t t0, index_t len, float* dst, index_t cols) {
    for (index_t r = 0; r < len; ++r) std::copy_n(src.data() + (t0 + r) * src.stride(0), cols, dst + r * cols);
  }
};

LONGCTX_ASSERT_SEQUENCE_POLICY(flash);

LONGCTX_NAMESPACE_END
