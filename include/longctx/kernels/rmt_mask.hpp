// RMT mask descriptors (PAPERS.md section 3), evaluated per tile by the exact
// attention kernel, never materialised. Keys: [xl (X); read (m); segment (s);
// write (w)], queries: the last n_q packed rows (bottom-right). Every row sees
// one key interval, so classify is exact. Plus position ids for memory rows.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>

#include "../error.hpp"
#include "mask.hpp"

LONGCTX_NAMESPACE_BEGIN

/// The three published visibility conventions of the decoder layout
/// [read; segment; write]:
///   causal:        plain causal over the whole packed sequence (authors' HF wrapper);
///   block_visible: read and write blocks each fully visible among themselves,
///                  segment causal (authors' original Transformer-XL code);
///   isolated_read: read block sees only itself, segment causal + read, write
///                  block sees everything (the popular port).
/// Without an XL cache block_visible and isolated_read give the same visibility.
LONGCTX_UNTAGGED_BEGIN
enum class rmt_convention : std::uint32_t { causal = 0, block_visible = 1, isolated_read = 2 };
LONGCTX_UNTAGGED_END

/// Whether memory rows see the Transformer-XL cache keys in front of the packed
/// segment (the authors' code hides them by default). isolated_read's read block
/// sees only itself unless rmt_decoder_mask::read_sees_xl. The rmt driver
/// carries an XL cache with rmt::xl > 0.
LONGCTX_UNTAGGED_BEGIN
enum class rmt_xl : std::uint32_t { hidden_from_memory = 0, visible_to_memory = 1 };
LONGCTX_UNTAGGED_END

namespace detail {
// A row's keys are [lo, hi); a run of rows [a, b) of one block has a constant
// lo and an hi that does not decrease, so the run's tile test is exact.
struct rmt_run {
  index_t a, b, lo, hi_first, hi_last;
};

template <class Derived>
struct interval_rows_mask {
  key_interval keys_for_rows(index_t i0, index_t i1) const noexcept {
    const auto& d = static_cast<const Derived&>(*this);
    index_t lo = d.n_kv, hi = 0;
    d.for_runs(i0, i1, [&](const rmt_run& r) {
      lo = std::min(lo, r.lo);
      hi = std::max(hi, r.hi_last);
    });
    return lo < hi ? key_interval{lo, hi} : key_interval{0, 0};
  }
  tile_kind classify(index_t i0, index_t i1, index_t j0, index_t j1) const noexcept {
    bool all_full = true, all_empty = true;
    static_cast<const Derived&>(*this).for_runs(i0, i1, [&](const rmt_run& r) {
      // Full: every row's [lo, hi) covers [j0, j1); the smallest hi is the first row's.
      all_full &= r.lo <= j0 && r.hi_first >= j1;
      // Empty: no row's [lo, hi) meets [j0, j1); the largest hi is the last row's.
      all_empty &= r.lo >= j1 || r.hi_last <= j0 || r.lo >= r.hi_last;
    });
    if (all_empty) return tile_kind::empty;
    return all_full ? tile_kind::full : tile_kind::partial;
  }
  key_interval row(index_t i) const noexcept {
    key_interval k{0, 0};
    static_cast<const Derived&>(*this).for_runs(i, i + 1, [&](const rmt_run& r) { k = {r.lo, r.hi_first}; });
    return k.lo < k.hi ? k : key_interval{0, 0};
  }
  bool visible(index_t i, index_t j) const noexcept {
    const key_interval k = row(i);
    return j >= k.lo && j < k.hi;
  }
};
}  // namespace detail

/// The RMT decoder mask: keys [read (m); segment (s); write (w)] after an
/// optional XL cache of `xl` keys, queries the last n_q packed rows. segment
/// < 0: the whole packed segment, s = n_kv - xl - 2m, w = m. Otherwise w =
/// n_kv - xl - m - segment, in [0, m]: streaming binds the read block alone
/// (segment 0, w 0), a growing segment (w 0), then the write rows. Segment
/// rows are causal and see every key before them. bind() throws
/// invalid_argument when n_kv cannot hold the blocks or n_q exceeds the
/// packed rows. O(1) per row and per tile, never materialised.
struct rmt_decoder_mask {
  index_t memory = 0;  ///< m, the read (and write) block size
  index_t segment = -1;  ///< s; < 0: the whole packed segment
  index_t xl = 0;  ///< Transformer-XL cache keys in front
  rmt_convention convention = rmt_convention::block_visible;  ///< the memory blocks' visibility
  rmt_xl xl_visibility = rmt_xl::hidden_from_memory;  ///< whether memory rows see the XL keys
  /// isolated_read only: its read block also sees the XL keys when memory
  /// rows do (xl_visibility = visible_to_memory), as in the port that uses
  /// this convention with an XL cache. Default false: the read block sees
  /// only itself. No effect on the other conventions.
  bool read_sees_xl = false;

  struct bound : detail::interval_rows_mask<bound> {
    index_t n_kv, off;           // query i is packed key position i + off
    index_t xl, m, s, w;         // block sizes on the key axis
    rmt_convention conv;
    rmt_xl xl_vis;
    bool read_xl;

