// Mask descriptors against hand-written definitions, and the O(1) tile
// classification against brute force: "full" tiles must be fully visible,
// "empty" ones fully hidden, and keys_for_rows must cover every visible key.
#include <catch2/catch.hpp>

#include <functional>

#include <longctx/kernels/mask.hpp>

#include "../support/support.hpp"

using namespace longctx;

namespace {
template <class Mask>
void check_mask(const Mask& m, index_t n_q, index_t n_kv, const std::function<bool(index_t, index_t)>& def) {
  const auto b = m.bind(n_q, n_kv);
  for (index_t i = 0; i < n_q; ++i)
    for (index_t j = 0; j < n_kv; ++j) {
      INFO("i " << i << " j " << j << " n_q " << n_q << " n_kv " << n_kv);
      REQUIRE(b.visible(i, j) == def(i, j));
    }
  for (index_t i0 = 0; i0 < n_q; i0 += 3)
    for (index_t i1 = i0 + 1; i1 <= std::min(n_q, i0 + 7); i1 += 2) {
      const key_interval keys = b.keys_for_rows(i0, i1);
      for (index_t i = i0; i < i1; ++i)
        for (index_t j = 0; j < n_kv; ++j)
          if (def(i, j)) REQUIRE(((j >= keys.lo && j < keys.hi) || j < keys.prefix));
      for (index_t j0 = 0; j0 < n_kv; j0 += 2)
        for (index_t j1 = j0 + 1; j1 <= std::min(n_kv, j0 + 9); j1 += 3) {
          bool all = true, none = true;
          for (index_t i = i0; i < i1; ++i)
            for (index_t j = j0; j < j1; ++j) (def(i, j) ? none : all) = false;
          const tile_kind k = b.classify(i0, i1, j0, j1);
          INFO("tile rows [" << i0 << "," << i1 << ") keys [" << j0 << "," << j1 << ")");
          if (k == tile_kind::full) REQUIRE(all);
          if (k == tile_kind::empty) REQUIRE(none);
        }
    }
}
}  // namespace

TEST_CASE("masks match their definitions; classification is sound", "[kernels]") {
  for (auto [n_q, n_kv] : {std::pair<index_t, index_t>{1, 1}, {5, 5}, {7, 19}, {19, 7}, {13, 13}, {1, 23}, {24, 3}}) {
    const index_t br = n_kv - n_q;
    check_mask(no_mask{}, n_q, n_kv, [](index_t, index_t) { return true; });
    check_mask(causal{}, n_q, n_kv, [&](index_t i, index_t j) { return j <= i + br; });
    check_mask(causal{alignment::top_left}, n_q, n_kv, [&](index_t i, index_t j) { return j <= i; });
    for (index_t w : {1, 2, 5}) {
      check_mask(sliding_window{w}, n_q, n_kv, [&](index_t i, index_t j) { return j <= i + br && j > i + br - w; });
      check_mask(sliding_window{w, alignment::top_left}, n_q, n_kv,
                 [&](index_t i, index_t j) { return j <= i && j > i - w; });
      check_mask(sinks_window{2, w}, n_q, n_kv,
                 [&](index_t i, index_t j) { return j <= i + br && (j < 2 || j > i + br - w); });
    }
    for (index_t c : {1, 3, 4}) {
      check_mask(chunk_local{c}, n_q, n_kv, [&](index_t i, index_t j) {
        const index_t self = i + br;
        return j <= self && self >= 0 && j / c == self / c;
      });
    }
  }
}

TEST_CASE("mask parameters are validated", "[kernels]") {
  CHECK_THROWS_WITH(require_mask(sliding_window{0}, "attention"), Catch::Contains("window must be > 0"));
  CHECK_THROWS_WITH(require_mask(chunk_local{-2}, "attention"), Catch::Contains("chunk must be > 0"));
  CHECK_THROWS_WITH(require_mask(sinks_window{-1, 4}, "attention"), Catch::Contains("sinks must be >= 0"));
  CHECK_NOTHROW(require_mask(causal{}, "attention"));
}
