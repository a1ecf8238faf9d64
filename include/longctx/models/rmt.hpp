// Recurrent Memory Transformer driver (PAPERS.md section 3) around a user
// backbone: splits unbounded input (n, width) into segments, packs memory and
// segment rows, runs the backbone on them with the RMT mask and position ids,
// and hands the last layer's write rows (decoder) or memory rows (encoder) on
// as the next memory (m, width). Outputs are the segment rows only.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "../error.hpp"
#include "../kernels/rmt_mask.hpp"
#include "../policies/snapshot.hpp"
#include "layer_driver.hpp"
#include "../tensor/view.hpp"

LONGCTX_NAMESPACE_BEGIN

/// The user's model, as the rmt driver runs it: width(), make_cache(),
/// cache_type::clear() and forward(cache, x (n, width), pos (n), mask, y (n,
/// width)) for both RMT masks. forward appends rows x to the cache, runs
/// *all* layers with queries = the new rows and keys = every cached row
/// (mask bound with (n, cached rows), as in attention()), and writes the
/// last layer's output for the new rows. Feeding rows in pieces must give
/// the outputs of one call (to rounding). rmt_reference_backbone is one.
template <class B>
concept rmt_backbone = requires(B& b, const B& cb, typename B::cache_type& c, matrix_view<const float> x,
                                std::span<const index_t> pos, const rmt_decoder_mask& dm,
                                const rmt_encoder_mask& em, matrix_view<float> y) {
  { cb.width() } -> std::convertible_to<index_t>;
  { cb.make_cache() } -> std::same_as<typename B::cache_type>;
  c.clear();
  b.forward(c, x, pos, dm, y);
  b.forward(c, x, pos, em, y);
};

/// A backbone whose cache can carry a Transformer-XL cache across segments
/// (rmt::xl > 0): cached_rows(), row_bytes() (one row over all layers),
/// retain(rows) (keep the listed cached rows, in order, at the front; drop
/// the rest), save(snapshot_writer&) and load(snapshot_reader&) (all or
/// nothing, untrusted bytes). rmt_reference_backbone is one.
template <class B>
concept rmt_xl_backbone =
    rmt_backbone<B> && requires(typename B::cache_type& c, const typename B::cache_type& cc,
                                std::span<const index_t> rows, snapshot_writer& w, snapshot_reader& r) {
      { cc.cached_rows() } -> std::convertible_to<index_t>;
      { cc.row_bytes() } -> std::convertible_to<std::size_t>;
      c.retain(rows);
      cc.save(w);
      c.load(r);
    };

/// decoder: [read; segment; write], causal family, token-by-token streaming.
/// encoder: [memory; segment], bidirectional: a segment's outputs need all of
/// it, so each forward() call is cut into whole segments (the last partial).
LONGCTX_UNTAGGED_BEGIN
enum class rmt_layout : std::uint32_t { decoder = 0, encoder = 1 };
LONGCTX_UNTAGGED_END

template <rmt_backbone B>
class rmt_state;

