// The protocol of every sequence policy (DESIGN.md sections 1 and 5): a
// policy is an aggregate of parameters with a state_type it creates from
// attention_dims, and forward(state, in, out, exec) that attends a segment
// of n tokens, any n, continuing the state's stream. A whole prompt, any
// split of it into calls, or single tokens give the same bits; the state
// snapshots and restores bit-exactly and reports its footprint in bytes.
//   in.q (b, h, n, d), in.k (b, h_kv, n, d), in.v (b, h_kv, n, d_v),
//   out (b, h, n, d_v). GQA: h % h_kv == 0.
/// \file
/// The protocol of every sequence policy: attention_dims, sequence_input,
/// the sequence_policy concept and LONGCTX_ASSERT_SEQUENCE_POLICY.
#pragma once

#include <algorithm>

#include <concepts>
#include <cstddef>
#include <span>
#include <type_traits>
#include <vector>

#include "../runtime/executor.hpp"
#include "../tensor/view.hpp"
#include "snapshot.hpp"

namespace longctx {

// The shape letters every policy is made from (one struct for all of them).
// Plain data, outside the ISA-tagged namespace: it crosses translation units
// built with other flags.
/// The shape letters every sequence policy's state is made from:
/// `make_state(attention_dims{.b = 1, .h = 32, .h_kv = 8, .d = 128})`.
/// Fields: b batch (>= 0), h query heads (>= 1), h_kv KV heads (>= 1, h %
/// h_kv == 0), d query / key head dim (>= 1; FLASH's s), d_v value head dim
/// (>= 0, 0 meaning d; FLASH's e). make_state checks them (require_dims) and
/// every state reports them with d_v resolved (dims()). Plain data, outside
/// the ISA-tagged namespace: it crosses translation units built with other
/// flags.
struct attention_dims {
  std::ptrdiff_t b = 1;     // batch
  std::ptrdiff_t h = 1;     // query heads
  std::ptrdiff_t h_kv = 1;  // KV heads, h % h_kv == 0
  std::ptrdiff_t d = 0;     // query / key head dim
  std::ptrdiff_t d_v = 0;   // value head dim; 0 means d
};

}  // namespace longctx

LONGCTX_NAMESPACE_BEGIN

// d_v with 0 resolved to d.
/// \param a the dims
/// \return a.d_v, or a.d when a.d_v is 0
constexpr index_t value_dim(const attention_dims& a) noexcept { return a.d_v ? a.d_v : a.d; }
// The dims with d_v resolved: what every state stores and reports.
/// \param a the dims
/// \return a with d_v resolved: what every state stores and reports
constexpr attention_dims resolved(attention_dims a) noexcept {
  a.d_v = value_dim(a);
  return a;
}
// A configuration fingerprint begun with the (resolved) dims; a policy adds
// its parameters.
inline config_fingerprint fingerprint_of(const attention_dims& a) noexcept {
  config_fingerprint f;
  f.add(std::int64_t(a.b)).add(std::int64_t(a.h)).add(std::int64_t(a.h_kv)).add(std::int64_t(a.d));
  f.add(std::int64_t(value_dim(a)));
  return f;
}

// The tokens of one forward() call. A method with extra per-token inputs
// extends this (infini_input, flash_input) with defaulted fields, so
// `typename P::input_type{q, k, v}` works for every policy.
/// The tokens of one forward() call of a bounded cache or dense: q (b, h,
/// n, d), k (b, h_kv, n, d), v (b, h_kv, n, d_v), any strides with a
/// contiguous last axis. infini_input and flash_input add defaulted fields,
/// so `typename P::input_type{q, k, v}` works for every policy.
struct sequence_input {
  tensor4_view<const float> q, k, v;  // (b, h, n, d), (b, h_kv, n, d), (b, h_kv, n, d_v)
};

// Checks dims every policy needs (named `dims` in the message).
inline void require_dims(const attention_dims& a, const char* where) {
  require(a.b >= 0 && a.h >= 1 && a.h_kv >= 1 && a.d >= 1 && a.d_v >= 0, where, "dims",
          "need b >= 0, h >= 1, h_kv >= 1, d >= 1, d_v >= 0 (0: d), got (b ", a.b, ", h ", a.h, ", h_kv ",
          a.h_kv, ", d ", a.d, ", d_v ", a.d_v, ")");
  require(a.h % a.h_kv == 0, where, "dims", "query heads h ", a.h, " not a multiple of KV heads h_kv ", a.h_kv);
  // One token's values fit comfortably in index_t (products of dims below).
  const double per_token = double(a.b) * double(a.h) * double(std::max(a.d, a.d_v));
  require(per_token <= 0x1p40, where, "dims", "b h max(d, d_v) = ", per_token, " values per token is too large");
}

// What a policy's state would allocate, checked in double before anything
// is allocated: at most 2^47 bytes (the user address space of x86-64 and
// AArch64), so a huge configuration is an invalid_argument naming the
// argument, never an overflow or a length_error. A size that fits the
// address space but not the machine is std::bad_alloc.
inline void require_state_bytes(const char* where, const char* argument, double bytes) {
  require(bytes <= 0x1p47, where, argument, "the state would hold ", bytes, " bytes (more than 2^47)");
}

