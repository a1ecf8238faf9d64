// Double-precision oracles of every kernel and policy (tests and checks).
#pragma once

#include "reference/attention.hpp"
#include "reference/flash.hpp"
#include "reference/infini.hpp"
#include "reference/linear_state.hpp"
#include "reference/rmt.hpp"
#include "reference/tova.hpp"
