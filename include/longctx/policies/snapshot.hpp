// The one snapshot format of every state, written and read only here:
//   header  magic "LONGCTX\x1a" (8), u32 format version, u32 byte-order mark,
//           kind (16 bytes, NUL-padded policy name), u64 configuration
//           fingerprint, u64 payload bytes;
//   payload the state's fields, in the order its snapshot() writes them;
//   trailer u32 CRC-32C (Castagnoli) of header and payload.
// Snapshots are untrusted input: the reader checks every field against the
// byte count with overflow-safe arithmetic before anything is copied, and a
// state restores into a fresh object that replaces it only on success.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../error.hpp"

LONGCTX_NAMESPACE_BEGIN

/// A state's snapshot: header, payload and CRC-32C trailer (the format at
/// the top of policies/snapshot.hpp), in the byte order of the machine that
/// wrote it (a reader on the other byte order rejects it).
using snapshot_bytes = std::vector<std::byte>;

namespace detail {

// CRC-32C, reflected polynomial 0x82F63B78, table-driven.
inline constexpr std::array<std::uint32_t, 256> crc32c_table = [] {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}();

inline std::uint32_t crc32c(std::span<const std::byte> bytes, std::uint32_t crc = 0) noexcept {
  crc = ~crc;
  for (std::byte b : bytes) crc = crc32c_table[(crc ^ std::uint32_t(b)) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

inline constexpr std::array<char, 8> snapshot_magic{'L', 'O', 'N', 'G', 'C', 'T', 'X', '\x1a'};
inline constexpr std::uint32_t snapshot_format_version = 2;
inline constexpr std::uint32_t snapshot_byte_order = 0x01020304u;
inline constexpr std::size_t snapshot_kind_bytes = 16;
inline constexpr std::size_t snapshot_header_bytes = 8 + 4 + 4 + snapshot_kind_bytes + 8 + 8;
inline constexpr std::size_t snapshot_trailer_bytes = 4;

}  // namespace detail

/// FNV-1a (64-bit) over the fields of a configuration (dims and
/// parameters): a state restores only a snapshot whose fingerprint equals
/// its own, and forward() rejects a state whose fingerprint is not its
/// policy's. A hash, not a proof: it catches mistakes, not forgeries.
class config_fingerprint {
 public:
  template <class T>
    requires std::is_trivially_copyable_v<T>
  config_fingerprint& add(const T& x) noexcept {
    std::byte b[sizeof(T)];
    std::memcpy(b, &x, sizeof(T));
    for (std::byte c : b) h_ = (h_ ^ std::uint64_t(c)) * 0x100000001B3ull;
    return *this;
  }
  std::uint64_t value() const noexcept { return h_; }

 private:
  std::uint64_t h_ = 0xCBF29CE484222325ull;
};

/// Writes the one snapshot format: the header at construction, payload
/// fields with put() / put_array(), then std::move(w).finish() appends the
/// checksum. For states of new policies; the library's own use it.
class snapshot_writer {
 public:
  snapshot_writer(std::string_view kind, std::uint64_t fingerprint) {
    LONGCTX_ASSERT(kind.size() <= detail::snapshot_kind_bytes);
    out_.reserve(detail::snapshot_header_bytes + 256);
    put_raw(detail::snapshot_magic.data(), 8);
    put(detail::snapshot_format_version);
    put(detail::snapshot_byte_order);
    char k[detail::snapshot_kind_bytes] = {};
    std::memcpy(k, kind.data(), std::min(kind.size(), sizeof k));  // kinds are checked to fit where they are made
    put_raw(k, sizeof k);
    put(fingerprint);
    put(std::uint64_t(0));  // payload bytes, patched by finish()
  }

  template <class T>
    requires std::is_trivially_copyable_v<T>
  void put(const T& x) {
    put_raw(&x, sizeof(T));
  }
  // count elements from p (p may be null when count is 0).
  template <class T>
    requires std::is_trivially_copyable_v<T>
  void put_array(const T* p, std::size_t count) {
    if (count) put_raw(p, count * sizeof(T));
  }

  snapshot_bytes finish() && {
    const std::uint64_t payload = out_.size() - detail::snapshot_header_bytes;
    std::memcpy(out_.data() + detail::snapshot_header_bytes - 8, &payload, 8);
    put(detail::crc32c(out_));
    return std::move(out_);
  }

 private:
  void put_raw(const void* p, std::size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    out_.insert(out_.end(), b, b + n);
  }
  snapshot_bytes out_;
};

/// Reads untrusted snapshot bytes. Checks the envelope at construction
/// (magic, version, byte order, kind, fingerprint, declared payload size,
/// checksum); get() then never reads past the payload. Every failure throws
/// invalid_argument naming `where`, the argument "bytes" and the field.
class snapshot_reader {
 public:
  snapshot_reader(std::span<const std::byte> bytes, std::string_view kind, std::uint64_t fingerprint,
                  const char* where)
      : in_(bytes), where_(where) {
    constexpr std::size_t H = detail::snapshot_header_bytes, T = detail::snapshot_trailer_bytes;
    fail_unless(in_.size() >= H + T, "header", [&] {
      return detail::concat("truncated: ", in_.size(), " bytes, the header and checksum alone are ", H + T);
    });
    fail_unless(std::memcmp(in_.data(), detail::snapshot_magic.data(), 8) == 0, "magic",
                "not a longctx snapshot (bad magic)");
    at_ = 8;
    const auto version = raw<std::uint32_t>(), order = raw<std::uint32_t>();
    fail_unless(version == detail::snapshot_format_version, "version", [&] {
      return detail::concat("format version ", version, ", this library reads version ",
                            detail::snapshot_format_version);
    });
    fail_unless(order == detail::snapshot_byte_order, "byte order",
                "written on a machine of the other byte order");
    char k[detail::snapshot_kind_bytes + 1] = {};
    std::memcpy(k, in_.data() + at_, detail::snapshot_kind_bytes);
    at_ += detail::snapshot_kind_bytes;
    // The whole field: the name, then NUL padding (bytes after the first NUL
    // were not compared, so a snapshot differing there was accepted and did
    // not round-trip; fuzz finding layers-snapshot-kind-padding).
    char want[detail::snapshot_kind_bytes] = {};
    std::memcpy(want, kind.data(), std::min(kind.size(), sizeof want));
    fail_unless(std::memcmp(k, want, sizeof want) == 0, "kind", [&] {
      return detail::concat("a snapshot of '", std::string_view(k), "', this state is '", kind, "'");
    });
    const auto fp = raw<std::uint64_t>(), payload = raw<std::uint64_t>();
    fail_unless(fp == fingerprint, "configuration",
                "taken from a state of another configuration (dims or parameters differ)");
    fail_unless(payload == in_.size() - H - T, "payload size", [&] {
      return detail::concat("header declares ", payload, " payload bytes, the snapshot holds ", in_.size() - H - T);
    });
    std::uint32_t crc;
    std::memcpy(&crc, in_.data() + in_.size() - T, T);
    fail_unless(crc == detail::crc32c(in_.first(in_.size() - T)), "checksum",
                "CRC-32C mismatch: the snapshot is corrupt");
    end_ = in_.size() - T;
  }

  template <class T>
    requires std::is_trivially_copyable_v<T>
  T get(const char* field) {
    T x;
    get_array(&x, 1, field);
    return x;
  }
  template <class T>
    requires std::is_trivially_copyable_v<T>
  void get_array(T* p, std::size_t count, const char* field) {
    fail_unless(count <= remaining() / sizeof(T), field, [&] {
      return detail::concat("needs ", count, " x ", sizeof(T), " bytes, ", remaining(), " left");
    });
    if (count) std::memcpy(p, in_.data() + at_, count * sizeof(T));
    at_ += count * sizeof(T);
  }
  // Payload bytes not yet read: check a declared count against it before
  // allocating for that count.
  std::size_t remaining() const noexcept { return end_ - at_; }
  // Throws unless the payload was consumed exactly.
  void finish() const {
    fail_unless(at_ == end_, "payload", [&] { return detail::concat(end_ - at_, " unread trailing bytes"); });
  }
  // A semantic check of the payload (e.g. positions increasing).
  template <class Part>
  void check(bool ok, const char* field, Part&& what) const {
    fail_unless(ok, field, std::forward<Part>(what));
  }

 private:
  template <class T>
  T raw() noexcept {
    T x;
    std::memcpy(&x, in_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return x;
  }
  template <class Part>
  void fail_unless(bool ok, const char* field, Part&& what) const {
    require(ok, where_, "bytes", "snapshot field '", field, "': ", std::forward<Part>(what));
  }

  std::span<const std::byte> in_;
  const char* where_;
  std::size_t at_ = 0, end_ = 0;
};

LONGCTX_NAMESPACE_END