/// The Recurrent Memory Transformer driver around a user backbone (a
/// layer_driver, not a sequence policy): splits unbounded input (n, width)
/// into segments of content() tokens, packs each as [m read memory;
/// segment; m write memory] (decoder) or [m memory; segment] (encoder), runs
/// the backbone on it with the RMT mask (never materialised) and per-row
/// position ids, and hands the last layer's write rows (decoder) or memory
/// rows (encoder) on as the next memory (m, width). Outputs are the segment
/// rows only.
///
/// Cost: one backbone pass per segment over L = segment_budget packed rows,
/// so linear in the stream length; the recurrent state is m x width floats.
/// Decoder streaming (any split, token by token) gives the outputs of whole
/// segments to rounding; a segment's write rows run when its last token
/// arrives or at flush(). With xl > 0 (decoder, an rmt_xl_backbone) every
/// segment also attends a Transformer-XL cache: the last xl content rows
/// before it, as each layer saw them when they were computed (their keys
/// and values in the backbone's cache, kept across segments), in front of
/// the packed rows, visible to the segment and, as xl_visibility and
/// read_sees_xl say, to the memory rows; cost per segment grows by xl keys
/// per query, and the state by xl row_bytes(). Not implemented: the port's
/// null key and learned write constant.
///
/// Contract: make_state() validates the parameters (segment_budget in [1,
/// 2^40], memory in [0, L], at least one content token, offset in [0, 2^52],
/// xl in [0, 2^40] and only for the decoder with an rmt_xl_backbone)
/// and the initial memory's shape; forward() and flush() check that the
/// state was made by an rmt with the same parameters. Errors throw
/// invalid_argument. Thread safety: the policy is a value; a state and its
/// backbone cache are used by one thread at a time (the backbone itself may
/// be shared if it allows it, as rmt_reference_backbone does).
struct rmt {
  index_t memory = 10;           ///< m memory tokens
  index_t segment_budget = 512;  ///< L packed rows per segment, memory rows included
  rmt_layout layout = rmt_layout::decoder;  ///< decoder (causal, streaming) or encoder
  /// block_visible is the default: it is the authors' original code, and with
  /// no XL cache it equals the port's isolated_read (memory blocks see each other).
  rmt_convention convention = rmt_convention::block_visible;
  rmt_positions positions = {};  ///< the position ids of memory and segment rows
  /// Transformer-XL cache: the last `xl` content rows before each segment
  /// (from as many earlier segments as it takes), per layer; decoder only.
  /// 0 (default): none, the driver as without the option, bit for bit.
  index_t xl = 0;
  rmt_xl xl_visibility = rmt_xl::hidden_from_memory;  ///< whether memory rows see the XL cache
  bool read_sees_xl = false;  ///< isolated_read: the read block sees it too (rmt_decoder_mask)

  /// The state for backbone type B.
  template <rmt_backbone B>
  using state_type = rmt_state<B>;

  /// \return content tokens per segment: L - 2m (decoder) or L - m (encoder)
  constexpr index_t content() const noexcept {
    return segment_budget - memory * (layout == rmt_layout::decoder ? 2 : 1);
  }

  // Bounds that keep every row count and position id far from overflow.
  static constexpr index_t max_segment_budget = index_t(1) << 40, max_offset = index_t(1) << 52;

  void validate(const char* where) const {
    require(segment_budget >= 1 && segment_budget <= max_segment_budget, where, "segment_budget",
            "must be in [1, 2^40], got ", segment_budget);
    require(memory >= 0 && memory <= segment_budget, where, "memory", "must be in [0, segment_budget = ",
            segment_budget, "], got ", memory);
    require(content() >= 1, where, "memory", memory, " memory tokens leave no content in a segment budget of ",
            segment_budget, " rows (", layout == rmt_layout::decoder ? "decoder: 2m" : "encoder: m",
            " + content <= L)");
    require(positions.mode == rmt_position_mode::sequential || positions.mode == rmt_position_mode::zero ||
                positions.mode == rmt_position_mode::offset || positions.mode == rmt_position_mode::content_offset,
            where, "positions", "mode ", std::uint32_t(positions.mode), " is not an rmt_position_mode");
    if (positions.mode == rmt_position_mode::offset || positions.mode == rmt_position_mode::content_offset)
      require(positions.offset >= 0 && positions.offset <= max_offset, where, "positions",
              "offset must be in [0, 2^52], got ", positions.offset);
    if (positions.mode == rmt_position_mode::content_offset)
      require(positions.memory_position >= 0 && positions.memory_position <= max_offset, where, "positions",
              "memory_position must be in [0, 2^52], got ", positions.memory_position);
    require(xl >= 0 && xl <= max_segment_budget, where, "xl", "must be in [0, 2^40], got ", xl);
    require(xl == 0 || layout == rmt_layout::decoder, where, "xl",
            "a Transformer-XL cache needs the decoder layout (the encoder's segments are bidirectional)");
    require(xl_visibility == rmt_xl::hidden_from_memory || xl_visibility == rmt_xl::visible_to_memory, where,
            "xl_visibility", "value ", std::uint32_t(xl_visibility), " is not an rmt_xl");
  }

