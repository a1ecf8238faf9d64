// Whole-model drivers (DESIGN.md section 5): not sequence policies (they run
// a model's layers, not one attention), but one protocol of their own. A
// driver D with state S takes rows x (n, width) to y (n, width), continuing
// the state's stream (any n per call), and reports the bytes its state
// holds. rmt (over any rmt_backbone) and gau satisfy it.
#pragma once

#include <concepts>
#include <cstddef>

#include "../tensor/view.hpp"

LONGCTX_NAMESPACE_BEGIN

/// A whole-model driver D with state S: d.forward(s, x, y) takes rows x (n,
/// width) to y (n, width), continuing the state's stream (any n per call),
/// and s.footprint() reports the bytes the state holds. rmt (over any
/// rmt_backbone) and gau satisfy it; they are not sequence policies (they
/// run a model's layers, not one attention).
template <class D, class S>
concept layer_driver = requires(const D& d, S& s, const S& cs, matrix_view<const float> x, matrix_view<float> y) {
  d.forward(s, x, y);
  { cs.footprint() } -> std::same_as<std::size_t>;
};

LONGCTX_NAMESPACE_END
