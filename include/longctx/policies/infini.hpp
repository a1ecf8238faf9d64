// Infini-attention (arXiv 2404.07143, PAPERS.md section 1) as a sequence
// policy (protocol.hpp): per memory head a compressive state M (d_k, d_v),
// z (d_k); per segment of `segment` tokens, causal softmax attention inside
// the segment (the exact kernel), retrieval s(Q) M / s(Q) z from the memory
// of EARLIER segments, the gate sigmoid(beta), then the segment folded into
// M, z (linear or delta). d_k is attention_dims::d.
// Shapes: q (b, h, n, d_k), k (b, h_kv, n, d_k), v (b, h_kv, n, d_v),
// out (b, h, n, d_v); any n per call: whole segments or token by token give
// the same bits (a partial segment is held in the state until it completes).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../kernels/attention.hpp"
#include "../kernels/linear_state.hpp"
#include "../kernels/scale.hpp"
#include "../runtime/scratch.hpp"
#include "../simd/convert.hpp"
#include "protocol.hpp"
#include "snapshot.hpp"

LONGCTX_NAMESPACE_BEGIN

/// Which heads own a memory under GQA (h query heads, h_kv KV heads).
LONGCTX_UNTAGGED_BEGIN
enum class memory_sharing {
  per_kv_head,     ///< one memory per KV head, read by its h / h_kv query heads (default)
  per_query_head,  ///< one per query head, each folded with its KV head's K, V:
                   ///< equal to per_kv_head unless the initial states differ
};
LONGCTX_UNTAGGED_END

/// Whether finished segments are folded into the memory (a policy parameter:
/// a read-only layer is another configuration, see state_type::assign_memory).
LONGCTX_UNTAGGED_BEGIN
enum class memory_mode { read_write, read_only };
LONGCTX_UNTAGGED_END

/// One forward() call's tokens. q_mem / k_mem, when given, are what the memory
/// sees instead of q / k (e.g. before positional encoding, as in the paper);
/// the local attention always uses q / k. Flat (not derived from
/// sequence_input) so that infini_input{q, k, v} is an aggregate init.
struct infini_input {
  tensor4_view<const float> q, k, v;               ///< (b, h, n, d_k), (b, h_kv, n, d_k), (b, h_kv, n, d_v)
  tensor4_view<const float> q_mem{}, k_mem{};      ///< like q, k; empty (null data): q, k
};

/// The values of the paper's Table 2 "memory footprint" column for
/// Infini-Transformers: d_key (d_value + 1) H per layer (M and z of every
/// head): infini_memory_values(12, 8, 128, 128) = 1,585,152.
/// \param layers layers
/// \param heads memory heads per layer
/// \param d_k key dim
/// \param d_v value dim
/// \return layers heads d_k (d_v + 1)
constexpr std::uint64_t infini_memory_values(std::uint64_t layers, std::uint64_t heads, std::uint64_t d_k,
                                             std::uint64_t d_v) noexcept {
  return layers * heads * d_k * (d_v + 1);
}

/// The paper's accounting of one state (memory_footprint()); footprint() is
/// these bytes plus the gate factors.
struct infini_footprint {
  std::uint64_t memory_values = 0;  ///< M and z of every memory head (the paper's count)
  std::uint64_t buffer_values = 0;  ///< the unfinished segment's K, V, K_mem rows (in the K/V storage type)
  std::uint64_t bytes = 0;          ///< both, at their storage precision (with the q8 row scales)
};

namespace detail {
// Per-thread scratch of the policy's linear-state calls (separate from the
// attention kernel's, which runs in a different phase anyway).
struct infini_tag {};
template <class S>
S* infini_scratch(index_t elems) {
  return thread_scratch<infini_tag, S>(elems);
}
template <class KV>
std::string infini_kind() {
  std::string k = "infini/";  // appended: see bounded_cache_state::kind
  k += kv_storage_traits<KV>::name;
  return k;
}
}  // namespace detail

