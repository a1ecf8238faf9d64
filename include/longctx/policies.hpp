// Policy layer umbrella: one header per method, each a policy object with a
// state_type, make_state and forward (see DESIGN.md section 5).
#pragma once

#include "policies/flash.hpp"
#include "policies/infini.hpp"
#include "policies/kv_cache.hpp"
#include "policies/rmt.hpp"
#include "policies/rmt_backbone.hpp"
#include "policies/tova.hpp"
