// longctx umbrella header: every public layer. Include a narrower header
// (e.g. longctx/kernels/attention.hpp, longctx/policies/tova.hpp) to compile less.
#pragma once

#include "config.hpp"
#include "error.hpp"
#include "kernels.hpp"
#include "policies.hpp"
#include "simd.hpp"
#include "tensor.hpp"