/// Infini-attention as a sequence_policy: per segment of `segment` tokens,
/// causal softmax attention inside the segment (the exact kernel), gated
/// with the retrieval s(Q) M / s(Q) z from the memory of earlier segments,
/// then the finished segment folded into M, z (docs: papers, section 1).
///
/// State = memory (fp32, or double with basic_infini<double>) + the partial
/// segment, whose K, K_mem and V rows are stored as KV (float, bf16, f16,
/// q8 with its per-row scale): local attention reads them in that type, and
/// a finished segment folds into the memory the values stored (so any split
/// of the stream gives the same bits; with float storage a whole segment is
/// read in place).
///
/// Shapes: q (b, h, n, d_k), k (b, h_kv, n, d_k), v (b, h_kv, n, d_v), out
/// (b, h, n, d_v), d_k = attention_dims::d; any n per call. Cost of n
/// tokens: O(b h n N (d_k + d_v)) local attention at most (N = segment),
/// O(b h n d_k d_v) retrieval, O(b h_mem N d_k d_v) per folded segment
/// (delta: twice). State: b h_mem d_k (d_v + 1) memory values plus b h_kv N
/// (2 d_k + d_v) buffered K/V values, constant in the stream length.
///
/// Contract: make_state() checks dims and parameters (segment > 0, enum
/// values, finite epsilon > 0, finite scale, beta of 0, h or h d_v values,
/// none NaN, the state's bytes <= 2^47); forward() checks that the state is
/// of this configuration (fingerprint), the shapes, strides and data of q,
/// k, v, out, the shapes and inner strides of q_mem and k_mem, and that out
/// aliases none of them, before
/// touching the state; every failure throws invalid_argument naming the
/// argument and changes nothing. Bits do not depend on the split of the
/// stream, the executor or its thread count.
///
/// Thread safety: the policy is immutable and may serve many states on many
/// threads; a state is used by one thread at a time.
/// \tparam S the memory's scalar: float (SIMD) or double (plain loops)
/// \tparam KV the storage type of the unfinished segment's K, K_mem, V
template <class S = float, kv_storage KV = float>
struct basic_infini {
  static_assert(std::is_same_v<S, float> || std::is_same_v<S, double>,
                "basic_infini<S>: the memory state type S must be float or double");

  // ---- Parameters (designated initialisers: infini{.segment = 512}). ------
  index_t segment = 2048;          ///< tokens per segment (N in the paper)
  std::optional<float> scale{};    ///< local attention logit scale; default default_scale(d_k)
  /// Gate logits: empty (every gate sigmoid(0) = 1/2), h values (one per head,
  /// the paper), or h * d_v (per head and value column, row-major). +inf / -inf
  /// are allowed: pure memory retrieval / pure local attention.
  std::vector<float> beta{};
  update_rule update = update_rule::linear;  ///< linear or whole-segment delta
  feature_map phi = feature_map::elu_plus_one;  ///< the paper's s = ELU + 1
  memory_sharing sharing = memory_sharing::per_kv_head;  ///< which heads own a memory
  /// The local attention's products: bf16 runs the AMX or AVX512_BF16
  /// engine (kernels/compute.hpp). Not in the fingerprint (rounding only).
  compute_precision compute = compute_precision::f32;
  /// Retrieval denominators: an empty memory (z all zero, the first segment)
  /// contributes exactly 0; otherwise |s(q) z| < epsilon is replaced by
  /// epsilon (with the sign of s(q) z). See retrieval_norm.
  float epsilon = 1e-6f;
  /// read_only retrieves and attends as usual but never folds a segment into
  /// the memory (the unfinished segment is still held for local attention).
  memory_mode memory = memory_mode::read_write;

  using input_type = infini_input;  ///< q, k, v and the optional q_mem, k_mem
  using storage_type = KV;
  // Elements stored before each buffered row (q8: its scale).
  static constexpr index_t P = kv_storage_traits<KV>::row_prefix;

  /// The state: per (batch, memory head) M (d_k, d_v) and z (d_k) in S,
  /// the unfinished segment's rows, the counters. Made by make_state() (a
  /// default-constructed one is rejected); copyable and movable. Used by one
  /// thread at a time.
  class state_type {
   public:
    /// An empty state no policy accepts; assign one from make_state.
    state_type() = default;

