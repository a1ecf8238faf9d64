// Quadratic chunk attention without softmax (FLASH / GAU, arXiv 2202.10447):
//   o (c_q, d_v) (+)= relu(scale q k^T + B)^2 v,   q (c_q, d), k (c_k, d), v (c_k, d_v),
// B (c_q, c_k) an optional caller-supplied bias, causal inside the chunk
// including the diagonal. Two kernels, one contract:
//   fp32   register-blocked: S against packed K^T, P V by the same
//          micro-kernel, V in column panels (chunk_attention_rows);
//   16-bit the products on a GEMM engine (kernels/gemm_engine.hpp: bf16
//          operands, fp32 accumulation), K^T and V packed in the engine's
//          key tiles (chunk_attention_rows_with), for compute_precision::bf16.
// relu^2 is fp32 in both. Every output element is a fixed sequence of
// operations over d and then over the keys (key tiles from key 0), so a row
// computed alone equals the row in a block. packed_chunk picks the kernel.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "compute.hpp"
#include "exact_row.hpp"
#include "gemm_engine.hpp"
#include "micro_gemm.hpp"
#include "pack.hpp"
#include "tiled_attention.hpp"
#include "../runtime/scratch.hpp"
#include "../error.hpp"
#include "../tensor/view.hpp"

LONGCTX_NAMESPACE_BEGIN

// Which keys a query row sees. Query row i of a call sits at position
// q_offset + i inside the chunk; causal: keys j <= q_offset + i (the diagonal
// included), otherwise every key. q_offset lets a streaming caller pass only
// the newest rows of a chunk.
struct chunk_mask {
  bool causal = false;
  index_t q_offset = 0;
};

// Columns per packed V panel: one micro-tile's width (nr vectors).
template <arch_tag Arch>
inline constexpr index_t chunk_v_panel = index_t(gemm_tile_traits<Arch>::nr) * Arch::width;

// A chunk's keys and values as the kernel reads them: kt (d, ldkt) = K^T with
// zero columns [c_k, ldkt), ldkt a multiple of the micro-tile width nr W;
// V packed in column panels of chunk_v_panel columns, panel p at
// v + p * c_k * panel, each (c_k, panel) row-major, zero-padded. Panels make
// the P V micro-kernel read B contiguously: V rows of e = 1536 floats are
// 6 KB apart, and a micro-tile walking 256 of them touches 256 pages, far
// past the L1 TLB (bench/bench_flash.cpp bm_chunk_kernel).
// A caller with one or two query rows may leave V in place (pack_v = false,
// when d_v % W == 0): the copy would cost as much as the product. The layout
// never changes a bit of the result.
struct chunk_operands {
  const float* kt = nullptr;
  index_t ldkt = 0;
  const float* v = nullptr;  // panel p at v + p * v_panel, row stride ldv
  index_t ldv = 0, v_panel = 0;
  index_t c_k = 0, d = 0, d_v = 0;
};

// Floats prepare_chunk needs for c_k keys of dim d and values of dim d_v.
template <arch_tag Arch>
constexpr index_t chunk_pack_scratch(index_t c_k, index_t d, index_t d_v) noexcept {
  constexpr index_t P = chunk_v_panel<Arch>;
  return d * round_up(std::max<index_t>(c_k, 1), P) + c_k * round_up(d_v, P);
}

// Floats chunk_attention_rows needs per call (per thread).
template <arch_tag Arch>
constexpr index_t chunk_rows_scratch(index_t c_k, index_t d_v) noexcept {
  constexpr index_t W = Arch::width, BQ = chunk_attention_block_q;
  return BQ * round_up(std::max<index_t>(c_k, 1), chunk_v_panel<Arch>) + BQ * round_up(d_v, W) + BQ;
}

