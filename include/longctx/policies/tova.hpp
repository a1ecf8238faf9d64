// TOVA and the bounded-cache baselines as sequence policies: bounded_cache
// (bounded_cache.hpp) instantiated with each eviction rule of
// policies/eviction/. tova{.budget = 4096} is the paper's policy ("
// Transformers are Multi-State RNNs", arXiv 2401.06104); the others are the
// baselines it is compared with, on the same cache and the same budget;
// snapkv (eviction/snapkv.hpp) selects at prefill from an observation window.
#pragma once

#include "bounded_cache.hpp"
#include "dense.hpp"
#include "eviction/h2o.hpp"
#include "eviction/sinks.hpp"
#include "eviction/snapkv.hpp"
#include "eviction/tova.hpp"
#include "eviction/window.hpp"

LONGCTX_NAMESPACE_BEGIN

/// TOVA, float K/V: tova{.budget = 4096}. The budget must be set
/// (tova{} throws at make_state). Other storage:
/// bounded_cache<tova_rule, bf16> (f16, q8).
using tova = bounded_cache<tova_rule>;
/// H2O: h2o_cache{.budget = 4096, .rule = {.recent = 2048}}.
using h2o_cache = bounded_cache<h2o_rule>;
/// The most recent `budget` tokens: window_cache{.budget = 4096}.
using window_cache = bounded_cache<window_rule>;
/// StreamingLLM: sinks_cache{.budget = 4096, .rule = {.sinks = 4}}.
using sinks_cache = bounded_cache<sinks_rule>;

LONGCTX_ASSERT_SEQUENCE_POLICY(tova);
LONGCTX_ASSERT_SEQUENCE_POLICY(h2o_cache);
LONGCTX_ASSERT_SEQUENCE_POLICY(window_cache);
LONGCTX_ASSERT_SEQUENCE_POLICY(sinks_cache);
LONGCTX_ASSERT_SEQUENCE_POLICY(dense);

LONGCTX_NAMESPACE_END
