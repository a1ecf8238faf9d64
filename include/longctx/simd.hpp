// SIMD layer umbrella: arch tags, vec<float, Arch> backends, math, BLAS-1.
#pragma once

#include "simd/arch.hpp"
#include "simd/blas1.hpp"
#include "simd/math.hpp"
#include "simd/vec.hpp"
