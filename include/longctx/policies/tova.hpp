// TOVA and the bounded-cache baselines as sequence policies: bounded_cache
// (bounded_cache.hpp) instantiated with each eviction rule of
// policies/eviction/. tova{.budget = 4096} is the paper's policy ("
// Transformers are Multi-State RNNs", arXiv 2401.06104); the others are the
// baselines it is compared with, on the same cache and the same budget.
#pragma once

#include "bounded_cache.hpp"
#include "dense.hpp"
#include "eviction/h2o.hpp"
#include "eviction/sinks.hpp"
#include "eviction/tova.hpp"
#include "eviction/window.hpp"

LONGCTX_NAMESPACE_BEGIN

using tova = bounded_cache<tova_rule>;
using h2o_cache = bounded_cache<h2o_rule>;
using window_cache = bounded_cache<window_rule>;
using sinks_cache = bounded_cache<sinks_rule>;

LONGCTX_ASSERT_SEQUENCE_POLICY(tova);
LONGCTX_ASSERT_SEQUENCE_POLICY(h2o_cache);
LONGCTX_ASSERT_SEQUENCE_POLICY(window_cache);
LONGCTX_ASSERT_SEQUENCE_POLICY(sinks_cache);
LONGCTX_ASSERT_SEQUENCE_POLICY(dense);

inline const char* eviction_name(eviction e) noexcept {
  switch (e) {
    case eviction::tova: return "tova";
    case eviction::window: return "window";
    case eviction::sinks: return "sinks";
    case eviction::h2o: return "h2o";
    case eviction::full: return "full";
  }
  return "?";
}

LONGCTX_NAMESPACE_END