  /// A state over `backbone` (kept by reference: it must outlive the state)
  /// starting from the learned initial memory.
  /// \param backbone the model; its cache is made here
  /// \param initial_memory (m, width), copied
  /// \return the state
  /// \throws invalid_argument on a bad parameter or memory shape
  template <rmt_backbone B>
  rmt_state<B> make_state(B& backbone, matrix_view<const float> initial_memory) const {
    return rmt_state<B>(*this, backbone, initial_memory);
  }

  /// in (n, width) -> out (n, width). Decoder: any split of the stream across
  /// calls (token by token included) gives the same outputs (to rounding); a
  /// segment's write rows are computed when its last token arrives (or at
  /// flush()). Encoder: each call is cut into whole segments, the last one
  /// possibly partial.
  /// \param st a state from make_state() of an rmt with these parameters
  /// \param in (n, width) tokens, contiguous rows
  /// \param out (n, width), not overlapping `in`
  /// \throws invalid_argument on a shape, stride, data or aliasing error, or
  ///   a state of another rmt
  template <rmt_backbone B>
  void forward(rmt_state<B>& st, matrix_view<const float> in, matrix_view<float> out) const {
    st.check_policy(*this, "rmt::forward");
    st.forward(in, out);
  }
  /// Ends a partial decoder segment: computes its write rows, updates memory
  /// (nothing to do at a segment boundary or for the encoder).
  /// \param st a state from make_state() of an rmt with these parameters
  /// \throws invalid_argument for a state of another rmt
  template <rmt_backbone B>
  void flush(rmt_state<B>& st) const {
    st.check_policy(*this, "rmt::flush");
    st.flush();
  }
};

inline bool operator==(const rmt_positions& a, const rmt_positions& b) noexcept {
  return a.mode == b.mode && a.offset == b.offset && a.memory_position == b.memory_position;
}

/// The state of an rmt stream over backbone B: the (m, width) memory, the
/// backbone's per-segment cache, the unfinished decoder segment's progress
/// and the driver's packing buffers. Keeps the backbone by pointer (it must
/// outlive the state) and a copy of the policy's parameters. Copyable and
/// movable (copies share the backbone). Used by one thread at a time.
template <rmt_backbone B>
class rmt_state {
 public:
  rmt_state(const rmt& p, B& backbone, matrix_view<const float> initial_memory)
      : p_(p), bb_(&backbone), width_(backbone.width()), cache_(backbone.make_cache()) {
    p_.validate("rmt::make_state");
    if constexpr (!rmt_xl_backbone<B>)
      require(p_.xl == 0, "rmt::make_state", "xl",
              "a Transformer-XL cache needs a backbone whose cache can keep rows across segments "
              "(rmt_xl_backbone: cached_rows, row_bytes, retain, save, load)");
    require(initial_memory.extent(0) == p_.memory && initial_memory.extent(1) == width_, "rmt::make_state",
            "initial_memory", "must be (m, width) = (", p_.memory, ", ", width_, "), got ",
            shape_of(initial_memory));
    require_data(initial_memory, "rmt::make_state", "initial_memory");
    memory_.resize(std::size_t(p_.memory * width_));
    for (index_t i = 0; i < p_.memory; ++i)
      for (index_t c = 0; c < width_; ++c) memory_[std::size_t(i * width_ + c)] = initial_memory(i, c);
  }

