// The policies the restore and policies harnesses share, by index:
// visit_shared(i, f) calls f(policy) for i < shared_policies (every
// bounded-cache rule in f32, bf16 and int8 with per-channel keys, dense,
// Infini in f32 and int8, FLASH). policies.cpp adds the protocol suite's
// other cases after them.
#pragma once

#include <longctx/policies/dense.hpp>
#include <longctx/policies/flash.hpp>
#include <longctx/policies/infini.hpp>
#include <longctx/policies/tova.hpp>

namespace longctx_fuzz {
using namespace longctx;

constexpr unsigned shared_policies = 11;

template <class F>
bool visit_shared(unsigned i, F&& f) {
  switch (i) {
    case 0: f(tova{.budget = 5}); return true;
    case 1: f(h2o_cache{.budget = 5, .rule = {.recent = 2}}); return true;
    case 2: f(window_cache{.budget = 4, .layout = kv_layout::compacted}); return true;
    case 3: f(sinks_cache{.budget = 5, .rule = {.sinks = 2}, .positions = position_mode::cache_relative}); return true;
    case 4: f(snapkv{.budget = 5, .rule = {.window = 2, .kernel = 3, .reselect_every = 2}}); return true;
    case 5: f(bounded_cache<tova_rule, bf16>{.budget = 5}); return true;
    case 6: f(bounded_cache<tova_rule, q8>{.budget = 5, .positions = position_mode::cache_relative,
                                          .keys = key_scales::per_channel}); return true;
    case 7: f(dense{}); return true;
    case 8: f(infini{.segment = 3, .update = update_rule::delta}); return true;
    case 9: f(basic_infini<float, q8>{.segment = 3}); return true;
    case 10: f(flash{.chunk = 3}); return true;
  }
  return false;
}

}  // namespace longctx_fuzz
