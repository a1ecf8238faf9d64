// Register-blocked GEMM micro-kernel, written once against vec<float, Arch>:
//   C (mr x nv*W) = A (mr x k) B (k x nv*W)                      (overwrite)
//   C (mr x nv*W) = diag(row_scale) C + A (mr x k) B (k x nv*W)   (accumulate)
// A row-major (elements broadcast), B row-major and padded to whole vectors
// (packed by the caller, or rows read in place), in float or any storage type
// (converted in registers as it is loaded), C padded likewise. The same kernel computes Q K^T
// (B = packed K^T) and P V (B = packed V), the two products of attention.
#pragma once

#include <algorithm>

#include "../simd/convert.hpp"
#include "../simd/vec.hpp"
#include "../tensor/extents.hpp"
#include "tiling.hpp"

LONGCTX_NAMESPACE_BEGIN

template <arch_tag Arch, int MR, int NV, bool Accumulate, class TB = float>
inline void micro_gemm(index_t k, const float* a, index_t lda, const TB* b, index_t ldb, float* c,
                       index_t ldc, const float* row_scale) noexcept {
  using V = vec<float, Arch>;
  constexpr index_t W = V::width;
  V acc[MR][NV];
  LONGCTX_UNROLL for (int r = 0; r < MR; ++r) {
    if constexpr (Accumulate) {
      const V s = V::broadcast(row_scale[r]);
      LONGCTX_UNROLL for (int v = 0; v < NV; ++v) acc[r][v] = V::load(c + r * ldc + v * W) * s;
    } else {
      LONGCTX_UNROLL for (int v = 0; v < NV; ++v) acc[r][v] = V::zero();
    }
  }
  for (index_t p = 0; p < k; ++p) {
    V bv[NV];
    LONGCTX_UNROLL for (int v = 0; v < NV; ++v) bv[v] = float_io<TB, Arch>::load(b + p * ldb + v * W);
    LONGCTX_UNROLL for (int r = 0; r < MR; ++r) {
      const V ar = V::broadcast(a[r * lda + p]);
      LONGCTX_UNROLL for (int v = 0; v < NV; ++v) acc[r][v] = fma(ar, bv[v], acc[r][v]);
    }
  }
  LONGCTX_UNROLL for (int r = 0; r < MR; ++r)
    LONGCTX_UNROLL for (int v = 0; v < NV; ++v) acc[r][v].store(c + r * ldc + v * W);
}

namespace detail {
// Tail dispatch: rows 1..MR and vectors 1..NR become compile-time constants.
template <arch_tag Arch, int MR, int NV, bool Acc, class TB>
inline void micro_gemm_rows(int rows, index_t k, const float* a, index_t lda, const TB* b,
                            index_t ldb, float* c, index_t ldc, const float* rs) noexcept {
  if constexpr (MR > 0) {
    if (rows == MR) return micro_gemm<Arch, MR, NV, Acc, TB>(k, a, lda, b, ldb, c, ldc, rs);
    return micro_gemm_rows<Arch, MR - 1, NV, Acc, TB>(rows, k, a, lda, b, ldb, c, ldc, rs);
  }
}
template <arch_tag Arch, int MR, int NV, bool Acc, class TB>
inline void micro_gemm_tail(int rows, int nvec, index_t k, const float* a, index_t lda,
                            const TB* b, index_t ldb, float* c, index_t ldc,
                            const float* rs) noexcept {
  if constexpr (NV > 0) {
    if (nvec == NV) return micro_gemm_rows<Arch, MR, NV, Acc, TB>(rows, k, a, lda, b, ldb, c, ldc, rs);
    return micro_gemm_tail<Arch, MR, NV - 1, Acc, TB>(rows, nvec, k, a, lda, b, ldb, c, ldc, rs);
  }
}
}  // namespace detail

// C (m x n) (=|+=) A (m x k) B (k x n) for any m, n a multiple of W: the
// micro-kernel swept over the tile, tails dispatched to smaller instances.
// Accumulate scales C's row r by row_scale[r] first (the online-softmax rescale).
template <arch_tag Arch, bool Accumulate, class TB = float>
inline void block_gemm(index_t m, index_t n, index_t k, const float* a, index_t lda, const TB* b,
                       index_t ldb, float* c, index_t ldc, const float* row_scale = nullptr) noexcept {
  using T = gemm_tile_traits<Arch>;
  constexpr index_t W = Arch::width, MR = T::mr, NR = T::nr;
  if (m == 1) {
    // One row (decode): nr accumulators would be one dependent FMA chain per
    // vector, latency-bound; 8 independent chains keep both FMA pipes busy.
    constexpr int NW = 8;
    for (index_t j = 0; j < n; j += NW * W) {
      const int nvec = static_cast<int>(std::min<index_t>(NW, (n - j) / W));
      detail::micro_gemm_tail<Arch, 1, NW, Accumulate, TB>(1, nvec, k, a, lda, b + j, ldb, c + j, ldc, row_scale);
    }
    return;
  }
  for (index_t j = 0; j < n; j += NR * W) {
    const int nvec = static_cast<int>(std::min<index_t>(NR, (n - j) / W));
    index_t i = 0;
    if (nvec == NR) {
      for (; i + MR <= m; i += MR)
        micro_gemm<Arch, MR, NR, Accumulate, TB>(k, a + i * lda, lda, b + j, ldb, c + i * ldc + j, ldc,
                                             row_scale ? row_scale + i : nullptr);
    }
    for (; i < m; i += MR) {
      const int rows = static_cast<int>(std::min<index_t>(MR, m - i));
      detail::micro_gemm_tail<Arch, MR, NR, Accumulate, TB>(rows, nvec, k, a + i * lda, lda, b + j, ldb,
                                                        c + i * ldc + j, ldc,
                                                        row_scale ? row_scale + i : nullptr);
    }
  }
}

LONGCTX_NAMESPACE_END
