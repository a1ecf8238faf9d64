// longctx umbrella header: every public layer.
#pragma once

#include "config.hpp"
#include "error.hpp"
#include "kernels.hpp"
#include "simd.hpp"
#include "tensor.hpp"