    /// \return the dims it was made for, d_v resolved (never 0)
    attention_dims dims() const noexcept { return dims_; }
    /// \return tokens per segment
    index_t segment() const noexcept { return segment_; }
    /// \return memories per batch element (h_kv or h, see memory_sharing)
    index_t memory_heads() const noexcept { return h_mem_; }
    /// \return tokens of the current, unfinished segment held in the state
    index_t position_in_segment() const noexcept { return pos_; }
    /// \return tokens attended so far
    std::uint64_t tokens_seen() const noexcept { return tokens_; }
    /// \return segments folded into the memory (none under read_only)
    std::uint64_t segments_folded() const noexcept { return folded_; }
    /// \return the policy's fingerprint(dims) at make_state (snapshots carry it)
    std::uint64_t fingerprint() const noexcept { return fingerprint_; }

    /// Memory of batch b, memory head m (see memory_sharing): write M and z
    /// here to start from a user-supplied initial state. M's padding columns
    /// [d_v, ld_m) must stay zero. Bounds are asserted in debug builds only.
    /// \param b the batch index
    /// \param m the memory head, in [0, memory_heads())
    /// \return M (row stride ld_m) and z of that memory, writable
    linear_state_view<S> memory(index_t b, index_t m) noexcept {
      LONGCTX_ASSERT(b >= 0 && b < dims_.b && m >= 0 && m < h_mem_);
      const index_t i = b * h_mem_ + m;
      return {m_.data() + i * dims_.d * ld_m_, z_.data() + i * dims_.d, dims_.d, dims_.d_v, ld_m_};
    }
    /// \param b the batch index
    /// \param m the memory head, in [0, memory_heads())
    /// \return M and z of that memory, read-only
    linear_state_view<const S> memory(index_t b, index_t m) const noexcept {
      return const_cast<state_type*>(this)->memory(b, m);
    }

    /// Copies M and z (not the unfinished segment, not the counters) from a
    /// state of the same dims and memory heads, whatever policy made it: the
    /// way to read one stream's memory with other gates or read-only, since
    /// forward() accepts only states of its own configuration.
    /// \param from a state with the same b, d_k, d_v and memory heads
    /// \throws invalid_argument when the memories' shapes differ or this
    ///   state was not made by make_state; nothing is copied then
    void assign_memory(const state_type& from) {
      constexpr const char* where = "infini::state_type::assign_memory";
      require(segment_ > 0, where, "this", "not made by make_state");
      require(from.dims_.b == dims_.b && from.dims_.d == dims_.d && from.dims_.d_v == dims_.d_v &&
                  from.h_mem_ == h_mem_,
              where, "from", [&] {
                return detail::concat("memory (b ", from.dims_.b, ", memory heads ", from.h_mem_, ", d_k ",
                                      from.dims_.d, ", d_v ", from.dims_.d_v, ") != this state's (b ", dims_.b,
                                      ", memory heads ", h_mem_, ", d_k ", dims_.d, ", d_v ", dims_.d_v, ")");
              });
      std::copy(from.m_.begin(), from.m_.end(), m_.begin());  // same sizes: no allocation, no throw
      std::copy(from.z_.begin(), from.z_.end(), z_.begin());
    }

    /// \return the paper's value counts (Table 2) and their bytes
    infini_footprint memory_footprint() const noexcept {
      return basic_infini::footprint_of(dims_, segment_, h_mem_);
    }
    /// The bytes of M and z (counted without their padding columns), the
    /// segment buffers and the gate factors; constant over the stream.
    /// \return memory_footprint().bytes plus the gates' 2 h d_v floats
    std::size_t footprint() const noexcept {
      return std::size_t(memory_footprint().bytes) + (gate_a_.size() + gate_b_.size()) * sizeof(float);
    }