  /// \return the parameters the state was made with
  const rmt& policy() const noexcept { return p_; }
  /// The current memory (m, width): fixed size for the whole stream.
  /// \return a read-only view, valid until the next forward(), flush() or restore()
  matrix_view<const float> memory() const noexcept { return make_matrix(memory_.data(), p_.memory, width_); }
  /// \return m width sizeof(float): the recurrent state's bytes
  std::size_t memory_bytes() const noexcept { return memory_.size() * sizeof(float); }
  /// \return XL cache rows held (at most xl; 0 before the first segment)
  index_t xl_rows() const noexcept { return xl_rows_; }
  /// \return the XL cache's bytes: xl_rows() of the backbone's row_bytes()
  std::size_t xl_bytes() const noexcept {
    if constexpr (rmt_xl_backbone<B>) return std::size_t(xl_rows_) * cache_.row_bytes();
    return 0;
  }
  /// Bytes of the recurrent state (the memory and the XL cache) plus the
  /// driver's packing buffers; the rest of the backbone's per-segment cache
  /// is the backbone's.
  /// \return the bytes
  std::size_t footprint() const noexcept {
    return memory_bytes() + xl_bytes() + (packed_.size() + packed_out_.size()) * sizeof(float) +
           pos_.size() * sizeof(index_t) + keep_.size() * sizeof(index_t);
  }
  /// \return the backbone's width
  index_t width() const noexcept { return width_; }
  /// \return segments completed (each handed its memory on)
  std::uint64_t segments() const noexcept { return segments_; }
  /// \return tokens of the unfinished decoder segment
  index_t pending() const noexcept { return filled_; }  // tokens of the unfinished decoder segment

  // ---- Snapshot / restore of the recurrent state (the memory). --------------
  /// Taken at a segment boundary (pending() == 0; flush() first otherwise):
  /// there the memory and the XL cache are the whole state. One longctx
  /// snapshot (kind "rmt", the policy and width as fingerprint, CRC-32C):
  /// segments seen, the (m, width) memory, then (xl > 0) the XL cache as
  /// the backbone's cache saves it.
  /// \return the bytes
  /// \throws invalid_argument when tokens of a segment are pending
  snapshot_bytes snapshot() const {
    require(filled_ == 0, "rmt_state::snapshot", "state", filled_,
            " tokens of an unfinished segment are pending; call rmt::flush first");
    snapshot_writer w("rmt", fingerprint());
    w.put(segments_);
    w.put_array(memory_.data(), memory_.size());
    if constexpr (rmt_xl_backbone<B>)
      if (p_.xl > 0) cache_.save(w);  // at a boundary the cache holds exactly the XL rows
    return std::move(w).finish();
  }

  /// Continues from a snapshot() of a state with the same parameters and
  /// width: memory, XL cache and segment count restored, no segment pending,
  /// the rest of the backbone cache cleared. Leaves the state unchanged on
  /// any error.
  /// \param in the bytes (untrusted: envelope, size and finite memory checked)
  /// \throws invalid_argument naming the argument "bytes" and the field
  void restore(std::span<const std::byte> in) {
    snapshot_reader r(in, "rmt", fingerprint(), "rmt_state::restore");
    const auto segs = r.get<std::uint64_t>("segments");
    std::vector<float> mem(memory_.size());
    r.get_array(mem.data(), mem.size(), "memory");
    r.check(std::all_of(mem.begin(), mem.end(), [](float x) { return std::isfinite(x); }), "memory",
            "a non-finite memory value");
    typename B::cache_type cache = bb_->make_cache();
    index_t xl_rows = 0;
    if constexpr (rmt_xl_backbone<B>)
      if (p_.xl > 0) {
        cache.load(r);
        xl_rows = cache.cached_rows();
        r.check(xl_rows <= p_.xl, "xl rows", [&] { return detail::concat(xl_rows, " rows, xl is ", p_.xl); });
      }
    r.finish();
    memory_.swap(mem);
    segments_ = segs;
    filled_ = 0;
    cache_ = std::move(cache);
    xl_rows_ = xl_rows;
  }

 private:
  friend struct rmt;