// Packs k (c_k, d) transposed and v (c_k, d_v) in panels into scratch
// (chunk_pack_scratch floats). Inner strides 1.
template <arch_tag Arch>
chunk_operands prepare_chunk(matrix_view<const float> k, matrix_view<const float> v, float* scratch,
                             bool pack_v = true) noexcept {
  constexpr index_t W = Arch::width, P = chunk_v_panel<Arch>;
  const index_t c_k = k.extent(0), d = k.extent(1), d_v = v.extent(1);
  const index_t ldkt = round_up(std::max<index_t>(c_k, 1), P);
  float* kt = scratch;
  detail::pack_kt(k.data(), k.stride(0), d, c_k, ldkt, kt, ldkt);
  if (!pack_v && d_v % W == 0) return {kt, ldkt, v.data(), v.stride(0), P, c_k, d, d_v};
  // Row by row (each source row read once, sequentially), whole vectors: a
  // memcpy per (row, panel) made packing 20% of a causal chunk's time.
  using Vf = vec<float, Arch>;
  float* vp = kt + d * ldkt;
  const index_t full = d_v / W * W;
  for (index_t j = 0; j < c_k; ++j) {
    const float* src = v.data() + j * v.stride(0);
    index_t c = 0;
    for (; c < full; c += W) Vf::load(src + c).store(vp + (c / P) * c_k * P + j * P + c % P);
    for (; c < round_up(d_v, P); c += W) {  // last panel: partial vector, then zeros
      const int t = int(std::clamp<index_t>(d_v - c, 0, W));
      const Vf x = t > 0 ? Vf::load_partial(src + c, t) : Vf::zero();
      x.store(vp + (c / P) * c_k * P + j * P + c % P);
    }
  }
  return {kt, ldkt, vp, P, c_k * P, c_k, d, d_v};
}

namespace detail {
// P = relu(scale s + b)^2 in place over a row's visible keys [0, vis), b the
// bias row (or null), then exact zeros over [vis, end): masked keys and
// padding. s must hold whole vectors to round_up(vis, W) (the tail is read
// and written as one vector). max(0, x) keeps a NaN logit NaN (max returns
// b when a lane is NaN).
template <arch_tag Arch>
inline void relu2_row(float* s, index_t vis, index_t end, float scale, const float* b) noexcept {
  using Vf = vec<float, Arch>;
  constexpr index_t W = Vf::width;
  const Vf zero = Vf::zero(), vscale = Vf::broadcast(scale);
  index_t j = 0;
  if (b) {
    for (; j + W <= vis; j += W) {
      const Vf x = max(zero, fma(Vf::load(s + j), vscale, Vf::load(b + j)));
      (x * x).store(s + j);
    }
    if (j < vis) {
      const int t = int(vis - j);
      const Vf x = max(zero, fma(Vf::load(s + j), vscale, Vf::load_partial(b + j, t)));
      (x * x).store(s + j);
    }
  } else {
    for (; j + W <= vis; j += W) {
      const Vf x = max(zero, Vf::load(s + j) * vscale);
      (x * x).store(s + j);
    }
    if (j < vis) {
      const Vf x = max(zero, Vf::load(s + j) * vscale);
      (x * x).store(s + j);
    }
  }
  std::fill(s + vis, s + end, 0.0f);
}

// o rows [i0, i0 + nb) = (Accumulate: o +) the accumulator's rows (row
// stride ld, whole vectors): one rounding per element either way.
template <arch_tag Arch, bool Accumulate>
inline void store_rows(const float* acc, index_t ld, matrix_view<float> o, index_t i0, index_t nb) noexcept {
  using Vf = vec<float, Arch>;
  constexpr index_t W = Vf::width;
  const index_t d_v = o.extent(1);
  for (index_t r = 0; r < nb; ++r) {
    float* orow = o.data() + (i0 + r) * o.stride(0);
    const float* arow = acc + r * ld;
    index_t c = 0;
    for (; c + W <= d_v; c += W) {
      Vf x = Vf::load(arow + c);
      if constexpr (Accumulate) x = Vf::load(orow + c) + x;
      x.store(orow + c);
    }
    if (c < d_v) {
      const int t = int(d_v - c);
      Vf x = Vf::load(arow + c);
      if constexpr (Accumulate) x = Vf::load_partial(orow + c, t) + x;
      x.store_partial(orow + c, t);
    }
  }
}
}  // namespace detail