    /// Bit-exact copy as one longctx snapshot (snapshot.hpp, kind
    /// "infini/<storage>"): position, token and segment counts, M and z
    /// without padding, then the unfinished segment's K, K_mem, V rows of
    /// every KV head. The gates are not in it (the fingerprint covers beta).
    /// \return the bytes; restore() of a same-configuration state reads them
    snapshot_bytes snapshot() const {
      snapshot_writer w(detail::infini_kind<KV>(), fingerprint_);
      w.put(std::int64_t(pos_));
      w.put(tokens_);
      w.put(folded_);
      visit_payload(pos_, [&](const auto* data, std::size_t count, const char*) { w.put_array(data, count); });
      return std::move(w).finish();
    }

    /// Restores a snapshot of a state of the same configuration (fingerprint)
    /// with the strong guarantee: parsed into a fresh state that replaces this
    /// one only once every check passed (envelope, counts consistent with the
    /// segment length, finite M and z, z >= 0, valid stored rows).
    /// \param bytes a snapshot() of a state of this configuration
    /// \throws invalid_argument naming the argument "bytes" and the field
    void restore(std::span<const std::byte> bytes) {
      constexpr const char* where = "infini::state_type::restore";
      require(segment_ > 0, where, "this", "not made by make_state");
      snapshot_reader r(bytes, detail::infini_kind<KV>(), fingerprint_, where);
      state_type fresh = blank();
      const auto pos = r.get<std::int64_t>("position");
      r.check(pos >= 0 && pos < segment_, "position", [&] {
        return detail::concat("position in segment ", pos, " outside [0, ", segment_, ")");
      });
      fresh.pos_ = index_t(pos);
      fresh.tokens_ = r.get<std::uint64_t>("tokens");
      fresh.folded_ = r.get<std::uint64_t>("segments");
      const auto seg = std::uint64_t(segment_);
      // Every call advances the position and the token count together, and
      // folds at most one segment per segment completed.
      r.check(fresh.tokens_ % seg == std::uint64_t(pos), "tokens", [&] {
        return detail::concat(fresh.tokens_, " tokens seen but position ", pos, " in segments of ", segment_);
      });
      r.check(fresh.folded_ <= fresh.tokens_ / seg, "segments", [&] {
        return detail::concat(fresh.folded_, " segments folded from ", fresh.tokens_, " tokens in segments of ",
                              segment_);
      });
      fresh.visit_payload(fresh.pos_,
                          [&](auto* data, std::size_t count, const char* field) { r.get_array(data, count, field); });
      r.finish();
      const auto finite = [](const std::vector<S>& x) {
        return std::all_of(x.begin(), x.end(), [](S s) { return std::isfinite(s); });
      };
      r.check(finite(fresh.m_), "M", "a non-finite memory value");
      r.check(finite(fresh.z_), "z", "a non-finite normaliser value");
      // z sums phi(K) > 0 under both rules.
      r.check(std::all_of(fresh.z_.begin(), fresh.z_.end(), [](S s) { return s >= S(0); }), "z",
              "a negative normaliser value (z sums phi(k) > 0)");
      // The unfinished segment's rows as store_row writes them (q8: scale
      // and range, kv_storage.hpp).
      for (index_t bk = 0; bk < dims_.b * dims_.h_kv; ++bk)
        for (index_t t = 0; t < fresh.pos_; ++t) {
          const index_t d = dims_.d, d_v = dims_.d_v, at = bk * segment_ + t;
          const bool ok = kv_storage_traits<KV>::row_valid(fresh.k_buf_.data() + at * (d + P) + P, d) &&
                          kv_storage_traits<KV>::row_valid(fresh.km_buf_.data() + at * (d + P) + P, d) &&
                          kv_storage_traits<KV>::row_valid(fresh.v_buf_.data() + at * (d_v + P) + P, d_v);
          r.check(ok, "rows", [&] {
            return detail::concat("row ", t, " of KV lane ", bk, " is not a valid ", kv_storage_traits<KV>::name, " row");
          });
        }
      *this = std::move(fresh);
    }

   private:
    friend struct basic_infini;

