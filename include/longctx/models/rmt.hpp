// Recurrent Memory Transformer driver (PAPERS.md section 3) around a user
// backbone: splits unbounded input (n, width) into segments, packs memory and
// segment rows, runs the backbone on them with the RMT mask and position ids,
// and hands the last layer's write rows (decoder) or memory rows (encoder) on
// as the next memory (m, width). Outputs are the segment rows only.
#pragma once

#include <array>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "../error.hpp"
#include "../kernels/rmt_mask.hpp"
#include "../tensor/view.hpp"

LONGCTX_NAMESPACE_BEGIN

// The user's model. forward(cache, x (n, width), pos (n), mask, y (n, width))
// appends rows x to the cache, runs *all* layers with queries = the new rows
// and keys = every cached row (mask bound with (n, cached rows), as in
// attention()), and writes the last layer's output for the new rows. Feeding
// rows in pieces must give the outputs of one call (to rounding).
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

// decoder: [read; segment; write], causal family, token-by-token streaming.
// encoder: [memory; segment], bidirectional: a segment's outputs need all of
// it, so each forward() call is cut into whole segments (the last partial).
LONGCTX_UNTAGGED_BEGIN
enum class rmt_layout : std::uint32_t { decoder = 0, encoder = 1 };
LONGCTX_UNTAGGED_END

template <rmt_backbone B>
class rmt_state;

struct rmt {
  index_t memory = 10;           // m memory tokens
  index_t segment_budget = 512;  // L packed rows per segment, memory rows included
  rmt_layout layout = rmt_layout::decoder;
  // block_visible is the default: it is the authors' original code, and with
  // no XL cache it equals the port's isolated_read (memory blocks see each other).
  rmt_convention convention = rmt_convention::block_visible;
  rmt_positions positions = {};

  template <rmt_backbone B>
  using state_type = rmt_state<B>;

  // Content tokens per segment: L - 2m (decoder) or L - m (encoder).
  constexpr index_t content() const noexcept {
    return segment_budget - memory * (layout == rmt_layout::decoder ? 2 : 1);
  }

  void validate(const char* where) const {
    require(memory >= 0, where, "memory", "must be >= 0, got ", memory);
    require(content() >= 1, where, "memory", memory, " memory tokens leave no content in a segment budget of ",
            segment_budget, " rows (", layout == rmt_layout::decoder ? "decoder: 2m" : "encoder: m",
            " + content <= L)");
    if (positions.mode == rmt_position_mode::offset)
      require(positions.offset >= 0, where, "positions", "offset must be >= 0, got ", positions.offset);
  }

  // initial_memory (m, width): the learned initial memory.
  template <rmt_backbone B>
  rmt_state<B> make_state(B& backbone, matrix_view<const float> initial_memory) const {
    return rmt_state<B>(*this, backbone, initial_memory);
  }

  // in (n, width) -> out (n, width). Decoder: any split of the stream across
  // calls (token by token included) gives the same outputs; a segment's write
  // rows are computed when its last token arrives (or at flush()).
  template <rmt_backbone B>
  void forward(rmt_state<B>& st, matrix_view<const float> in, matrix_view<float> out) const {
    st.check_policy(*this, "rmt::forward");
    st.forward(in, out);
  }
  // Ends a partial decoder segment: computes its write rows, updates memory.
  template <rmt_backbone B>
  void flush(rmt_state<B>& st) const {
    st.check_policy(*this, "rmt::flush");
    st.flush();
  }
};

inline bool operator==(const rmt_positions& a, const rmt_positions& b) noexcept {
  return a.mode == b.mode && a.offset == b.offset;
}

template <rmt_backbone B>
class rmt_state {
 public:
  rmt_state(const rmt& p, B& backbone, matrix_view<const float> initial_memory)
      : p_(p), bb_(&backbone), width_(backbone.width()), cache_(backbone.make_cache()) {
    p_.validate("rmt::make_state");
    require(initial_memory.extent(0) == p_.memory && initial_memory.extent(1) == width_, "rmt::make_state",
            "initial_memory", "must be (m, width) = (", p_.memory, ", ", width_, "), got ",
            shape_of(initial_memory));
    require_data(initial_memory, "rmt::make_state", "initial_memory");
    memory_.resize(std::size_t(p_.memory * width_));
    for (index_t i = 0; i < p_.memory; ++i)
      for (index_t c = 0; c < width_; ++c) memory_[std::size_t(i * width_ + c)] = initial_memory(i, c);
  }

  const rmt& policy() const noexcept { return p_; }
  // The current memory (m, width): fixed size for the whole stream.
  matrix_view<const float> memory() const noexcept { return make_matrix(memory_.data(), p_.memory, width_); }
  std::size_t memory_bytes() const noexcept { return memory_.size() * sizeof(float); }
  index_t width() const noexcept { return width_; }
  std::uint64_t segments() const noexcept { return segments_; }
  index_t pending() const noexcept { return filled_; }  // tokens of the unfinished decoder segment