// o (c_q, d_v) = (Accumulate: o +) relu(scale q kt + bias)^2 v for the c_q
// rows of q (c_q, d); bias (c_q, c_k) or empty (data null). Inner strides 1;
// scratch: chunk_rows_scratch floats. Masked and padding keys get P = 0
// exactly, and the P V product stops at the last key the block can see, so
// extra keys add exact zeros: streaming one row gives the block's bits.
template <arch_tag Arch, bool Accumulate = false>
void chunk_attention_rows(matrix_view<const float> q, const chunk_operands& ops, matrix_view<float> o, float scale,
                          matrix_view<const float> bias, chunk_mask mask, float* scratch) noexcept {
  using Vf = vec<float, Arch>;
  constexpr index_t W = Vf::width, BQ = chunk_attention_block_q, MR = gemm_tile_traits<Arch>::mr;
  // Q K^T columns in whole micro-tiles (nr vectors): a one-vector tail tile
  // does 6 broadcasts per 6 FMAs and ran at half speed.
  constexpr index_t KC = chunk_v_panel<Arch>;
  static_assert(BQ % MR == 0, "chunk_attention_block_q must be a multiple of every arch's micro-tile rows");
  const index_t c_q = q.extent(0), c_k = ops.c_k, d = ops.d, d_v = ops.d_v;
  const index_t dvp = round_up(d_v, W);
  LONGCTX_ASSERT(q.extent(1) == d && o.extent(0) == c_q && o.extent(1) == d_v);
  float* s = scratch;                // (BQ, ldkt) scores, then probabilities
  float* acc = s + BQ * ops.ldkt;    // (BQ, dvp) P V when o cannot take it directly
  // Overwrite with whole-vector rows writes straight into o; accumulating goes
  // through acc so the result is o + (P V), one rounding, for every d_v.
  const bool direct_o = !Accumulate && d_v % W == 0;
  for (index_t i0 = 0; i0 < c_q; i0 += BQ) {
    const index_t nb = std::min(BQ, c_q - i0);
    // Keys any row of the block can see: causal stops at the block's last row.
    const index_t nk = mask.causal ? std::min(c_k, mask.q_offset + i0 + nb) : c_k;
    float* dst = direct_o ? o.data() + i0 * o.stride(0) : acc;
    const index_t ldd = direct_o ? o.stride(0) : dvp;
    if (nk == 0) {
      for (index_t r = 0; r < nb; ++r) std::fill(dst + r * ldd, dst + r * ldd + (direct_o ? d_v : dvp), 0.0f);
    } else {
      // Causal blocks work in strips of MR rows (one micro-tile), each only as
      // far as its last row sees: the triangle's waste shrinks from half of a
      // (BQ x BQ) square to half of an (MR x MR) one (30% -> 3% of the causal
      // chunk's work at C = 256, bench_flash bm_chunk_kernel).
      const auto strip_keys = [&](index_t r, index_t rows) {
        return mask.causal ? std::min(nk, mask.q_offset + i0 + r + rows) : nk;
      };
      for (index_t r = 0; r < nb; r += MR) {
        const index_t rows = std::min(MR, nb - r);
        block_gemm<Arch, false>(rows, round_up(strip_keys(r, rows), KC), d, q.data() + (i0 + r) * q.stride(0),
                                q.stride(0), ops.kt, ops.ldkt, s + r * ops.ldkt, ops.ldkt);
      }
      for (index_t r = 0; r < nb; ++r) {  // masked keys and padding: P = 0 exactly
        const index_t nkp = round_up(strip_keys(r / MR * MR, std::min(MR, nb - r / MR * MR)), KC);
        const index_t vis = mask.causal ? std::min(nk, mask.q_offset + i0 + r + 1) : nk;
        detail::relu2_row<Arch>(s + r * ops.ldkt, vis, nkp, scale,
                                bias.data() ? bias.data() + (i0 + r) * bias.stride(0) : nullptr);
      }
      constexpr index_t P = chunk_v_panel<Arch>;
      for (index_t c0 = 0; c0 < dvp; c0 += P)  // the panel stays in L1 across the strips
        for (index_t r = 0; r < nb; r += MR) {
          const index_t rows = std::min(MR, nb - r);
          block_gemm<Arch, false>(rows, std::min(P, dvp - c0), strip_keys(r, rows), s + r * ops.ldkt, ops.ldkt,
                                  ops.v + (c0 / P) * ops.v_panel, ops.ldv, dst + r * ldd + c0, ldd);
        }
      // Causal: a strip's P V reads the keys its last row sees; earlier rows
      // add exact zeros for the keys past their own, unless such a V row
      // holds NaN or inf (0 x NaN = NaN): a later token's non-finite V would
      // reach earlier outputs, and the result would depend on the split. A
      // row that came out non-finite is recomputed over its own keys in the
      // GEMM's order (keys ascending, one FMA each from 0): the bits it gets
      // when it is its strip's last row, NaN only if its own keys hold one.
      if (mask.causal)
        for (index_t r = 0; r < nb; ++r) {
          const index_t vis = std::min(nk, mask.q_offset + i0 + r + 1), r0 = r / MR * MR;
          float* dr = dst + r * ldd;
          if (vis == strip_keys(r0, std::min(MR, nb - r0)) || row_finite<Arch>(dr, d_v)) continue;
          const float* pr = s + r * ops.ldkt;
          for (index_t c = 0; c < d_v; ++c) {
            const float* vc = ops.v + (c / P) * ops.v_panel + c % P;
            float a = 0.0f;
            for (index_t j = 0; j < vis; ++j) a = std::fma(pr[j], vc[j * ops.ldv], a);
            dr[c] = a;
          }
        }
    }
    if (!direct_o) detail::store_rows<Arch, Accumulate>(acc, dvp, o, i0, nb);
  }
}