    // Calls f once per block run of query rows [i0, i1) (at most three).
    template <class F>
    void for_runs(index_t i0, index_t i1, F&& f) const noexcept {
      const index_t r0 = xl, s0 = xl + m, w0 = xl + m + s;  // key positions of block starts
      const index_t mem_lo = xl_vis == rmt_xl::visible_to_memory ? 0 : xl;
      const index_t p0 = i0 + off, p1 = i1 + off;
      // Read rows.
      if (const index_t a = std::max(p0, r0), b = std::min(p1, s0); a < b) {
        if (conv == rmt_convention::causal) f(detail::rmt_run{a - off, b - off, mem_lo, a + 1, b});
        else
          f(detail::rmt_run{a - off, b - off, conv == rmt_convention::isolated_read && !read_xl ? r0 : mem_lo, s0, s0});
      }
      // Segment rows: causal, and see every key before them (XL cache included).
      if (const index_t a = std::max(p0, s0), b = std::min(p1, w0); a < b)
        f(detail::rmt_run{a - off, b - off, 0, a + 1, b});
      // Write rows.
      if (const index_t a = std::max(p0, w0), b = std::min(p1, n_kv); a < b) {
        if (conv == rmt_convention::causal) f(detail::rmt_run{a - off, b - off, mem_lo, a + 1, b});
        else f(detail::rmt_run{a - off, b - off, mem_lo, n_kv, n_kv});
      }
    }
  };

  bound bind(index_t n_q, index_t n_kv) const {
    require(memory >= 0 && xl >= 0, "rmt_decoder_mask::bind", "mask", "memory ", memory, " and xl ", xl,
            " must be >= 0");
    const index_t s = segment < 0 ? n_kv - xl - 2 * memory : segment;
    const index_t w = n_kv - xl - memory - s;
    require(s >= 0 && w >= 0 && w <= memory, "rmt_decoder_mask::bind", "mask", "n_kv ", n_kv,
            " does not hold xl ", xl, " + read ", memory, " + segment ", s, " + write (0..", memory, ")");
    require(n_q >= 0 && n_q <= n_kv - xl, "rmt_decoder_mask::bind", "q", "n_q ", n_q,
            " exceeds the packed rows ", n_kv - xl, " (queries are never XL cache rows)");
    return {{}, n_kv, n_kv - n_q, xl, memory, s, w, convention, xl_visibility, read_sees_xl};
  }
};

/// The RMT encoder mask, keys [memory (m); segment (s)]: bidirectional,
/// every row sees every key. bind() throws invalid_argument when n_kv < m.
struct rmt_encoder_mask {
  index_t memory = 0;  ///< m

  struct bound : detail::interval_rows_mask<bound> {
    index_t n_kv, n_q;
    template <class F>
    void for_runs(index_t i0, index_t i1, F&& f) const noexcept {
      if (i0 < i1) f(detail::rmt_run{i0, i1, 0, n_kv, n_kv});
    }
  };
  bound bind(index_t n_q, index_t n_kv) const {
    require(memory >= 0 && n_kv >= memory, "rmt_encoder_mask::bind", "mask", "n_kv ", n_kv,
            " does not hold the ", memory, " memory rows");
    return {{}, n_kv, n_q};
  }
};

// ---- Position ids. -----------------------------------------------------------

/// The position ids the RMT driver gives packed rows:
///   sequential: the packed row index (read 0..m-1, segment m.., write after it);
///   zero:       memory rows at 0, segment token c at c;
///   offset:     memory row k (read and write alike) at offset + k, segment token c at c;
///   content_offset: every memory row at memory_position, segment token c at
///               offset + c (a popular port: memory at 0, content at 10000 + c,
///               so RoPE sees memory and content about `offset` apart).
/// With m = 0 the first three give the segment 0..s-1, i.e. the backbone
/// alone; content_offset gives offset..offset+s-1.
LONGCTX_UNTAGGED_BEGIN
enum class rmt_position_mode : std::uint32_t { sequential = 0, zero = 1, offset = 2, content_offset = 3 };
/// The three blocks of a packed RMT segment.
enum class rmt_block { read, segment, write };
LONGCTX_UNTAGGED_END

/// A position-id rule (rmt::positions).
struct rmt_positions {
  rmt_position_mode mode = rmt_position_mode::sequential;  ///< the rule
  /// offset: the first memory row's position; content_offset: the first
  /// segment token's position
  index_t offset = 0;
  index_t memory_position = 0;  ///< content_offset: the position of every memory row

  /// Position of row `k` of `block` (the encoder's memory is a read block).
  /// \param block the block the row is in
  /// \param k the row's index inside its block
  /// \param m memory rows
  /// \param s segment rows before the write block (sequential write rows only)
  /// \return the position id
  constexpr index_t operator()(rmt_block block, index_t k, index_t m, index_t s) const noexcept {
    switch (block) {
      case rmt_block::segment:
        if (mode == rmt_position_mode::content_offset) return offset + k;
        return mode == rmt_position_mode::sequential ? m + k : k;
      case rmt_block::read:
      case rmt_block::write:
        if (mode == rmt_position_mode::zero) return 0;
        if (mode == rmt_position_mode::content_offset) return memory_position;
        if (mode == rmt_position_mode::offset) return offset + k;
        return block == rmt_block::read ? k : m + s + k;
    }
    return 0;
  }
};

LONGCTX_NAMESPACE_END