// Checks one forward() call's q, k, v, out against the state's dims: shapes,
// unit inner strides and data (named by argument in the message).
inline void require_sequence_call(const char* where, const attention_dims& a, const tensor4_view<const float>& q,
                                  const tensor4_view<const float>& k, const tensor4_view<const float>& v,
                                  const tensor4_view<float>& out) {
  const index_t n = q.extent(2), dv = value_dim(a);
  const auto shapes = [&] {
    return detail::concat("q ", shape_of(q), ", k ", shape_of(k), ", v ", shape_of(v), ", out ", shape_of(out),
                          "; state (b ", a.b, ", h ", a.h, ", h_kv ", a.h_kv, ", d ", a.d, ", d_v ", dv, ")");
  };
  require(q.extent(0) == a.b && q.extent(1) == a.h && q.extent(3) == a.d, where, "q",
          "must be (b, h, n, d) of the state: ", shapes);
  require(k.extent(0) == a.b && k.extent(1) == a.h_kv && k.extent(2) == n && k.extent(3) == a.d, where, "k",
          "must be (b, h_kv, n, d): ", shapes);
  require(v.extent(0) == a.b && v.extent(1) == a.h_kv && v.extent(2) == n && v.extent(3) == dv, where, "v",
          "must be (b, h_kv, n, d_v): ", shapes);
  require(out.extent(0) == a.b && out.extent(1) == a.h && out.extent(2) == n && out.extent(3) == dv, where,
          "out", "must be (b, h, n, d_v): ", shapes);
  require_views(where, "q", q, "k", k, "v", v, "out", out);
  require_disjoint(where, "out", out, "q", q, "k", k, "v", v);
}

// An optional per-token input that defaults to another (infini's q_mem, k_mem;
// flash's q_lin, k_lin): the same shape as `ref` and a contiguous last axis.
inline void require_like(const char* where, const char* argument, const tensor4_view<const float>& t,
                         const char* ref_name, const tensor4_view<const float>& ref) {
  require(t.extents() == ref.extents(), where, argument, [&] {
    return detail::concat("must have the shape of ", ref_name, " ", shape_of(ref), ", got ", shape_of(t));
  });
  require_unit_inner_stride(t, where, argument);
  // Same extents as an addressable ref say nothing of t's strides.
  require_data(t, where, argument);
}

// Every bounded-state attention policy (and the dense baseline) satisfies
// this; user code written against it swaps methods in one line.
/// The protocol of every sequence policy: dense, tova, h2o_cache,
/// window_cache, sinks_cache, snapkv (every bounded_cache), infini
/// (basic_infini) and flash. P is an aggregate of parameters with
///   - `state_type`, made by `p.make_state(attention_dims)`, which checks
///     the dims and every parameter (invalid_argument otherwise);
///   - `input_type`, constructible from `{q, k, v}`;
///   - `p.forward(state, in, out)` and `p.forward(state, in, out, exec)`:
///     attends in.q (b, h, n, d) over the state's stream and its own tokens
///     (k (b, h_kv, n, d), v (b, h_kv, n, d_v)), any n >= 0 per call, writes
///     out (b, h, n, d_v) and advances the state;
///   - on the state: `dims()`, `snapshot()` (a snapshot_bytes), `restore(bytes)`
///     (untrusted bytes, all-or-nothing) and `footprint()` (bytes held).
///
/// What every policy in the library guarantees (tests/policies/protocol.cpp
/// checks it for every policy, storage type and backend): snapshot, restore
/// into a fresh state and continue gives the uninterrupted run's bits; 1, 2
/// or 3 threads give the same bits; a bounded state's footprint() is
/// constant; a bad call throws invalid_argument naming the argument and
/// leaves the state unchanged; any split of the stream into calls gives the
/// same bits for Infini-attention and FLASH, and for the caches under
/// prefill_mode::token_by_token (their default prefill selects once per
/// call). A policy object is immutable: one may serve many states on many
/// threads; a state is used by one thread at a time.
template <class P>
concept sequence_policy =
    std::is_aggregate_v<P> &&
    requires(const P& p, typename P::state_type& st, const typename P::state_type& cst,
             const typename P::input_type& in, tensor4_view<const float> t, tensor4_view<float> out,
             const attention_dims& dims, std::span<const std::byte> bytes, serial_executor& exec) {
      { typename P::input_type{t, t, t} };  // every input is made from q, k, v
      { p.make_state(dims) } -> std::same_as<typename P::state_type>;
      p.forward(st, in, out);
      p.forward(st, in, out, exec);
      { cst.snapshot() } -> std::same_as<snapshot_bytes>;
      st.restore(bytes);
      { cst.footprint() } -> std::same_as<std::size_t>;
      { cst.dims() } -> std::convertible_to<attention_dims>;
    };

// The readable form of the check, one line under each policy:
//   LONGCTX_ASSERT_SEQUENCE_POLICY(tova);
/// static_assert(sequence_policy<P>) with a one-line message listing what
/// the protocol needs: `LONGCTX_ASSERT_SEQUENCE_POLICY(my_policy);`.
#define LONGCTX_ASSERT_SEQUENCE_POLICY(...)                                                                    \
  static_assert(::longctx::sequence_policy<__VA_ARGS__>,                                                       \
                #__VA_ARGS__ " is not a longctx::sequence_policy: it needs state_type, input_type (from q, k, "  \
                "v), make_state(attention_dims), forward(state, in, out[, exec]) and a state with dims(), "      \
                "snapshot(), restore(bytes), footprint()")

LONGCTX_NAMESPACE_END
