// longctx umbrella header: every public layer. Include a narrower header
// (e.g. longctx/attention.hpp, longctx/policies/tova.hpp) to compile less.
#pragma once

#include "attention.hpp"
#include "config.hpp"
#include "error.hpp"
#include "kernels.hpp"
#include "models.hpp"
#include "policies.hpp"
#include "runtime.hpp"
#include "simd.hpp"
#include "tensor.hpp"
