// longctx umbrella header: every layer that needs no Eigen (tensor views,
// SIMD backends, kernels, runtime, attention, every sequence policy).
// Include a narrower header (e.g. longctx/attention.hpp,
// longctx/policies/tova.hpp) to compile less.
//
// Not included here, because they need Eigen 3.4:
//   longctx/models.hpp       the whole-model drivers (RMT, the example RMT
//                            backbone, the GAU layer);
//   longctx/tensor/eigen.hpp views over Eigen matrices and back.
/// \file
/// The umbrella header: every layer that needs no Eigen (views, SIMD
/// backends, runtime, kernels, attention() and decode(), every sequence
/// policy). longctx/models.hpp and longctx/tensor/eigen.hpp need Eigen 3.4
/// and are included separately.
#pragma once

#include "attention.hpp"
#include "config.hpp"
#include "error.hpp"
#include "kernels.hpp"
#include "policies.hpp"
#include "runtime.hpp"
#include "simd.hpp"
#include "tensor.hpp"
