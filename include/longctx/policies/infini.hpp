// Infini-attention (arXiv 2404.07143, PAPERS.md section 1) as a policy: per
// memory head a compressive state M (d_k, d_v), z (d_k); per segment of
// `segment` tokens, causal softmax attention inside the segment (the exact
// kernel), retrieval s(Q) M / s(Q) z from the memory of EARLIER segments, the
// gate sigmoid(beta), then the segment folded into M, z (linear or delta).
// Shapes: q (b, h, n, d_k), k (b, h_kv, n, d_k), v (b, h_kv, n, d_v),
// out (b, h, n, d_v); any n per call: whole segments or token by token give
// the same bits (a partial segment is held in the state until it completes).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include "../kernels/attention.hpp"
#include "../kernels/linear_state.hpp"
#include "../runtime/scratch.hpp"

LONGCTX_NAMESPACE_BEGIN

// Which heads own a memory under GQA (h query heads, h_kv KV heads).
enum class memory_sharing {
  per_kv_head,     // one memory per KV head, read by its h / h_kv query heads (default)
  per_query_head,  // one per query head, each folded with its KV head's K, V:
                   // equal to per_kv_head unless the initial states differ
};

// forward(): whether finished segments are folded into the memory.
enum class memory_mode { read_write, read_only };

struct infini_dims {
  index_t b = 1, h = 1, h_kv = 1, d_k = 0, d_v = 0;
};

// One forward() call's tokens. q_mem / k_mem, when given, are what the memory
// sees instead of q / k (e.g. before positional encoding, as in the paper);
// the local attention always uses q / k. Same shapes as q / k.
struct infini_input {
  tensor4_view<const float> q, k, v;
  tensor4_view<const float> q_mem{}, k_mem{};
};

// The values of the paper's Table 2 "memory footprint" column for
// Infini-Transformers: d_key (d_value + 1) H per layer (M and z of every head).
constexpr std::uint64_t infini_memory_values(std::uint64_t layers, std::uint64_t heads, std::uint64_t d_k,
                                             std::uint64_t d_v) noexcept {
  return layers * heads * d_k * (d_v + 1);
}

struct infini_footprint {
  std::uint64_t memory_values = 0;  // M and z of every memory head (the paper's count)
  std::uint64_t buffer_values = 0;  // the unfinished segment's K, V, K_mem rows (fp32)
  std::uint64_t bytes = 0;          // both, at their storage precision
};

namespace detail {
// Per-thread scratch of the policy's linear-state calls (separate from the
// attention kernel's, which runs in a different phase anyway).
struct infini_tag {};
template <class S>
S* infini_scratch(index_t elems) {
  return thread_scratch<infini_tag, S>(elems);
}

inline constexpr char infini_magic[8] = {'l', 'c', 'x', 'i', 'n', 'f', 'n', 'i'};
inline constexpr std::uint32_t infini_snapshot_version = 1;
inline constexpr std::uint32_t infini_byte_order = 0x01020304u;

struct infini_snapshot_header {
  char magic[8];
  std::uint32_t version, byte_order, scalar_bytes, reserved;
  std::int64_t b, h, h_kv, h_mem, d_k, d_v, segment, position;
  std::uint64_t tokens, segments, payload_bytes;
};
}  // namespace detail

// State = memory (fp32, or double with basic_infini<double>) + the partial segment.
template <class S = float>
struct basic_infini {
  static_assert(std::is_same_v<S, float> || std::is_same_v<S, double>,
                "basic_infini<S>: the memory state type S must be float or double");

  // ---- Parameters (designated initialisers: infini{.segment = 512}). ------
  index_t segment = 2048;          // tokens per segment (N in the paper)
  std::optional<float> scale{};    // local attention logit scale; default 1/sqrt(d_k)
  // Gate logits: empty (every gate sigmoid(0) = 1/2), h values (one per head,
  // the paper), or h * d_v (per head and value column, row-major). +inf / -inf
  // are allowed: pure memory retrieval / pure local attention.
  std::vector<float> beta{};
  update_rule update = update_rule::linear;
  feature_map phi = feature_map::elu_plus_one;  // the paper's s = ELU + 1
  memory_sharing sharing = memory_sharing::per_kv_head;
  // Retrieval denominators: an empty memory (z all zero, the first segment)
  // contributes exactly 0; otherwise |s(q) z| < epsilon is replaced by
  // epsilon (with the sign of s(q) z). See retrieval_norm.
  float epsilon = 1e-6f;

