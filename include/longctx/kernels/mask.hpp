// Mask descriptors: never materialised. A descriptor is bound to (n_q, n_kv)
// and then answers, in O(1): which keys row i may see (one or two intervals),
// whether a (rows x keys) tile is empty, full or partial, and visible(i, j).
// Causal-family masks align the last query with the last key (bottom-right,
// the decoding convention) unless alignment::top_left is asked for.
#pragma once

#include <algorithm>
#include <concepts>
#include <limits>

#include "../tensor/extents.hpp"

LONGCTX_NAMESPACE_BEGIN

LONGCTX_UNTAGGED_BEGIN
/// Where a causal-family mask puts its diagonal when n_q != n_kv.
/// bottom_right (the default of every mask): query i is key position i +
/// (n_kv - n_q), so the last query sees every key (decoding over a cache);
/// top_left: query i is key position i.
enum class alignment { bottom_right, top_left };
/// How a (rows x keys) tile relates to a mask: every pair hidden, every pair
/// visible, or some of each (masked per element).
enum class tile_kind { empty, full, partial };
LONGCTX_UNTAGGED_END

/// The keys row i may see: [lo, hi), plus the prefix [0, prefix) for sink
/// masks (prefix <= hi: a sink is never visible before the causal diagonal
/// reaches it).
struct key_interval {
  index_t lo, hi, prefix = 0;
};

namespace detail {
// Rows see a window [lo(i), hi(i)) that never moves left as i grows; every
// causal-family mask is one of these (plus an optional sink prefix).
template <class Derived>
struct monotone_mask {
  // Keys any row of [i0, i1) may see: loops run over this range only.
  key_interval keys_for_rows(index_t i0, index_t i1) const noexcept {
    const auto& d = static_cast<const Derived&>(*this);
    const key_interval a = d.row(i0), b = d.row(i1 - 1);
    return {a.lo, b.hi, b.prefix};
  }
  // Conservative where exactness would cost: "partial" is always safe.
  tile_kind classify(index_t i0, index_t i1, index_t j0, index_t j1) const noexcept {
    const auto& d = static_cast<const Derived&>(*this);
    const key_interval first = d.row(i0), last = d.row(i1 - 1);
    // lo, hi and prefix never decrease with i: the first row bounds the
    // minimum, the last row the maximum.
    if (j1 <= first.prefix) return tile_kind::full;
    if (last.lo <= j0 && first.hi >= j1) return tile_kind::full;
    const bool window_empty = last.hi <= j0 || first.lo >= j1;
    const bool prefix_empty = j0 >= last.prefix;
    return window_empty && prefix_empty ? tile_kind::empty : tile_kind::partial;
  }
  bool visible(index_t i, index_t j) const noexcept {
    const key_interval r = static_cast<const Derived&>(*this).row(i);
    return (j >= r.lo && j < r.hi) || j < r.prefix;
  }
};
}  // namespace detail

// ---- Descriptors (parameters) and their bound forms. -----------------------

/// Every query sees every key (the default mask of attention() and decode()).
struct no_mask {
  struct bound : detail::monotone_mask<bound> {
    index_t n_kv;
    key_interval row(index_t) const noexcept { return {0, n_kv}; }
  };
  bound bind(index_t, index_t n_kv) const noexcept { return {{}, n_kv}; }
};

namespace detail {
inline index_t diagonal_offset(alignment a, index_t n_q, index_t n_kv) noexcept {
  return a == alignment::bottom_right ? n_kv - n_q : 0;
}
// Row i's last visible key (inclusive) is i + off.
struct causal_window_bound : monotone_mask<causal_window_bound> {
  index_t n_kv, off, window, sinks;  // window <= 0: unbounded
  key_interval row(index_t i) const noexcept {
    const index_t hi = std::clamp<index_t>(i + off + 1, 0, n_kv);
    const index_t lo = window > 0 ? std::clamp<index_t>(i + off + 1 - window, 0, hi) : 0;
    return {lo, hi, std::min(sinks, hi)};
  }
};
}  // namespace detail

/// Causal: key j visible to query i iff j <= i + (n_kv - n_q) (bottom-right,
/// the default) or j <= i (alignment::top_left). A query row before the
/// first key (n_q > n_kv, bottom-right) sees nothing: output 0, LSE -inf.
struct causal {
  alignment align = alignment::bottom_right;  ///< where the diagonal lies
  detail::causal_window_bound bind(index_t n_q, index_t n_kv) const noexcept {
    return {{}, n_kv, detail::diagonal_offset(align, n_q, n_kv), 0, 0};
  }
};