// ---- The 16-bit kernel: the products on a GEMM engine --------------------

// A chunk's keys and values in engine E's layout: K^T key tile t (E::block_kv
// keys from key t block_kv) at kt + t E::kt_tile(d), V tile t at
// v + t E::v_tile(d_v) (row stride E::v_ld(d_v)), zero-padded; and the
// caller's values (v_src), which a row's recomputation re-packs.
template <gemm_engine E>
struct chunk_engine_operands {
  const typename E::operand* kt = nullptr;
  const typename E::operand* v = nullptr;
  matrix_view<const float> v_src{};
  index_t c_k = 0, d = 0, d_v = 0;
};

// Floats prepare_chunk_with<E> needs for c_k keys of dim d and values of dim d_v.
template <gemm_engine E>
constexpr index_t chunk_pack_scratch_with(index_t c_k, index_t d, index_t d_v) noexcept {
  const index_t n = std::max<index_t>(c_k, 1);
  return round_up((packed_kt_elems<E>(n, d) + packed_v_elems<E>(n, d_v)) * index_t(sizeof(typename E::operand)),
                  index_t(cache_line)) / 4;
}

// Packs k (c_k, d) and v (c_k, d_v) into scratch (chunk_pack_scratch_with
// floats) in E's tiles: f32 keys and values are rounded to bf16 once.
template <gemm_engine E>
chunk_engine_operands<E> prepare_chunk_with(matrix_view<const float> k, matrix_view<const float> v,
                                            float* scratch) noexcept {
  using T = typename E::operand;
  const index_t c_k = k.extent(0), d = k.extent(1), d_v = v.extent(1);
  T* kt = reinterpret_cast<T*>(scratch);
  T* vp = kt + packed_kt_elems<E>(std::max<index_t>(c_k, 1), d);
  for (index_t t = 0; t * E::block_kv < c_k; ++t) {
    pack_kt_tile<E>(k, t, kt);
    pack_v_tile<E>(v, t, vp);
  }
  return {kt, vp, v, c_k, d, d_v};
}

// Floats chunk_attention_rows_with<E> needs per call (per thread): the tiled
// kernel's (packed Q, S, the accumulator, the engine's own) and one V tile.
template <gemm_engine E>
constexpr index_t chunk_rows_scratch_with(index_t d, index_t d_v) noexcept {
  return tiled_attention_scratch<E>(d, d_v) +
         round_up(E::v_tile(d_v) * index_t(sizeof(typename E::operand)), index_t(cache_line)) / 4;
}

