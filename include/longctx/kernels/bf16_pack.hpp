// Operand layouts of the 16-bit GEMM engines (bf16_dot_engine.hpp,
// amx_engine.hpp). Both multiply bf16 pairs into fp32: AVX512_BF16's
// vdpbf16ps and AMX's tdpbf16ps compute c += a[2i] b[2i] + a[2i+1] b[2i+1]
// per 32-bit lane, so B is stored in pairs along the reduction axis (the
// "VNNI" layout), one 32-bit word per (pair row, column):
//   K^T:  word (w, j) = key j's values (2w, 2w + 1): the 32-bit transpose of
//         the keys' bf16 rows, d padded to an even dp (AMX: a multiple of 32);
//   V:    word (w, c) = column c of value rows (2w, 2w + 1): two rows
//         interleaved, keys padded to an even count (AMX: whole tiles);
//   Q, P: plain row-major bf16 rows, zero-padded (A is broadcast or
//         tile-loaded as pairs without a layout change).
// Conversion: bf16 storage is copied bit for bit; float rounds to nearest
// even once; f16 and int8 widen to float exactly (times the row scale),
// then round once. Q is scaled in float, then rounded.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kv_storage.hpp"
#include "../simd/convert.hpp"
#include "tiling.hpp"

LONGCTX_NAMESPACE_BEGIN

namespace detail {

// 32-bit words in bf16 buffers, without type punning through pointers.
inline void store_word(bf16* p, std::uint32_t w) noexcept { std::memcpy(static_cast<void*>(p), &w, sizeof w); }

// Values [c0, c0 + n) of the storage row starting at `row` as bf16 into
// dst, zero-padded to np; tmp holds n floats (unused for bf16 storage, which
// is copied). The row scale (q8) is read from the row's own prefix, so a
// slice (c0 > 0: head dims past 512) is scaled like the whole row.
template <arch_tag Arch, class KV>
inline void row_to_bf16(const KV* row, index_t c0, index_t n, index_t np, bf16* dst, float* tmp) noexcept {
  if constexpr (std::is_same_v<KV, bf16>) {
    std::memcpy(static_cast<void*>(dst), row + c0, sizeof(bf16) * std::size_t(n));
  } else if constexpr (std::is_same_v<KV, float>) {
    from_float_row<Arch>(row + c0, dst, n);
  } else {
    to_float_row<Arch>(row + c0, tmp, n);  // exact (q8: the integers)
    const float s = kv_storage_traits<KV>::row_scale(row);
    if (s != 1.0f)
      for (index_t i = 0; i < n; ++i) tmp[i] *= s;  // as load_row: one rounding
    from_float_row<Arch>(tmp, dst, n);
  }
  std::fill(dst + n, dst + np, bf16{});
}

// One query row times scale as bf16, zero-padded to np.
template <arch_tag Arch>
inline void scaled_row_to_bf16(const float* q, index_t d, float scale, index_t np, bf16* dst) noexcept {
  using V = vec<float, Arch>;
  using IO = float_io<bf16, Arch>;
  constexpr index_t W = Arch::width;
  const V vs = V::broadcast(scale);
  index_t p = 0;
  for (; p + W <= d; p += W) IO::store(dst + p, V::load(q + p) * vs);
  if (p < d) IO::store_partial(dst + p, V::load_partial(q + p, int(d - p)) * vs, int(d - p));
  std::fill(dst + d, dst + np, bf16{});
}

// K^T of nk keys (row stride ldk, d values) into the VNNI layout: dp / 2
// rows of ld words; zero past d (to dp) and past nk (to ld). Keys in
// groups of 8: each group's rows are converted once, then every word row
// receives 8 contiguous words.
template <arch_tag Arch, class KV>
inline void pack_kt_vnni(const KV* k, index_t ldk, index_t d, index_t dp, index_t nk, index_t ld,
                         bf16* out) noexcept {
  constexpr index_t B = 8, max_d = 512;
  alignas(64) std::array<bf16, B * max_d> rows;  // B keys' bf16 values, dp each
  alignas(64) std::array<float, max_d> tmp;
  for (index_t c0 = 0; c0 < dp; c0 += max_d) {  // head dims past max_d in slices (rare)
    const index_t cd = std::min(max_d, dp - c0), dv = std::clamp<index_t>(d - c0, 0, cd);
    for (index_t j = 0; j < ld; j += B) {
      const index_t nb = std::clamp<index_t>(nk - j, 0, B);
      for (index_t jj = 0; jj < B; ++jj) {
        bf16* r = rows.data() + jj * max_d;
        if (jj < nb)
          row_to_bf16<Arch>(k + (j + jj) * ldk, c0, dv, cd, r, tmp.data());
        else
          std::fill(r, r + cd, bf16{});
      }
      for (index_t w = 0; w < cd / 2; ++w) {
        std::uint32_t o[B];
        for (index_t jj = 0; jj < B; ++jj)
          o[jj] = std::uint32_t(rows[std::size_t(jj * max_d + 2 * w)].bits) |
                  std::uint32_t(rows[std::size_t(jj * max_d + 2 * w + 1)].bits) << 16;
        std::memcpy(static_cast<void*>(out + 2 * ((c0 / 2 + w) * ld + j)), o, sizeof o);
      }
    }
  }
}

// nk value rows (row stride ldv, d_v values) into the VNNI layout: kp / 2
// word rows of dvp words (kp even, >= nk); zero past d_v and past nk.
template <arch_tag Arch, class KV>
inline void pack_v_vnni(const KV* v, index_t ldv, index_t d_v, index_t dvp, index_t nk, index_t kp,
                        bf16* out) noexcept {
  constexpr index_t max_d = 512;
  alignas(64) std::array<bf16, 2 * max_d> rows;
  alignas(64) std::array<float, max_d> tmp;
  alignas(64) std::array<std::uint32_t, max_d> o;
  for (index_t c0 = 0; c0 < dvp; c0 += max_d) {
    const index_t cd = std::min(max_d, dvp - c0), dv = std::clamp<index_t>(d_v - c0, 0, cd);
    for (index_t j = 0; j < kp; j += 2) {
      for (index_t jj = 0; jj < 2; ++jj) {
        bf16* r = rows.data() + jj * max_d;
        if (j + jj < nk)
          row_to_bf16<Arch>(v + (j + jj) * ldv, c0, dv, cd, r, tmp.data());
        else
          std::fill(r, r + cd, bf16{});
      }
      for (index_t c = 0; c < cd; ++c)
        o[std::size_t(c)] = std::uint32_t(rows[std::size_t(c)].bits) | std::uint32_t(rows[std::size_t(max_d + c)].bits) << 16;
      std::memcpy(static_cast<void*>(out + 2 * ((j / 2) * dvp + c0)), o.data(), sizeof(std::uint32_t) * std::size_t(cd));
    }
  }
}

// P rows (fp32, row stride ldp) to bf16 rows of stride ldo: columns [0, nk)
// rounded, [nk, kp) zero; rows [nb, nb_pad) zero.
template <arch_tag Arch>
inline void probabilities_to_bf16(const float* p, index_t ldp, index_t nb, index_t nb_pad, index_t nk, index_t kp,
                                  bf16* out, index_t ldo) noexcept {
  for (index_t r = 0; r < nb; ++r) {
    from_float_row<Arch>(p + r * ldp, out + r * ldo, nk);
    std::fill(out + r * ldo + nk, out + r * ldo + kp, bf16{});
  }
  for (index_t r = nb; r < nb_pad; ++r) std::fill(out + r * ldo, out + r * ldo + kp, bf16{});
}

}  // namespace detail

LONGCTX_NAMESPACE_END