    // A zeroed state of this configuration (gates included).
    state_type blank() const {
      state_type s;
      s.dims_ = dims_;
      s.segment_ = segment_, s.h_mem_ = h_mem_, s.ld_m_ = ld_m_;
      s.fingerprint_ = fingerprint_;
      s.gate_a_ = gate_a_, s.gate_b_ = gate_b_;
      s.allocate();
      return s;
    }
    void allocate() {
      const std::size_t n_mem = std::size_t(dims_.b * h_mem_), rows = std::size_t(dims_.b * dims_.h_kv * segment_);
      m_.assign(n_mem * std::size_t(dims_.d * ld_m_), S(0));
      z_.assign(n_mem * std::size_t(dims_.d), S(0));
      k_buf_.assign(rows * std::size_t(dims_.d + P), KV{});
      km_buf_.assign(rows * std::size_t(dims_.d + P), KV{});
      v_buf_.assign(rows * std::size_t(dims_.d_v + P), KV{});
    }

    // Calls f(pointer, count, field) over every stored range, in snapshot
    // order, with the first `pos` rows of the segment buffers (pointers to const
    // from a const state).
    template <class F>
    void visit_payload(index_t pos, F&& f) const {
      const_cast<state_type*>(this)->visit_payload(pos, [&](auto* p, std::size_t c, const char* field) {
        f(static_cast<const std::remove_pointer_t<decltype(p)>*>(p), c, field);
      });
    }
    template <class F>
    void visit_payload(index_t pos, F&& f) {
      const index_t n_mem = dims_.b * h_mem_, d = dims_.d, d_v = dims_.d_v;
      for (index_t i = 0; i < n_mem * d; ++i) f(m_.data() + i * ld_m_, std::size_t(d_v), "M");
      f(z_.data(), z_.size(), "z");
      for (index_t bk = 0; bk < dims_.b * dims_.h_kv; ++bk) {  // rows with their prefixes (q8: scales)
        f(k_buf_.data() + bk * segment_ * (d + P), std::size_t(pos * (d + P)), "K rows");
        f(km_buf_.data() + bk * segment_ * (d + P), std::size_t(pos * (d + P)), "K_mem rows");
        f(v_buf_.data() + bk * segment_ * (d_v + P), std::size_t(pos * (d_v + P)), "V rows");
      }
    }

    attention_dims dims_{};
    index_t segment_ = 0, h_mem_ = 0, ld_m_ = 0, pos_ = 0;
    std::uint64_t tokens_ = 0, folded_ = 0, fingerprint_ = 0;
    std::vector<S> m_, z_;                       // (b, h_mem, d_k, ld_m), (b, h_mem, d_k)
    std::vector<KV> k_buf_, km_buf_, v_buf_;  // (b, h_kv, segment, P + d_k | P + d_k | P + d_v)
    // (h, d_v): sigmoid(beta), 1 - sigmoid(beta); derived from the policy at
    // make_state (the fingerprint covers beta), not snapshotted.
    std::vector<float> gate_a_, gate_b_;
  };

  // Memory heads and footprints of a configuration (before making a state).
  /// \param d the dims
  /// \return memories per batch element: h_kv (per_kv_head) or h
  index_t memory_heads(const attention_dims& d) const noexcept {
    return sharing == memory_sharing::per_kv_head ? d.h_kv : d.h;
  }
  /// \param d the dims
  /// \return what state_type::memory_footprint() of a state for d reports
  infini_footprint memory_footprint(const attention_dims& d) const noexcept {
    return footprint_of(resolved(d), segment, memory_heads(d));
  }
  /// \param d the dims
  /// \return what state_type::footprint() of a state for d reports
  std::size_t footprint(const attention_dims& d) const noexcept {
    return std::size_t(memory_footprint(d).bytes) + 2 * std::size_t(d.h * value_dim(d)) * sizeof(float);
  }

