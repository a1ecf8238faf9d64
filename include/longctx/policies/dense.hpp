// The dense baseline as a sequence policy: an unbounded KV cache and exact
// causal attention over it (prefill through the tiled kernel, one token
// through split-KV decode). Its footprint grows with the stream: it is what
// the bounded policies are measured against. dense{} and tova{.budget = n}
// give the same bits for a stream of n tokens.
#pragma once

#include "bounded_cache.hpp"
#include "eviction/full.hpp"

LONGCTX_NAMESPACE_BEGIN

/// The dense baseline: dense{} (no budget), float K/V; other storage:
/// bounded_cache<full_rule, bf16> (f16, q8). Its footprint grows with the
/// stream (capacity doubling); a one-token step is O(b h n (d + d_v)) over n
/// cached tokens.
using dense = bounded_cache<full_rule>;

LONGCTX_NAMESPACE_END
