// Quadratic chunk attention without softmax (FLASH / GAU, arXiv 2202.10447):
//   o (c_q, d_v) (+)= relu(scale q k^T + B)^2 v,   q (c_q, d), k (c_k, d), v (c_k, d_v),
// B (c_q, c_k) an optional caller-supplied bias, causal inside the chunk
// including the diagonal. Register-blocked: S against packed K^T, P V by the
// same micro-kernel. Every output element is a fixed sequence of FMAs over d
// and then over the keys, so a row computed alone equals the row in a block.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "exact_row.hpp"
#include "micro_gemm.hpp"
#include "pack.hpp"
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
  const Vf zero = Vf::zero(), vscale = Vf::broadcast(scale);
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
      for (index_t r = 0; r < nb; ++r) {
        float* sr = s + r * ops.ldkt;
        const index_t nkp = round_up(strip_keys(r / MR * MR, std::min(MR, nb - r / MR * MR)), KC);
        const index_t vis = mask.causal ? std::min(nk, mask.q_offset + i0 + r + 1) : nk;
        const float* br = bias.data() ? bias.data() + (i0 + r) * bias.stride(0) : nullptr;
        index_t j = 0;
        // max(0, x) keeps a NaN logit NaN (max returns b when a lane is NaN).
        if (br) {
          for (; j + W <= vis; j += W) {
            const Vf x = max(zero, fma(Vf::load(sr + j), vscale, Vf::load(br + j)));
            (x * x).store(sr + j);
          }
          if (j < vis) {
            const int t = int(vis - j);
            const Vf x = max(zero, fma(Vf::load(sr + j), vscale, Vf::load_partial(br + j, t)));
            (x * x).store(sr + j);
            j += t;
          }
        } else {
          for (; j + W <= vis; j += W) {
            const Vf x = max(zero, Vf::load(sr + j) * vscale);
            (x * x).store(sr + j);
          }
          if (j < vis) {
            const Vf x = max(zero, Vf::load(sr + j) * vscale);
            (x * x).store(sr + j);
            j = vis;
          }
        }
        std::fill(sr + vis, sr + nkp, 0.0f);  // masked keys and padding: P = 0 exactly
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
          if (vis == strip_keys(r0, std::min(MR, nb - r0)) || row_finite(dr, d_v)) continue;
          const float* pr = s + r * ops.ldkt;
          for (index_t c = 0; c < d_v; ++c) {
            const float* vc = ops.v + (c / P) * ops.v_panel + c % P;
            float a = 0.0f;
            for (index_t j = 0; j < vis; ++j) a = std::fma(pr[j], vc[j * ops.ldv], a);
            dr[c] = a;
          }
        }
    }
    if (!direct_o) {
      for (index_t r = 0; r < nb; ++r) {
        float* orow = o.data() + (i0 + r) * o.stride(0);
        const float* arow = acc + r * dvp;
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
  }
}

namespace detail {
struct chunk_attention_tag {};
}  // namespace detail

// Checked entry point for one chunk: o (c_q, d_v) (+)= relu(scale q k^T + bias)^2 v,
// q (c_q, d), k (c_k, d), v (c_k, d_v), bias (c_q, c_k) optional. scale is
// explicit: 1/C for FLASH's chunks, 1/n for FLASH-Quad over the whole sequence.
template <arch_tag Arch = default_arch>
void chunk_attention(matrix_view<const float> q, matrix_view<const float> k, matrix_view<const float> v,
                     matrix_view<float> o, float scale, chunk_mask mask = {}, matrix_view<const float> bias = {},
                     bool accumulate = false) {
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
  require_views(where, "q", q, "k", k, "v", v, "o", o);
  if (bias.data()) require_unit_inner_stride(bias, where, "bias");
  if (q.extent(0) == 0 || v.extent(1) == 0) return;
  const index_t pack = chunk_pack_scratch<Arch>(k.extent(0), k.extent(1), v.extent(1));
  float* scratch =
      detail::thread_scratch<detail::chunk_attention_tag>(pack + chunk_rows_scratch<Arch>(k.extent(0), v.extent(1)));
  const chunk_operands ops = prepare_chunk<Arch>(k, v, scratch);
  float* rows = scratch + pack;
  if (accumulate)
    chunk_attention_rows<Arch, true>(q, ops, o, scale, bias, mask, rows);
  else
    chunk_attention_rows<Arch, false>(q, ops, o, scale, bias, mask, rows);
}

LONGCTX_NAMESPACE_END