  class state_type {
   public:
    state_type() = default;

    const infini_dims& dims() const noexcept { return dims_; }
    index_t segment() const noexcept { return segment_; }
    index_t memory_heads() const noexcept { return h_mem_; }
    // Tokens of the current, unfinished segment held in the state.
    index_t position_in_segment() const noexcept { return pos_; }
    std::uint64_t tokens_seen() const noexcept { return tokens_; }
    std::uint64_t segments_folded() const noexcept { return folded_; }

    // Memory of batch b, memory head m (see memory_sharing): write M and z
    // here to start from a user-supplied initial state. M's padding columns
    // [d_v, ld_m) must stay zero.
    linear_state_view<S> memory(index_t b, index_t m) noexcept {
      LONGCTX_ASSERT(b >= 0 && b < dims_.b && m >= 0 && m < h_mem_);
      const index_t i = b * h_mem_ + m;
      return {m_.data() + i * dims_.d_k * ld_m_, z_.data() + i * dims_.d_k, dims_.d_k, dims_.d_v, ld_m_};
    }
    linear_state_view<const S> memory(index_t b, index_t m) const noexcept {
      return const_cast<state_type*>(this)->memory(b, m);
    }

    infini_footprint footprint() const noexcept {
      return basic_infini::footprint_of(dims_, segment_, h_mem_);
    }

    // Bit-exact copy of the state as bytes: a versioned header (magic,
    // version, byte order, scalar size, shapes, position), M and z without
    // padding, then the unfinished segment's rows.
    std::vector<std::byte> snapshot() const {
      detail::infini_snapshot_header hd{};
      std::memcpy(hd.magic, detail::infini_magic, sizeof hd.magic);
      hd.version = detail::infini_snapshot_version;
      hd.byte_order = detail::infini_byte_order;
      hd.scalar_bytes = sizeof(S);
      hd.b = dims_.b, hd.h = dims_.h, hd.h_kv = dims_.h_kv, hd.h_mem = h_mem_, hd.d_k = dims_.d_k,
      hd.d_v = dims_.d_v, hd.segment = segment_, hd.position = pos_;
      hd.tokens = tokens_, hd.segments = folded_;
      hd.payload_bytes = payload_bytes(pos_);
      std::vector<std::byte> out(sizeof hd + hd.payload_bytes);
      std::memcpy(out.data(), &hd, sizeof hd);
      std::byte* p = out.data() + sizeof hd;
      visit_payload(pos_, [&](auto* data, std::size_t count) {
        std::memcpy(p, data, count * sizeof(*data));
        p += count * sizeof(*data);
      });
      return out;
    }

    // Restores a snapshot taken from a state of the same configuration;
    // anything else (other shapes, scalar type, version, a truncated or
    // padded buffer) is rejected and leaves this state unchanged.
    void restore(std::span<const std::byte> bytes) {
      constexpr const char* where = "infini::state_type::restore";
      detail::infini_snapshot_header hd{};
      require(bytes.size() >= sizeof hd, where, "bytes", "truncated: ", bytes.size(),
              " bytes, the header alone is ", sizeof hd);
      std::memcpy(&hd, bytes.data(), sizeof hd);
      require(std::memcmp(hd.magic, detail::infini_magic, sizeof hd.magic) == 0, where, "bytes",
              "not an infini state snapshot (bad magic)");
      require(hd.version == detail::infini_snapshot_version, where, "bytes", "snapshot version ", hd.version,
              ", this library reads version ", detail::infini_snapshot_version);
      require(hd.byte_order == detail::infini_byte_order, where, "bytes",
              "snapshot written on a machine of the other byte order");
      require(hd.scalar_bytes == sizeof(S), where, "bytes", "snapshot state scalar is ", hd.scalar_bytes,
              " bytes, this state's is ", sizeof(S));
      const auto same = [&](const char* what, std::int64_t got, index_t want) {
        require(got == want, where, "bytes", "snapshot ", what, " = ", got, " but this state's ", what, " = ",
                want);
      };
      same("b", hd.b, dims_.b);
      same("h", hd.h, dims_.h);
      same("h_kv", hd.h_kv, dims_.h_kv);
      same("memory heads", hd.h_mem, h_mem_);
      same("d_k", hd.d_k, dims_.d_k);
      same("d_v", hd.d_v, dims_.d_v);
      same("segment", hd.segment, segment_);
      require(hd.position >= 0 && hd.position < segment_, where, "bytes", "position in segment ", hd.position,
              " outside [0, ", segment_, ")");
      const std::uint64_t want = payload_bytes(index_t(hd.position));
      require(hd.payload_bytes == want, where, "bytes", "header payload size ", hd.payload_bytes,
              " != expected ", want);
      require(bytes.size() == sizeof hd + want, where, "bytes", bytes.size() < sizeof hd + want ? "truncated: " : "trailing data: ",
              bytes.size(), " bytes, expected ", sizeof hd + want);
      pos_ = index_t(hd.position);
      tokens_ = hd.tokens;
      folded_ = hd.segments;
      const std::byte* p = bytes.data() + sizeof hd;
      visit_payload(pos_, [&](auto* data, std::size_t count) {
        std::memcpy(data, p, count * sizeof(*data));
        p += count * sizeof(*data);
      });
    }

