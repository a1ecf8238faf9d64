// Snapshots edited after they were taken, their payload size and checksum
// made valid again: what only a state's own field checks can reject.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <utility>

#include <longctx/policies/snapshot.hpp>

namespace longctx::test {

inline snapshot_bytes resealed(snapshot_bytes s) {
  constexpr std::size_t H = detail::snapshot_header_bytes, T = detail::snapshot_trailer_bytes;
  const std::uint64_t payload = s.size() - H - T;
  std::memcpy(s.data() + H - 8, &payload, 8);
  const std::uint32_t crc = detail::crc32c(std::span(s.data(), s.size() - T));
  std::memcpy(s.data() + s.size() - T, &crc, T);
  return s;
}

// x written at payload_offset (bytes after the header), resealed.
template <class T>
snapshot_bytes poked(snapshot_bytes s, std::size_t payload_offset, T x) {
  std::memcpy(s.data() + detail::snapshot_header_bytes + payload_offset, &x, sizeof x);
  return resealed(std::move(s));
}

}  // namespace longctx::test