  // Everything a memory's meaning depends on: the policy and the width.
  std::uint64_t fingerprint() const noexcept { return fingerprint_of(p_); }
  // Every parameter of p, with this state's width: one list of the fields,
  // for snapshots and for the policy a call comes with.
  std::uint64_t fingerprint_of(const rmt& p) const noexcept {
    config_fingerprint f;
    f.add(std::int64_t(p.memory)).add(std::int64_t(width_)).add(std::int64_t(p.segment_budget));
    f.add(std::int64_t(p.positions.offset)).add(std::uint32_t(p.layout)).add(std::uint32_t(p.convention));
    f.add(std::uint32_t(p.positions.mode)).add(std::int64_t(p.positions.memory_position));
    f.add(std::int64_t(p.xl)).add(std::uint32_t(p.xl_visibility)).add(std::uint8_t(p.read_sees_xl));
    return f.value();
  }

  void check_policy(const rmt& p, const char* where) const {
    require(fingerprint_of(p) == fingerprint(), where, "state", "was made by a different rmt policy (m ", p_.memory,
            ", L ", p_.segment_budget, ") than this one (m ", p.memory, ", L ", p.segment_budget, ")");
  }

  rmt_decoder_mask decoder_mask(index_t segment_rows) const noexcept {
    return {.memory = p_.memory, .segment = segment_rows, .xl = xl_rows_, .convention = p_.convention,
            .xl_visibility = p_.xl_visibility, .read_sees_xl = p_.read_sees_xl};
  }
  // A segment starts from an empty cache, or (xl > 0) from the XL rows the
  // last one left in it.
  void begin_cache() noexcept {
    if (p_.xl == 0) cache_.clear();
  }
  // A decoder segment of s content rows is done: the cache is [X; m read;
  // s segment; w write]; keep the last xl of [X; segment] as the next XL.
  void end_segment_cache(index_t s) {
    if constexpr (rmt_xl_backbone<B>) {
      if (p_.xl == 0) return;
      const index_t m = p_.memory, from_seg = std::min(p_.xl, s), from_old = std::min(p_.xl - from_seg, xl_rows_);
      keep_.clear();
      for (index_t r = xl_rows_ - from_old; r < xl_rows_; ++r) keep_.push_back(r);
      for (index_t r = xl_rows_ + m + s - from_seg; r < xl_rows_ + m + s; ++r) keep_.push_back(r);
      cache_.retain(keep_);
      xl_rows_ = from_old + from_seg;
    } else {
      static_cast<void>(s);
    }
  }
  void positions(rmt_block block, index_t first, index_t count, index_t s) {
    pos_.resize(std::size_t(count));
    for (index_t k = 0; k < count; ++k) pos_[std::size_t(k)] = p_.positions(block, first + k, p_.memory, s);
  }
  matrix_view<float> scratch(std::vector<float>& buf, index_t rows) {
    if (buf.size() < std::size_t(rows * width_)) buf.resize(std::size_t(rows * width_));
    return make_matrix(buf.data(), rows, width_);
  }