  // ---- Snapshot / restore of the recurrent state (the memory). --------------
  // Taken at a segment boundary (pending() == 0; flush() first otherwise):
  // there the memory is the whole state. Bit-exact; restore() rejects a wrong
  // magic/version, a different policy or width, and truncated or extra bytes.
  static constexpr std::array<char, 8> snapshot_magic{'L', 'C', 'X', 'R', 'M', 'T', '\0', '\0'};
  static constexpr std::uint32_t snapshot_version = 1;

  std::vector<std::byte> snapshot() const {
    require(filled_ == 0, "rmt_state::snapshot", "state", filled_,
            " tokens of an unfinished segment are pending; call rmt::flush first");
    std::vector<std::byte> out;
    put(out, snapshot_magic);
    put(out, snapshot_version);
    put(out, header());
    put(out, segments_);
    const auto* bytes = reinterpret_cast<const std::byte*>(memory_.data());
    out.insert(out.end(), bytes, bytes + memory_bytes());
    return out;
  }

  void restore(std::span<const std::byte> in) {
    const char* where = "rmt_state::restore";
    const std::size_t need = sizeof(snapshot_magic) + sizeof(std::uint32_t) + sizeof(header_t) +
                             sizeof(std::uint64_t) + memory_bytes();
    require(in.size() >= sizeof(snapshot_magic) + sizeof(std::uint32_t), where, "snapshot", "truncated: ",
            in.size(), " bytes");
    std::size_t at = 0;
    const auto magic = get<std::array<char, 8>>(in, at);
    require(magic == snapshot_magic, where, "snapshot", "not an RMT snapshot (bad magic)");
    const auto version = get<std::uint32_t>(in, at);
    require(version == snapshot_version, where, "snapshot", "version ", version, ", this library reads ",
            snapshot_version);
    require(in.size() == need, where, "snapshot", in.size(), " bytes, expected ", need, " for m ", p_.memory,
            " and width ", width_, in.size() < need ? " (truncated)" : " (trailing bytes)");
    const auto h = get<header_t>(in, at);
    const header_t mine = header();
    require(h.memory == mine.memory && h.width == mine.width, where, "snapshot", "memory (", h.memory, ", ",
            h.width, ") does not match this state's (", mine.memory, ", ", mine.width, ")");
    require(h.segment_budget == mine.segment_budget && h.layout == mine.layout &&
                h.convention == mine.convention && h.position_mode == mine.position_mode &&
                h.position_offset == mine.position_offset,
            where, "snapshot", "taken under a different rmt policy (segment budget ", h.segment_budget,
            ", layout ", h.layout, ", convention ", h.convention, ", positions ", h.position_mode, ")");
    const auto segs = get<std::uint64_t>(in, at);
    std::memcpy(memory_.data(), in.data() + at, memory_bytes());
    segments_ = segs;
    filled_ = 0;
    cache_.clear();
  }

 private:
  friend struct rmt;

  struct header_t {
    std::int64_t memory, width, segment_budget, position_offset;
    std::uint32_t layout, convention, position_mode, reserved;
  };
  header_t header() const noexcept {
    return {p_.memory, width_, p_.segment_budget, p_.positions.offset, std::uint32_t(p_.layout),
            std::uint32_t(p_.convention), std::uint32_t(p_.positions.mode), 0};
  }
  template <class T>
  static void put(std::vector<std::byte>& out, const T& v) {
    const auto* b = reinterpret_cast<const std::byte*>(&v);
    out.insert(out.end(), b, b + sizeof(T));
  }
  template <class T>
  static T get(std::span<const std::byte> in, std::size_t& at) {
    T v;
    std::memcpy(&v, in.data() + at, sizeof(T));
    at += sizeof(T);
    return v;
  }

  void check_policy(const rmt& p, const char* where) const {
    require(p.memory == p_.memory && p.segment_budget == p_.segment_budget && p.layout == p_.layout &&
                p.convention == p_.convention && p.positions == p_.positions,
            where, "state", "was made by a different rmt policy (m ", p_.memory, ", L ", p_.segment_budget,
            ") than this one (m ", p.memory, ", L ", p.segment_budget, ")");
  }

  rmt_decoder_mask decoder_mask(index_t segment_rows) const noexcept {
    return {.memory = p_.memory, .segment = segment_rows, .xl = 0, .convention = p_.convention};
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
        cache_.clear();
        bb_->forward(cache_, packed, pos_, decoder_mask(-1), y);
        copy_rows(y.rows(m, c), out.rows(i, c));
        copy_rows(y.rows(m + c, m), make_matrix(memory_.data(), m, width_));
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
    cache_.clear();
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
  std::vector<index_t> pos_;
  index_t filled_ = 0;
  std::uint64_t segments_ = 0;
};

LONGCTX_NAMESPACE_END