   private:
    friend struct basic_infini;

    // Calls f(pointer, count) over every stored range, in snapshot order.
    template <class F>
    void visit_payload(index_t pos, F&& f) const {
      auto* self = const_cast<state_type*>(this);
      const index_t n_mem = dims_.b * h_mem_;
      for (index_t i = 0; i < n_mem * dims_.d_k; ++i) f(self->m_.data() + i * ld_m_, std::size_t(dims_.d_v));
      f(self->z_.data(), self->z_.size());
      for (index_t bk = 0; bk < dims_.b * dims_.h_kv; ++bk) {
        f(self->k_buf_.data() + bk * segment_ * dims_.d_k, std::size_t(pos * dims_.d_k));
        f(self->km_buf_.data() + bk * segment_ * dims_.d_k, std::size_t(pos * dims_.d_k));
        f(self->v_buf_.data() + bk * segment_ * dims_.d_v, std::size_t(pos * dims_.d_v));
      }
    }
    std::uint64_t payload_bytes(index_t pos) const noexcept {
      const std::uint64_t n_mem = std::uint64_t(dims_.b * h_mem_);
      return n_mem * std::uint64_t(dims_.d_k * (dims_.d_v + 1)) * sizeof(S) +
             std::uint64_t(dims_.b * dims_.h_kv * pos * (2 * dims_.d_k + dims_.d_v)) * sizeof(float);
    }

    infini_dims dims_{};
    index_t segment_ = 0, h_mem_ = 0, ld_m_ = 0, pos_ = 0;
    std::uint64_t tokens_ = 0, folded_ = 0;
    std::vector<S> m_, z_;                     // (b, h_mem, d_k, ld_m), (b, h_mem, d_k)
    std::vector<float> k_buf_, km_buf_, v_buf_;  // (b, h_kv, segment, d_k | d_k | d_v)
    std::vector<float> gate_a_, gate_b_;       // (h, d_v): sigmoid(beta), 1 - sigmoid(beta)
  };

  // Memory heads and footprint of a configuration (before making a state).
  index_t memory_heads(const infini_dims& d) const noexcept {
    return sharing == memory_sharing::per_kv_head ? d.h_kv : d.h;
  }
  infini_footprint footprint(const infini_dims& d) const noexcept {
    return footprint_of(d, segment, memory_heads(d));
  }

  // A state with empty memory (M = 0, z = 0) at the start of a segment.
  state_type make_state(const infini_dims& d) const {
    check_params(d, "infini::make_state");
    state_type s;
    s.dims_ = d;
    s.segment_ = segment;
    s.h_mem_ = memory_heads(d);
    s.ld_m_ = linear_state_ld(d.d_v);
    const std::size_t n_mem = std::size_t(d.b * s.h_mem_);
    s.m_.assign(n_mem * std::size_t(d.d_k * s.ld_m_), S(0));
    s.z_.assign(n_mem * std::size_t(d.d_k), S(0));
    const std::size_t rows = std::size_t(d.b * d.h_kv * segment);
    s.k_buf_.assign(rows * std::size_t(d.d_k), 0.0f);
    s.km_buf_.assign(rows * std::size_t(d.d_k), 0.0f);
    s.v_buf_.assign(rows * std::size_t(d.d_v), 0.0f);
    return s;
  }

  float effective_scale(index_t d_k) const noexcept {
    return scale ? *scale : float(1.0 / std::sqrt(double(d_k)));
  }