  void forward(matrix_view<const float> in, matrix_view<float> out) {
    const char* where = "rmt::forward";
    require(in.extent(1) == width_ && out.extent(1) == width_ && out.extent(0) == in.extent(0), where, "in/out",
            "must both be (n, width ", width_, "), got in ", shape_of(in), ", out ", shape_of(out));
    require_views(where, "in", in, "out", out);
    // The backbone reads in's rows where it writes out's (decoder) and later
    // segments read in after earlier ones wrote out: no overlap at all (fuzz
    // finding layers-rmt-alias: a shifted copy gave silently wrong results).
    require_disjoint(where, "out", out, "in", in);
    const index_t n = in.extent(0), c = p_.content(), m = p_.memory;
    index_t i = 0;
    if (p_.layout == rmt_layout::encoder) {
      for (; i < n; i += c) {
        const index_t s = std::min(c, n - i);
        auto packed = scratch(packed_, m + s), y = scratch(packed_out_, m + s);
        copy_rows(memory(), packed.rows(0, m));
        copy_rows(in.rows(i, s), packed.rows(m, s));
        positions(rmt_block::read, 0, m, s);
        pos_.resize(std::size_t(m + s));
        for (index_t k = 0; k < s; ++k) pos_[std::size_t(m + k)] = p_.positions(rmt_block::segment, k, m, s);
        cache_.clear();
        bb_->forward(cache_, packed, pos_, rmt_encoder_mask{m}, y);
        copy_rows(y.rows(m, s), out.rows(i, s));
        copy_rows(y.rows(0, m), make_matrix(memory_.data(), m, width_));
        ++segments_;
      }
      return;
    }
    while (i < n) {
      if (filled_ == 0 && n - i >= c) {  // a whole segment at once: one packed call
        const index_t rows = 2 * m + c;
        auto packed = scratch(packed_, rows), y = scratch(packed_out_, rows);
        copy_rows(memory(), packed.rows(0, m));
        copy_rows(in.rows(i, c), packed.rows(m, c));
        copy_rows(memory(), packed.rows(m + c, m));
        pos_.resize(std::size_t(rows));
        for (index_t k = 0; k < m; ++k) {
          pos_[std::size_t(k)] = p_.positions(rmt_block::read, k, m, c);
          pos_[std::size_t(m + c + k)] = p_.positions(rmt_block::write, k, m, c);
        }
        for (index_t k = 0; k < c; ++k) pos_[std::size_t(m + k)] = p_.positions(rmt_block::segment, k, m, c);
        begin_cache();
        bb_->forward(cache_, packed, pos_, decoder_mask(-1), y);
        copy_rows(y.rows(m, c), out.rows(i, c));
        copy_rows(y.rows(m + c, m), make_matrix(memory_.data(), m, width_));
        end_segment_cache(c);
        ++segments_;
        i += c;
        continue;
      }
      if (filled_ == 0) begin_segment();
      const index_t take = std::min(c - filled_, n - i);
      positions(rmt_block::segment, filled_, take, 0);
      bb_->forward(cache_, in.rows(i, take), pos_, decoder_mask(filled_ + take), out.rows(i, take));
      filled_ += take;
      i += take;
      if (filled_ == c) finish_segment();
    }
  }

  void flush() {
    if (p_.layout == rmt_layout::decoder && filled_ > 0) finish_segment();
  }

  // Read rows go through every layer first: later rows need their keys.
  void begin_segment() {
    begin_cache();
    const index_t m = p_.memory;
    if (m == 0) return;
    positions(rmt_block::read, 0, m, 0);
    bb_->forward(cache_, memory(), pos_, decoder_mask(0), scratch(packed_out_, m));
  }
  // Write rows see the whole segment; their last-layer output is the next memory.
  void finish_segment() {
    const index_t m = p_.memory;
    if (m > 0) {
      positions(rmt_block::write, 0, m, filled_);
      auto y = scratch(packed_out_, m);
      bb_->forward(cache_, memory(), pos_, decoder_mask(filled_), y);
      copy_rows(y, make_matrix(memory_.data(), m, width_));
    }
    end_segment_cache(filled_);
    filled_ = 0;
    ++segments_;
  }

  static void copy_rows(matrix_view<const float> from, matrix_view<float> to) noexcept {
    for (index_t i = 0; i < from.extent(0); ++i)
      std::memcpy(&to(i, 0), &from(i, 0), sizeof(float) * std::size_t(from.extent(1)));
  }

  rmt p_;
  B* bb_;
  index_t width_;
  typename B::cache_type cache_;
  std::vector<float> memory_;       // (m, width)
  std::vector<float> packed_, packed_out_;
  index_t xl_rows_ = 0;        // XL cache rows at the front of cache_ (xl > 0)
  std::vector<index_t> keep_;  // end_segment_cache's row list
  std::vector<index_t> pos_;
  index_t filled_ = 0;
  std::uint64_t segments_ = 0;
};

LONGCTX_NAMESPACE_END