// Query rows per causal strip of chunk_attention_rows_with: a strip
// multiplies only the keys its last row sees, so the triangle wastes half of
// a (strip x strip) square per strip rather than of a (block_q x block_q)
// one. One tile row for AMX (16); one micro-tile for the vector engines.
template <gemm_engine E>
inline constexpr index_t chunk_strip_rows = 16;
template <arch_tag A>
inline constexpr index_t chunk_strip_rows<f32_engine<A>> = index_t(gemm_tile_traits<A>::mr);
#if LONGCTX_HAS_AVX512_BF16
template <>
inline constexpr index_t chunk_strip_rows<bf16_dot_engine> = 6;
#endif

// chunk_attention_rows on engine E: o (c_q, d_v) = (Accumulate: o +)
// relu(scale q kt + bias)^2 v. Per block of E::block_q query rows: Q rounded
// once (unscaled: the scale and the bias apply to the fp32 logits, as in the
// fp32 kernel), then per strip and key tile S = Q K^T, P = relu(scale S +
// B)^2 in fp32 (masked keys exactly 0), acc += P V (E rounds P once).
// scratch: chunk_rows_scratch_with<E> floats. With f32_engine this is the
// fp32 kernel's arithmetic, bit for bit (tests/kernels/chunk_attention.cpp).
template <gemm_engine E, bool Accumulate = false>
void chunk_attention_rows_with(matrix_view<const float> q, const chunk_engine_operands<E>& ops, matrix_view<float> o,
                               float scale, matrix_view<const float> bias, chunk_mask mask,
                               float* scratch) noexcept {
  using Arch = typename E::arch;
  using T = typename E::operand;
  constexpr index_t BQ = E::block_q, BKV = E::block_kv;
  const index_t c_q = q.extent(0), c_k = ops.c_k, d = ops.d, d_v = ops.d_v;
  const index_t ql = E::q_ld(d), ld = E::acc_ld(d_v);
  LONGCTX_ASSERT(q.extent(1) == d && o.extent(0) == c_q && o.extent(1) == d_v);
  T* qs = reinterpret_cast<T*>(scratch);
  float* s = scratch + round_up(BQ * ql * index_t(sizeof(T)), index_t(cache_line)) / 4;  // (BQ, BKV)
  float* acc = s + BQ * BKV;                                                               // (BQ, ld)
  float* ones = acc + BQ * ld;  // pv's rescale after the first tile: acc = 1 acc + P V, exact
  float* engine_scratch = ones + round_up(BQ, 16);
  T* v_alone = reinterpret_cast<T*>(engine_scratch + E::scratch_floats(d, d_v));  // one V tile
  std::fill(ones, ones + BQ, 1.0f);
  const index_t strip = mask.causal ? chunk_strip_rows<E> : BQ;
  const auto keys_of = [&](index_t i) { return mask.causal ? std::min(c_k, mask.q_offset + i + 1) : c_k; };  // row i's
  // out rows [0, rows) = P V for the query rows from g0 (packed at qr) over
  // keys [0, nk), tile by tile from key 0; last_v, if not null, replaces
  // the V tile holding key nk - 1.
  const auto strip_product = [&](const T* qr, index_t rows, index_t g0, index_t nk, float* out,
                                 const T* last_v = nullptr) {
    if (nk == 0)  // no key: P V is 0 (a chunk of no keys)
      for (index_t r = 0; r < rows; ++r) std::fill(out + r * ld, out + (r + 1) * ld, 0.0f);
    for (index_t j0 = 0; j0 < nk; j0 += BKV) {
      const index_t nkt = std::min(BKV, nk - j0);
      E::qk(rows, nkt, d, qr, ops.kt + j0 / BKV * E::kt_tile(d), s);
      for (index_t r = 0; r < rows; ++r)
        detail::relu2_row<Arch>(s + r * BKV, std::clamp<index_t>(keys_of(g0 + r) - j0, 0, nkt), nkt, scale,
                                bias.data() ? bias.data() + (g0 + r) * bias.stride(0) + j0 : nullptr);
      const T* vt = last_v && j0 + BKV >= nk ? last_v : ops.v + j0 / BKV * E::v_tile(d_v);
      E::pv(rows, nkt, d_v, s, vt, E::v_ld(d_v), out, j0 == 0 ? nullptr : ones, engine_scratch);
    }
  };
  E::begin();  // the engine's per-task state (AMX: the tile configuration)
  for (index_t i0 = 0; i0 < c_q; i0 += BQ) {
    const index_t nb = std::min(BQ, c_q - i0);
    for (index_t r = 0; r < nb; ++r) E::load_q(q.data() + (i0 + r) * q.stride(0), d, 1.0f, qs + r * ql);
    std::fill(qs + nb * ql, qs + BQ * ql, T{});  // rows a tile engine reads past nb
    for (index_t r0 = 0; r0 < nb; r0 += strip) {
      const index_t rows = std::min(strip, nb - r0);
      strip_product(qs + r0 * ql, rows, i0 + r0, keys_of(i0 + r0 + rows - 1), acc + r0 * ld);
    }
    // Causal: the keys past a row's own (to its strip's last row, and to the
    // engine's key granularity: AMX multiplies keys in 32s) add exact zeros,
    // unless such a V row holds NaN or inf (0 x NaN = NaN). A row that came
    // out non-finite is recomputed alone over its own keys, its last V tile
    // re-packed from them: the bits it gets as a call of one row (the fp32
    // kernel's rule), NaN only if its own keys hold one.
    if (mask.causal)
      for (index_t r = 0; r < nb; ++r) {
        const index_t vis = keys_of(i0 + r);
        if (vis == c_k || vis == 0 || row_finite<Arch>(acc + r * ld, d_v)) continue;
        const index_t j0 = (vis - 1) / BKV * BKV;
        E::template pack_v<float>(ops.v_src.data() + j0 * ops.v_src.stride(0), ops.v_src.stride(0), d_v, vis - j0,
                                  v_alone);
        E::load_q(q.data() + (i0 + r) * q.stride(0), d, 1.0f, qs);  // the block's strips are done with qs
        strip_product(qs, 1, i0 + r, vis, acc + r * ld, v_alone);
      }
    detail::store_rows<Arch, Accumulate>(acc, ld, o, i0, nb);
  }
  E::end();
}

