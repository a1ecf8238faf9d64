// vec<T, Arch>: one SIMD register of T. The contract every backend implements
// (shown for float; W = Arch::width):
//   load(p) / store(p): W unaligned elements;  load_partial(p, n) / store_partial(p, n):
//   the first n (0 <= n <= W) lanes, the rest read as 0 / left untouched;
//   broadcast(x), zero(); + - * / and unary -; fma(a, b, c) = a*b + c (fused),
//   fnma(a, b, c) = c - a*b; max(a, b) / min(a, b) return b when a lane holds a
//   NaN on x86 (so put the value whose NaN must propagate second); reduce_add,
//   reduce_max; round_nearest (ties to even), round_down (floor); pow2i(n) = 2^n for integral n in
//   [-126, 127], and +0 for n = -127; cmp_lt / select for branch-free clamps.
#pragma once

#include "arch.hpp"

LONGCTX_NAMESPACE_BEGIN

template <class T, class Arch>
struct vec;  // specialised per backend

LONGCTX_NAMESPACE_END

#include "backend_scalar.hpp"
#if LONGCTX_HAS_AVX2
#include "backend_avx2.hpp"
#endif
#if LONGCTX_HAS_AVX512
#include "backend_avx512.hpp"
#endif
#if LONGCTX_HAS_NEON
#include "backend_neon.hpp"
#endif