  // Processes in.q's n tokens (any n >= 0) and writes out (b, h, n, d_v).
  // read_only retrieves and attends as usual but never folds a segment into
  // the memory (the unfinished segment is still held for local attention).
  template <arch_tag Arch = default_arch, executor Exec = serial_executor>
  void forward(state_type& st, const infini_input& in, tensor4_view<float> out,
               memory_mode mode = memory_mode::read_write, Exec&& exec = {}) const {
    constexpr const char* where = "infini::forward";
    const infini_dims& d = st.dims_;
    require(st.segment_ > 0, where, "state", "not made by make_state");
    check_params(d, where);
    require(st.segment_ == segment, where, "state", "made with segment ", st.segment_,
            ", this policy's segment is ", segment);
    require(st.h_mem_ == memory_heads(d), where, "state", "made with ", st.h_mem_,
            " memory heads, this policy's sharing gives ", memory_heads(d));
    const index_t n = in.q.extent(2);
    const tensor4_view<const float> q_mem = in.q_mem.data() ? in.q_mem : in.q;
    const tensor4_view<const float> k_mem = in.k_mem.data() ? in.k_mem : in.k;
    const auto expect = [&](const tensor4_view<const float>& t, const char* arg, index_t heads, index_t dim) {
      require(t.extent(0) == d.b && t.extent(1) == heads && t.extent(2) == n && t.extent(3) == dim, where, arg,
              "must be (b, heads, n, dim) = (", d.b, ", ", heads, ", ", n, ", ", dim, "), got ", shape_of(t),
              " (q ", shape_of(in.q), ")");
      require_unit_inner_stride(t, where, arg);
      require_data(t, where, arg);
    };
    expect(in.q, "q", d.h, d.d_k);
    expect(in.k, "k", d.h_kv, d.d_k);
    expect(in.v, "v", d.h_kv, d.d_v);
    expect(q_mem, "q_mem", d.h, d.d_k);
    expect(k_mem, "k_mem", d.h_kv, d.d_k);
    expect(out, "out", d.h, d.d_v);
    if (n == 0) return;

    fill_gates(st);
    const float sc = effective_scale(d.d_k);
    const index_t N = segment, group = d.h / d.h_kv;
    const retrieval_norm nm{normaliser::z_denominator, epsilon, 1.0};
    const auto buf_view = [&](std::vector<float>& buf, index_t dim) {
      return from_bhnd(buf.data(), d.b, d.h_kv, N, dim);
    };
    const tensor4_view<float> kb = buf_view(st.k_buf_, d.d_k), kmb = buf_view(st.km_buf_, d.d_k),
                              vb = buf_view(st.v_buf_, d.d_v);  // (b, h_kv, N, d)

    for (index_t t = 0; t < n;) {
      const index_t p = st.pos_, len = std::min(n - t, N - p);
      const bool whole = p == 0 && len == N;  // a whole segment is read in place, never copied
      tensor4_view<const float> keys, vals, mem_keys;  // (b, h_kv, p + len, d)
      if (whole) {
        keys = in.k.tokens(t, len), vals = in.v.tokens(t, len), mem_keys = k_mem.tokens(t, len);
      } else {
        append(kb, in.k, t, p, len);
        append(vb, in.v, t, p, len);
        append(kmb, k_mem, t, p, len);
        keys = kb.tokens(0, p + len), vals = vb.tokens(0, p + len), mem_keys = kmb.tokens(0, p + len);
      }
      // 1. A_dot: causal softmax attention of the new rows over the segment
      // so far (bottom-right: row i of the piece is token p + i).
      const tensor4_view<float> o = out.tokens(t, len);
      prefill_attention<Arch, float>(in.q.tokens(t, len), keys, vals, o, sc, causal{}, lse_view{}, exec);
      // 2. A = sigmoid(beta) A_mem + (1 - sigmoid(beta)) A_dot, A_mem from
      // the memory of finished segments only.
      const tensor4_view<const float> qm = q_mem.tokens(t, len);
      exec.parallel_for(d.b * d.h, [&](index_t task) {
        const index_t bi = task / d.h, hi = task % d.h;
        const index_t mi = sharing == memory_sharing::per_kv_head ? hi / group : hi;
        const retrieval_combine comb{st.gate_a_.data() + hi * d.d_v, st.gate_b_.data() + hi * d.d_v};
        linear_retrieve<Arch, S>(st.memory(bi, mi), phi, nm, matrix_view<const float>(qm.head(bi, hi)),
                                 matrix_view<float>(o.head(bi, hi)), comb,
                                 detail::infini_scratch<S>(linear_retrieve_scratch(d.d_k, d.d_v)));
      });
      // 3. Fold the segment once it is complete (after its retrieval).
      st.pos_ = (p + len) % N;
      st.tokens_ += std::uint64_t(len);
      if (p + len == N) {
        if (mode == memory_mode::read_write) {
          exec.parallel_for(d.b * st.h_mem_, [&](index_t task) {
            const index_t bi = task / st.h_mem_, mi = task % st.h_mem_;
            const index_t hk = sharing == memory_sharing::per_kv_head ? mi : mi / group;
            linear_update<Arch, S>(st.memory(bi, mi), phi, update, nm,
                                   matrix_view<const float>(mem_keys.head(bi, hk)),
                                   matrix_view<const float>(vals.head(bi, hk)),
                                   detail::infini_scratch<S>(linear_update_scratch(d.d_k, d.d_v)));
          });
          ++st.folded_;
        }
      }
      t += len;
    }
  }

