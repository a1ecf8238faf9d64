// Operand packing for the micro-kernel: K transposed (K^T, keys as columns)
// and V row-major, both zero-padded and converted from the storage type to
// float. The only place kernels read K/V storage for the GEMM paths.
#pragma once

#include <algorithm>

#include "kv_storage.hpp"
#include "../simd/convert.hpp"
#include "tiling.hpp"
#include "../tensor/extents.hpp"

LONGCTX_NAMESPACE_BEGIN

namespace detail {

// Copy nk keys of K (row stride ldk, d columns) transposed into kt (d rows,
// stride ld): kt[p * ld + j] = k[j * ldk + p]; zero columns [nk, nkp).
// Blocks of 8 keys: 8 source rows stream sequentially and each destination
// row gets 8 contiguous floats; key by key, every key's d stores went to d
// different cache lines (the transpose was ~10% of a FLASH chunk's time).
// Each key is converted once and times its row scale (1 but for q8).
template <class KV>
inline void pack_kt(const KV* k, index_t ldk, index_t d, index_t nk, index_t nkp, float* kt,
                    index_t ld) noexcept {
  constexpr index_t B = 8;
  index_t j = 0;
  for (; j + B <= nk; j += B) {
    const KV* kr = k + j * ldk;
    float rs[B];
    LONGCTX_UNROLL for (index_t jj = 0; jj < B; ++jj) rs[jj] = kv_storage_traits<KV>::row_scale(kr + jj * ldk);
    for (index_t p = 0; p < d; ++p) {
      float* dst = kt + p * ld + j;
      LONGCTX_UNROLL for (index_t jj = 0; jj < B; ++jj)
        dst[jj] = kv_storage_traits<KV>::to_float(kr[jj * ldk + p]) * rs[jj];
    }
  }
  for (; j < nk; ++j) {
    const float rs = kv_storage_traits<KV>::row_scale(k + j * ldk);
    for (index_t p = 0; p < d; ++p) kt[p * ld + j] = kv_storage_traits<KV>::to_float(k[j * ldk + p]) * rs;
  }
  if (nk < nkp)
    for (index_t p = 0; p < d; ++p) std::fill(kt + p * ld + nk, kt + p * ld + nkp, 0.0f);
}

// Copy nk rows of V (row stride ldv, d_v columns) into vp (nkp rows, stride
// dvp), converted to float in registers, times the row scale (Scaled; else
// the stored values as they are, for a caller that applies the scales
// itself), zeroing padding rows and columns.
template <arch_tag Arch, bool Scaled = true, class KV>
inline void pack_v(const KV* v, index_t ldv, index_t d_v, index_t dvp, index_t nk, index_t nkp,
                   float* vp) noexcept {
  for (index_t jj = 0; jj < nkp; ++jj) {
    float* dst = vp + jj * dvp;
    index_t c = 0;
    if (jj < nk) {
      if constexpr (Scaled)
        kv_storage_traits<KV>::template load_row<Arch>(v + jj * ldv, dst, d_v);
      else
        to_float_row<Arch>(v + jj * ldv, dst, d_v);
      c = d_v;
    }
    for (; c < dvp; ++c) dst[c] = 0.0f;
  }
}

}  // namespace detail

LONGCTX_NAMESPACE_END