// ---- One task's chunk, on the kernel `compute` selects ------------------

/// A chunk's keys and values packed once for the kernel that `compute`
/// selects on backend Arch (the 16-bit engine of kernels/compute.hpp for
/// compute_precision::bf16 where the build has one; the fp32 kernel
/// otherwise), then attended by any number of query-row blocks: FLASH's
/// per-task unit (policies/flash.hpp, models/gau.hpp). The caller checks the
/// shapes and calls require_engine<Arch>(compute) once, on its own thread,
/// before any task. Holds pointers into the caller's scratch.
template <arch_tag Arch>
class packed_chunk {
  static constexpr bool has16 = has_bf16_engine<Arch>;
  using E16 = std::conditional_t<has16, bf16_engine_for<Arch>, f32_engine<Arch>>;  // f32: never used

 public:
  /// \return the floats of scratch for c_k keys of dim d, values of dim d_v
  static constexpr index_t scratch_floats(compute_precision compute, index_t c_k, index_t d, index_t d_v) noexcept {
    if constexpr (has16)
      if (compute == compute_precision::bf16)
        return chunk_pack_scratch_with<E16>(c_k, d, d_v) + chunk_rows_scratch_with<E16>(d, d_v);
    return chunk_pack_scratch<Arch>(c_k, d, d_v) + chunk_rows_scratch<Arch>(c_k, d_v);
  }