 private:
  static infini_footprint footprint_of(const infini_dims& d, index_t seg, index_t h_mem) noexcept {
    infini_footprint f;
    f.memory_values = std::uint64_t(d.b * h_mem) * std::uint64_t(d.d_k * (d.d_v + 1));
    f.buffer_values = std::uint64_t(d.b * d.h_kv * seg) * std::uint64_t(2 * d.d_k + d.d_v);
    f.bytes = f.memory_values * sizeof(S) + f.buffer_values * sizeof(float);
    return f;
  }

  void check_params(const infini_dims& d, const char* where) const {
    require(segment > 0, where, "segment", "must be > 0, got ", segment);
    require(d.b >= 0 && d.h > 0 && d.h_kv > 0 && d.d_k > 0 && d.d_v > 0, where, "dims",
            "need b >= 0 and h, h_kv, d_k, d_v > 0, got b ", d.b, " h ", d.h, " h_kv ", d.h_kv, " d_k ", d.d_k,
            " d_v ", d.d_v);
    require(d.h % d.h_kv == 0, where, "dims", "query heads ", d.h, " not a multiple of KV heads ", d.h_kv);
    require(std::isfinite(epsilon) && epsilon > 0, where, "epsilon", "must be finite and > 0, got ", epsilon);
    require(!scale || std::isfinite(*scale), where, "scale", "must be finite, got ", scale.value_or(0.0f));
    require(beta.empty() || beta.size() == std::size_t(d.h) || beta.size() == std::size_t(d.h * d.d_v), where,
            "beta", "needs 0, h = ", d.h, " or h * d_v = ", d.h * d.d_v, " values, got ", beta.size());
    for (std::size_t i = 0; i < beta.size(); ++i)
      require(!std::isnan(beta[i]), where, "beta", "value ", i, " is NaN");
  }

  // sigmoid(beta) and 1 - sigmoid(beta), each from its own exp so both ends
  // are accurate (1 - g would lose the small one) and +-inf give exact 0, 1.
  void fill_gates(state_type& st) const {
    const index_t h = st.dims_.h, d_v = st.dims_.d_v;
    st.gate_a_.resize(std::size_t(h * d_v));
    st.gate_b_.resize(std::size_t(h * d_v));
    for (index_t hi = 0; hi < h; ++hi)
      for (index_t c = 0; c < d_v; ++c) {
        const double x = beta.empty() ? 0.0
                         : beta.size() == std::size_t(h) ? double(beta[std::size_t(hi)])
                                                          : double(beta[std::size_t(hi * d_v + c)]);
        st.gate_a_[std::size_t(hi * d_v + c)] = float(1.0 / (1.0 + std::exp(-x)));
        st.gate_b_[std::size_t(hi * d_v + c)] = float(1.0 / (1.0 + std::exp(x)));
      }
  }

  // Rows [t, t + len) of src into rows [p, p + len) of the segment buffer.
  static void append(const tensor4_view<float>& buf, const tensor4_view<const float>& src, index_t t, index_t p,
                     index_t len) {
    const index_t dim = src.extent(3);
    for (index_t bi = 0; bi < src.extent(0); ++bi)
      for (index_t hk = 0; hk < src.extent(1); ++hk)
        for (index_t i = 0; i < len; ++i)
          std::memcpy(&buf(bi, hk, p + i, 0), &src(bi, hk, t + i, 0), sizeof(float) * std::size_t(dim));
  }
};

using infini = basic_infini<float>;

LONGCTX_NAMESPACE_END
