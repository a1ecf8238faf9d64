// The default softmax logit scale, written once: 1 / sqrt(d), computed in
// double and rounded once to float, so every policy and entry point that
// defaults the scale uses the same bits (the float formula 1.0f / sqrtf(d)
// differs by one ulp for 242 head dims in [1, 1024]).
#pragma once

#include <cmath>

#include "../tensor/extents.hpp"

LONGCTX_NAMESPACE_BEGIN

/// The usual softmax logit scale 1 / sqrt(d), in double, rounded once: what
/// the softmax policies (bounded caches, Infini-attention) use when their
/// `scale` is unset. FLASH's default is 1 / C instead.
/// \param d the query / key head dim
/// \return 1 / sqrt(d) as the nearest float
inline float default_scale(index_t d) noexcept { return float(1.0 / std::sqrt(double(d))); }

LONGCTX_NAMESPACE_END