  /// Packs k (c_k, d) and v (c_k, d_v), inner strides 1, into scratch
  /// (scratch_floats). pack_v = false lets the fp32 kernel read V in place
  /// (prepare_chunk).
  packed_chunk(compute_precision compute, matrix_view<const float> k, matrix_view<const float> v, float* scratch,
               bool pack_v = true) noexcept
      : bf16_(has16 && compute == compute_precision::bf16) {
    if constexpr (has16)
      if (bf16_) {
        e16_ = prepare_chunk_with<E16>(k, v, scratch);
        rows_ = scratch + chunk_pack_scratch_with<E16>(k.extent(0), k.extent(1), v.extent(1));
        return;
      }
    f32_ = prepare_chunk<Arch>(k, v, scratch, pack_v);
    rows_ = scratch + chunk_pack_scratch<Arch>(k.extent(0), k.extent(1), v.extent(1));
  }

  /// o (c_q, d_v) = (Accumulate: o +) relu(scale q k^T + bias)^2 v, q (c_q,
  /// d), bias (c_q, c_k) or empty; inner strides 1. Not thread-safe (the
  /// rows' scratch is shared): one packed_chunk per task.
  template <bool Accumulate = false>
  void attend(matrix_view<const float> q, matrix_view<float> o, float scale, matrix_view<const float> bias,
              chunk_mask mask) const noexcept {
    if constexpr (has16)
      if (bf16_) return chunk_attention_rows_with<E16, Accumulate>(q, e16_, o, scale, bias, mask, rows_);
    chunk_attention_rows<Arch, Accumulate>(q, f32_, o, scale, bias, mask, rows_);
  }

 private:
  bool bf16_;
  chunk_operands f32_{};
  chunk_engine_operands<E16> e16_{};
  float* rows_ = nullptr;
};

namespace detail {
struct chunk_attention_tag {};
}  // namespace detail

// Checked entry point for one chunk: o (c_q, d_v) (+)= relu(scale q k^T + bias)^2 v,
// q (c_q, d), k (c_k, d), v (c_k, d_v), bias (c_q, c_k) optional. scale is
// explicit: 1/C for FLASH's chunks, 1/n for FLASH-Quad over the whole sequence.
// compute: bf16 multiplies bf16-rounded q, k, v and P on the 16-bit engine
// (kernels/compute.hpp; fp32 where the build has none); throws `unsupported`
// where that engine cannot run here.
template <arch_tag Arch = default_arch>
void chunk_attention(matrix_view<const float> q, matrix_view<const float> k, matrix_view<const float> v,
                     matrix_view<float> o, float scale, chunk_mask mask = {}, matrix_view<const float> bias = {},
                     bool accumulate = false, compute_precision compute = compute_precision::f32) {
  constexpr const char* where = "chunk_attention";
  const auto shapes = [&] {
    return detail::concat("q ", shape_of(q), ", k ", shape_of(k), ", v ", shape_of(v), ", o ",
                          shape_of(o), ", bias ", shape_of(bias));
  };
  require(k.extent(1) == q.extent(1), where, "k", "head dim differs from q's: ", shapes);
  require(v.extent(0) == k.extent(0), where, "v", "rows differ from k's: ", shapes);
  require(o.extent(0) == q.extent(0) && o.extent(1) == v.extent(1), where, "o", "must be (c_q, d_v): ", shapes);
  require(bias.data() == nullptr || (bias.extent(0) == q.extent(0) && bias.extent(1) == k.extent(0)), where,
          "bias", "must be (c_q, c_k): ", shapes);
  require(std::isfinite(scale), where, "scale", "must be finite, got ", scale);
  require(mask.q_offset >= 0, where, "mask", "q_offset must be >= 0, got ", mask.q_offset);
  require_compute_precision(where, compute);
  require_views(where, "q", q, "k", k, "v", v, "o", o);
  if (bias.data()) require_unit_inner_stride(bias, where, "bias");
  require_engine<Arch>(compute);
  if (q.extent(0) == 0 || v.extent(1) == 0) return;
  float* scratch = detail::thread_scratch<detail::chunk_attention_tag>(
      packed_chunk<Arch>::scratch_floats(compute, k.extent(0), k.extent(1), v.extent(1)));
  const packed_chunk<Arch> packed(compute, k, v, scratch);
  if (accumulate)
    packed.template attend<true>(q, o, scale, bias, mask);
  else
    packed.template attend<false>(q, o, scale, bias, mask);
}

LONGCTX_NAMESPACE_END
