// The random mask of the exact-attention sweeps (tests/kernels/attention.cpp
// and engines.cpp): one of every family, a quarter of them top-left aligned.
#pragma once

#include <variant>

#include <longctx/kernels/mask.hpp>

#include "support.hpp"

namespace longctx::test {

using any_mask = std::variant<no_mask, causal, sliding_window, sinks_window, chunk_local>;

inline any_mask random_mask(rng_t& g) {
  const alignment al = uniform_int(g, 0, 3) == 0 ? alignment::top_left : alignment::bottom_right;
  const index_t w = uniform_int(g, 1, 80);
  switch (uniform_int(g, 0, 5)) {
    case 0: return no_mask{};
    case 1:
    case 2: return causal{al};
    case 3: return sliding_window{w, al};
    case 4: return sinks_window{uniform_int(g, 0, 6), w, al};
    default: return chunk_local{uniform_int(g, 1, 70), al};
  }
}

}  // namespace longctx::test