  /// Everything that changes what a state means: dims, segment, rules,
  /// sharing, epsilon, the effective scale, beta, memory mode, scalar size.
  /// \param dims the dims (d_v resolved first)
  /// \return the configuration fingerprint a state of this policy carries
  std::uint64_t fingerprint(const attention_dims& dims) const noexcept {
    const attention_dims d = resolved(dims);
    config_fingerprint f = fingerprint_of(d);
    f.add(std::int64_t(segment)).add(update).add(phi).add(sharing).add(memory);
    f.add(epsilon).add(effective_scale(d.d)).add(std::uint32_t(sizeof(S))).add(std::uint64_t(beta.size()));
    for (float x : beta) f.add(x);
    return f.value();
  }

  /// A state with empty memory (M = 0, z = 0) at the start of a segment.
  /// \param dims b, h, h_kv, d = d_k, d_v (0: d_k)
  /// \return the state
  /// \throws invalid_argument naming the bad parameter or "dims"
  state_type make_state(const attention_dims& dims) const {
    const attention_dims d = resolved(dims);
    check_params(d, "infini::make_state");
    state_type s;
    s.dims_ = d;
    s.segment_ = segment;
    s.h_mem_ = memory_heads(d);
    s.ld_m_ = linear_state_ld(d.d_v);
    s.fingerprint_ = fingerprint(d);
    fill_gates(s);
    s.allocate();
    return s;
  }

  /// \param d_k the key dim
  /// \return the local attention's logit scale: `scale`, or default_scale(d_k)
  float effective_scale(index_t d_k) const noexcept { return scale ? *scale : default_scale(d_k); }

