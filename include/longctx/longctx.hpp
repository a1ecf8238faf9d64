// longctx umbrella header: every public layer.
#pragma once

#include "config.hpp"
#include "error.hpp"
#include "simd.hpp"
#include "tensor.hpp"
