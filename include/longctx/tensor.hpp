// Tensor layer umbrella: extents, strided views and their constructors.
// Eigen interop is separate (tensor/eigen.hpp) so the core does not need Eigen.
#pragma once

#include "tensor/extents.hpp"
#include "tensor/view.hpp"