  /// Processes in.q's n tokens (any n >= 0) and writes out (b, h, n, d_v):
  /// per token the gated sum of its causal attention over the segment so
  /// far and its retrieval from the memory of finished segments; each
  /// segment that completes is folded in after its retrieval.
  /// \tparam Arch the SIMD backend (default_arch)
  /// \param st a state from this policy's make_state()
  /// \param in q (b, h, n, d_k), k (b, h_kv, n, d_k), v (b, h_kv, n, d_v),
  ///   optional q_mem, k_mem of the shapes of q, k
  /// \param out (b, h, n, d_v), disjoint from every input
  /// \param exec the executor (serial by default)
  /// \throws invalid_argument when st was made by another configuration or
  ///   a view is wrong; st is then unchanged
  template <arch_tag Arch = default_arch, executor Exec = serial_executor>
  void forward(state_type& st, const infini_input& in, tensor4_view<float> out, Exec&& exec = {}) const {
    constexpr const char* where = "infini::forward";
    require(st.segment_ > 0, where, "state", "not made by make_state");
    const attention_dims& d = st.dims_;
    // Parameters were checked by make_state; a cheap hash proves they are
    // still the ones this state was made with.
    require(st.fingerprint_ == fingerprint(d), where, "state", [&] { return mismatch(st); });
    require_sequence_call(where, d, in.q, in.k, in.v, out);
    const index_t n = in.q.extent(2);
    const tensor4_view<const float> q_mem = in.q_mem.data() ? in.q_mem : in.q;
    const tensor4_view<const float> k_mem = in.k_mem.data() ? in.k_mem : in.k;
    require_like(where, "q_mem", q_mem, "q", in.q);
    require_like(where, "k_mem", k_mem, "k", in.k);
    require_disjoint(where, "out", out, "q_mem", q_mem, "k_mem", k_mem);
    require_engine<Arch>(compute);  // an engine that cannot run here throws before the state changes
    if (n == 0) return;

    const float sc = effective_scale(d.d);
    const index_t N = segment, group = d.h / d.h_kv, d_k = d.d, d_v = d.d_v;
    const retrieval_norm nm{normaliser::z_denominator, epsilon, 1.0};
    const auto buf_view = [&](std::vector<KV>& buf, index_t dim) {  // rows dim + P apart, past the prefix
      using E = typename tensor4_view<KV>::extents_type;
      const index_t r = dim + P;
      return tensor4_view<KV>(buf.empty() ? nullptr : buf.data() + P, E(d.b, d.h_kv, N, dim),  // b = 0: null
                              {d.h_kv * N * r, N * r, r, 1});
    };
    const tensor4_view<KV> kb = buf_view(st.k_buf_, d_k), kmb = buf_view(st.km_buf_, d_k),
                           vb = buf_view(st.v_buf_, d_v);  // (b, h_kv, N, d)

    for (index_t t = 0; t < n;) {
      const index_t p = st.pos_, len = std::min(n - t, N - p);
      // A whole segment of float K/V is read in place, never copied; other
      // storage types always go through the buffers (rounded once).
      const bool whole = kv_storage_traits<KV>::gemm_operand && p == 0 && len == N;
      tensor4_view<const KV> keys, vals, mem_keys;  // (b, h_kv, p + len, d)
      if (whole) {
        if constexpr (kv_storage_traits<KV>::gemm_operand)
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
      prefill_attention<Arch, KV>(in.q.tokens(t, len), keys, vals, o, sc, causal{}, lse_view{}, exec, {}, compute);
      // 2. A = sigmoid(beta) A_mem + (1 - sigmoid(beta)) A_dot, A_mem from
      // the memory of finished segments only.
      const tensor4_view<const float> qm = q_mem.tokens(t, len);
      exec.parallel_for(d.b * d.h, [&](index_t task) {
        const index_t bi = task / d.h, hi = task % d.h;
        const index_t mi = sharing == memory_sharing::per_kv_head ? hi / group : hi;
        const retrieval_combine comb{st.gate_a_.data() + hi * d_v, st.gate_b_.data() + hi * d_v};
        linear_retrieve<Arch, S>(st.memory(bi, mi), phi, nm, matrix_view<const float>(qm.head(bi, hi)),
                                 matrix_view<float>(o.head(bi, hi)), comb,
                                 detail::infini_scratch<S>(linear_retrieve_scratch(d_k, d_v)));
      });
      // 3. Fold the segment once it is complete (after its retrieval).
      st.pos_ = (p + len) % N;
      st.tokens_ += std::uint64_t(len);
      if (p + len == N && memory == memory_mode::read_write) {
        exec.parallel_for(d.b * st.h_mem_, [&](index_t task) {
          const index_t bi = task / st.h_mem_, mi = task % st.h_mem_;
          const index_t hk = sharing == memory_sharing::per_kv_head ? mi : mi / group;
          const auto [mk, mv] = fold_rows<Arch>(mem_keys.head(bi, hk), vals.head(bi, hk));
          linear_update<Arch, S>(st.memory(bi, mi), phi, update, nm, mk, mv,
                                 detail::infini_scratch<S>(linear_update_scratch(d_k, d_v)));
        });
        ++st.folded_;
      }
      t += len;
    }
  }

 private:
  static infini_footprint footprint_of(const attention_dims& d, index_t seg, index_t h_mem) noexcept {
    infini_footprint f;
    f.memory_values = std::uint64_t(d.b * h_mem) * std::uint64_t(d.d * (d.d_v + 1));
    f.buffer_values = std::uint64_t(d.b * d.h_kv * seg) * std::uint64_t(2 * d.d + d.d_v);
    f.bytes = f.memory_values * sizeof(S) +
              (f.buffer_values + std::uint64_t(d.b * d.h_kv * seg) * std::uint64_t(3 * P)) * sizeof(KV);
    return f;
  }

  // The K_mem and V rows a segment folds, as floats: float storage in place,
  // other types converted into per-thread scratch (exactly: widening).
  struct fold_tag {};
  template <arch_tag Arch, class M>
  static std::pair<matrix_view<const float>, matrix_view<const float>> fold_rows(const M& keys, const M& vals) {
    if constexpr (kv_storage_traits<KV>::gemm_operand) {
      return {matrix_view<const float>(keys), matrix_view<const float>(vals)};
    } else {
      const index_t n = keys.extent(0), dk = keys.extent(1), dv = vals.extent(1);
      float* buf = detail::thread_scratch<fold_tag, float>(n * (dk + dv));
      for (index_t i = 0; i < n; ++i) {
        kv_storage_traits<KV>::template load_row<Arch>(&keys(i, 0), buf + i * dk, dk);
        kv_storage_traits<KV>::template load_row<Arch>(&vals(i, 0), buf + n * dk + i * dv, dv);
      }
      return {make_matrix<dynamic_extent, const float>(buf, n, dk), make_matrix<dynamic_extent, const float>(buf + n * dk, n, dv)};
    }
  }

  // Why forward() rejected a state: the differences the state can name,
  // else the parameters only the fingerprint covers.
  std::string mismatch(const state_type& st) const {
    if (st.segment_ != segment)
      return detail::concat("made with segment ", st.segment_, ", this policy's segment is ", segment);
    if (st.h_mem_ != memory_heads(st.dims_))
      return detail::concat("made with ", st.h_mem_, " memory heads, this policy's sharing gives ",
                            memory_heads(st.dims_));
    return "made by a policy with other parameters (update, phi, sharing, epsilon, scale, beta or memory mode); "
           "assign_memory() moves a memory between configurations";
  }

  void check_params(const attention_dims& d, const char* where) const {
    require_dims(d, where);
    require(segment > 0, where, "segment", "must be > 0, got ", segment);
    const int u = int(update), f = int(phi), s = int(sharing), m = int(memory);
    require(u >= 0 && u <= 1, where, "update", "unknown update_rule ", u);
    require(f >= 0 && f <= 1, where, "phi", "unknown feature_map ", f);
    require_compute_precision(where, compute);
    require(s >= 0 && s <= 1, where, "sharing", "unknown memory_sharing ", s);
    require(m >= 0 && m <= 1, where, "memory", "unknown memory_mode ", m);
    require(std::isfinite(epsilon) && epsilon > 0, where, "epsilon", "must be finite and > 0, got ", epsilon);
    require(!scale || std::isfinite(*scale), where, "scale", "must be finite, got ", scale.value_or(0.0f));
    require(beta.empty() || beta.size() == std::size_t(d.h) || beta.size() == std::size_t(d.h * d.d_v), where,
            "beta", "needs 0, h = ", d.h, " or h * d_v = ", d.h * d.d_v, " values, got ", beta.size());
    for (std::size_t i = 0; i < beta.size(); ++i)
      require(!std::isnan(beta[i]), where, "beta", "value ", i, " is NaN");
    // The state's bytes (and so every index_t product over it) bounded.
    const double rows = double(d.b) * double(d.h_kv) * double(segment) * double(2 * d.d + d.d_v + 3 * P);
    const double mem = double(d.b) * double(memory_heads(d)) * double(d.d) * double(linear_state_ld(d.d_v) + 1);
    require_state_bytes(where, "dims", rows * double(sizeof(KV)) + mem * double(sizeof(S)));
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

  // Rows [t, t + len) of src into rows [p, p + len) of the segment buffer,
  // converted to the storage type (q8: with the row's scale).
  static void append(const tensor4_view<KV>& buf, const tensor4_view<const float>& src, index_t t, index_t p,
                     index_t len) {
    const index_t dim = src.extent(3);
    for (index_t bi = 0; bi < src.extent(0); ++bi)
      for (index_t hk = 0; hk < src.extent(1); ++hk)
        for (index_t i = 0; i < len; ++i)
          kv_storage_traits<KV>::template store_row<default_arch>(&src(bi, hk, t + i, 0), &buf(bi, hk, p + i, 0), dim);
  }
};

/// Infini-attention with an fp32 memory and float K/V: infini{.segment =
/// 2048}. basic_infini<double> keeps the memory in double,
/// basic_infini<float, bf16> (f16, q8) buffers the segment's K/V in 16 or 8
/// bits.
using infini = basic_infini<float>;
LONGCTX_ASSERT_SEQUENCE_POLICY(basic_infini<float>);
LONGCTX_ASSERT_SEQUENCE_POLICY(basic_infini<double>);
LONGCTX_ASSERT_SEQUENCE_POLICY(basic_infini<float, bf16>);
LONGCTX_ASSERT_SEQUENCE_POLICY(basic_infini<float, q8>);

LONGCTX_NAMESPACE_END
