// Policy layer umbrella: every sequence policy (the sequence_policy concept,
// policies/protocol.hpp), one header per method.
#pragma once

#include "policies/flash.hpp"
#include "policies/infini.hpp"
#include "policies/kv_cache.hpp"
#include "policies/tova.hpp"