/// Causal, and at most `window` most recent keys (the query's own
/// included): key j visible to the query at key position p iff p - window
/// < j <= p. The entry points require window > 0 (the default 0 throws).
struct sliding_window {
  index_t window = 0;  ///< keys visible per query, > 0
  alignment align = alignment::bottom_right;  ///< where the diagonal lies
  detail::causal_window_bound bind(index_t n_q, index_t n_kv) const noexcept {
    return {{}, n_kv, detail::diagonal_offset(align, n_q, n_kv), window, 0};
  }
};

/// StreamingLLM: the first `sinks` keys plus a causal window of `window`
/// keys (a sink is visible only once the diagonal has reached it). The entry
/// points require sinks >= 0 and window > 0.
struct sinks_window {
  index_t sinks = 4;  ///< the always-visible first keys, >= 0
  index_t window = 0;  ///< the causal window, > 0
  alignment align = alignment::bottom_right;  ///< where the diagonal lies
  detail::causal_window_bound bind(index_t n_q, index_t n_kv) const noexcept {
    return {{}, n_kv, detail::diagonal_offset(align, n_q, n_kv), window, sinks};
  }
};

/// Causal inside consecutive chunks of `chunk` keys (chunk boundaries
/// counted on the key axis), nothing across chunks: the query at key
/// position p sees [chunk floor(p / chunk), p]. The entry points require
/// chunk > 0.
struct chunk_local {
  index_t chunk = 0;  ///< keys per chunk, > 0
  alignment align = alignment::bottom_right;  ///< where the diagonal lies
  struct bound : detail::monotone_mask<bound> {
    index_t n_kv, off, chunk;
    key_interval row(index_t i) const noexcept {
      const index_t last = i + off;  // the row's own key position
      const index_t hi = std::clamp<index_t>(last + 1, 0, n_kv);
      const index_t lo = last < 0 ? hi : std::min(hi, (last / chunk) * chunk);
      return {lo, hi};
    }
  };
  bound bind(index_t n_q, index_t n_kv) const noexcept {
    return {{}, n_kv, detail::diagonal_offset(align, n_q, n_kv), chunk};
  }
};

/// What the kernels need of a bound mask, each in O(1):
/// keys_for_rows(i0, i1) (a key_interval covering what rows [i0, i1) may
/// see), classify(i0, i1, j0, j1) (a tile's tile_kind; partial is always
/// safe) and visible(i, j). New mask families (RMT's block layouts)
/// implement this.
template <class B>
concept bound_mask = requires(const B& b, index_t i) {
  { b.keys_for_rows(i, i) } -> std::same_as<key_interval>;
  { b.classify(i, i, i, i) } -> std::same_as<tile_kind>;
  { b.visible(i, i) } -> std::convertible_to<bool>;
};
/// A mask descriptor: parameters only, never a materialised matrix.
/// m.bind(n_q, n_kv) gives the bound_mask the kernels evaluate per tile
/// (fully hidden tiles are skipped, partial ones masked per element).
/// no_mask, causal, sliding_window, sinks_window, chunk_local and the RMT
/// masks (kernels/rmt_mask.hpp) are mask descriptors.
template <class M>
concept mask_descriptor = requires(const M& m, index_t n) {
  { m.bind(n, n) } -> bound_mask;
};

/// The parameter checks every entry point runs on a mask: window > 0,
/// chunk > 0, sinks >= 0 for the masks that have those fields.
/// \param m the mask
/// \param where the entry point, for the message
/// \throws invalid_argument naming the argument "mask"
template <class M>
void require_mask(const M& m, const char* where) {
  if constexpr (requires { m.window; }) {
    require(m.window > 0, where, "mask", "window must be > 0, got ", m.window);
  }
  if constexpr (requires { m.chunk; }) {
    require(m.chunk > 0, where, "mask", "chunk must be > 0, got ", m.chunk);
  }
  if constexpr (requires { m.sinks; }) {
    require(m.sinks >= 0, where, "mask", "sinks must be >= 0, got ", m.sinks);
  }
}

namespace detail {
// -inf over the keys row i may not see in tile [j0, j0 + nk), and over the
// padding [nk, nkp).
template <class BoundMask>
inline void mask_row(const BoundMask& mask, index_t i, index_t j0, index_t nk, index_t nkp, bool partial,
                     float* s) noexcept {
  if (partial) {
    if constexpr (requires { mask.row(i); }) {
      const key_interval r = mask.row(i);
      for (index_t jj = 0; jj < nk; ++jj) {
        const index_t j = j0 + jj;
        if (!((j >= r.lo && j < r.hi) || j < r.prefix)) s[jj] = -std::numeric_limits<float>::infinity();
      }
    } else {
      for (index_t jj = 0; jj < nk; ++jj)
        if (!mask.visible(i, j0 + jj)) s[jj] = -std::numeric_limits<float>::infinity();
    }
  }
  for (index_t jj = nk; jj < nkp; ++jj) s[jj] = -std::numeric_limits<float>::infinity();
}
}  // namespace detail

LONGCTX_NAMESPACE_END
