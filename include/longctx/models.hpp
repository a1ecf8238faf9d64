// Whole-model drivers (not sequence policies; see models/layer_driver.hpp):
// RMT over a user backbone, the example backbone, the GAU layer. These use
// Eigen; the kernels and policies do not.
#pragma once

#include "models/gau.hpp"
#include "models/rmt.hpp"
#include "models/rmt_backbone.hpp"
