// The dense baseline as a sequence policy: an unbounded KV cache and exact
// causal attention over it (prefill through the tiled kernel, one token
// through split-KV decode). Its footprint grows with the stream: it is what
// the bounded policies are measured against. dense{} and tova{.budget = n}
// give the same bits for a stream of n tokens.
#pragma once

#include "bounded_cache.hpp"
#include "eviction/full.hpp"

LONGCTX_NAMESPACE_BEGIN

using dense = bounded_cache<full_rule>;

LONGCTX_NAMESPACE_END
