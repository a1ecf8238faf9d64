// The GEMM engine seam of the tiled attention kernel: everything that
// depends on how the two products S = (scale Q) K^T and O = alpha O + P V
// are computed, behind one type, so the fp32 vector engine and the 16-bit
// engines (kernels/bf16_dot_engine.hpp, kernels/amx_engine.hpp) are
// interchangeable under tiled_attention_block (kernels/tiled_attention.hpp):
//   operand            the element type of packed Q, K^T and V (float, bf16);
//   block_q, block_kv  query rows per block and keys per tile (panel);
//   q_ld(d)            operands per packed query row;
//   kt_tile(d)         operands per packed key tile (block_kv keys);
//   v_ld(d_v), v_tile(d_v)  packed V: row stride and operands per tile;
//   acc_ld(d_v)        floats per row of the fp32 output accumulator;
//   reads_v_in_place   whether float V rows of whole aligned vectors may be
//                      read as they are (ldv = the caller's row stride);
//   scratch_floats(d, d_v)  per-task scratch beyond S and the accumulator;
//   pack_k, pack_v     one tile of the storage type KV into the layout;
//   load_q             one query row, times the scale, as operands;
//   qk(nb, nk, d, q, kt, s)  S (nb, block_kv) for keys [0, nk) of a tile,
//                      columns up to the engine's padding written (zero
//                      keys give zero logits), the rest untouched;
//   pv(nb, nk, d_v, p, v, ldv, acc, alpha, scratch)  acc = diag(alpha) acc
//                      + P V over the tile's keys [0, nk), or acc = P V when
//                      alpha is null (acc not read: a first tile); p is S
//                      after the softmax (fp32, zero past nk), the engine
//                      may overwrite it;
//   prepare()          once per call on the calling thread, before any task;
//                      throws `unsupported` where the engine cannot run;
//   begin()/end()      per-task set-up and tear-down (AMX tile configuration);
//   name               for benchmark labels and `active_engine`.
// Engines differ in rounding only: the mask, the online softmax, the LSE,
// the exact-row fallback and the output all live in the common kernel.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstring>

#include "micro_gemm.hpp"
#include "pack.hpp"
#include "tiling.hpp"

LONGCTX_NAMESPACE_BEGIN

/// The fp32 vector engine: the register-blocked micro-kernel
/// (kernels/micro_gemm.hpp) on packed float K^T and V (or V read in place).
/// Every backend has it; it is the default and the reference for the others.
template <arch_tag Arch>
struct f32_engine {
  using arch = Arch;
  using operand = float;
  static constexpr const char* name = "f32";
  static constexpr index_t W = Arch::width;
  static constexpr index_t block_q = attention_blocking<Arch>::block_q;
  static constexpr index_t block_kv = attention_blocking<Arch>::block_kv;
  static constexpr bool reads_v_in_place = true;

  static constexpr index_t q_ld(index_t d) noexcept { return d; }
  static constexpr index_t kt_tile(index_t d) noexcept { return d * block_kv; }
  static constexpr index_t v_ld(index_t d_v) noexcept { return round_up(d_v, W); }
  static constexpr index_t v_tile(index_t d_v) noexcept { return block_kv * v_ld(d_v); }
  static constexpr index_t acc_ld(index_t d_v) noexcept { return round_up(d_v, W); }
  static constexpr index_t scratch_floats(index_t, index_t) noexcept { return 0; }

  static void prepare() {}
  static void begin() noexcept {}
  static void end() noexcept {}

  // K^T of nk keys as a (d, block_kv) row-major tile, zero columns past nk.
  template <class KV>
  static void pack_k(const KV* k, index_t ldk, index_t d, index_t nk, float* tile) noexcept {
    detail::pack_kt(k, ldk, d, nk, block_kv, tile, block_kv);
  }
  // V rows (block_kv, v_ld) row-major, zero-padded.
  template <class KV>
  static void pack_v(const KV* v, index_t ldv, index_t d_v, index_t nk, float* tile) noexcept {
    detail::pack_v<Arch>(v, ldv, d_v, v_ld(d_v), nk, block_kv, tile);
  }
  static void load_q(const float* q, index_t d, float scale, float* dst) noexcept {
    using V = vec<float, Arch>;
    const V vscale = V::broadcast(scale);
    index_t p = 0;
    for (; p + W <= d; p += W) (V::load(q + p) * vscale).store(dst + p);
    if (p < d) (V::load_partial(q + p, int(d - p)) * vscale).store_partial(dst + p, int(d - p));
  }
  static void qk(index_t nb, index_t nk, index_t d, const float* q, const float* kt, float* s) noexcept {
    block_gemm<Arch, false>(nb, round_up(nk, W), d, q, d, kt, block_kv, s, block_kv);
  }
  // P's padding columns are 0: k = nk reads no padding row.
  static void pv(index_t nb, index_t nk, index_t d_v, float* p, const float* v, index_t ldv, float* acc,
                 const float* alpha, float*) noexcept {
    if (alpha)
      block_gemm<Arch, true>(nb, acc_ld(d_v), nk, p, block_kv, v, ldv, acc, acc_ld(d_v), alpha);
    else
      block_gemm<Arch, false>(nb, acc_ld(d_v), nk, p, block_kv, v, ldv, acc, acc_ld(d_v));
  }
};

/// A GEMM engine for tiled_attention_block: the members the header comment
/// of kernels/gemm_engine.hpp lists.
template <class E>
concept gemm_engine = arch_tag<typename E::arch> && requires(index_t n, const float* cf, float* f,
                                                              const typename E::operand* co, typename E::operand* op) {
  { E::name } -> std::convertible_to<const char*>;
  { E::block_q } -> std::convertible_to<index_t>;
  { E::block_kv } -> std::convertible_to<index_t>;
  { E::reads_v_in_place } -> std::convertible_to<bool>;
  { E::q_ld(n) } -> std::same_as<index_t>;
  { E::kt_tile(n) } -> std::same_as<index_t>;
  { E::v_ld(n) } -> std::same_as<index_t>;
  { E::v_tile(n) } -> std::same_as<index_t>;
  { E::acc_ld(n) } -> std::same_as<index_t>;
  { E::scratch_floats(n, n) } -> std::same_as<index_t>;
  E::template pack_k<float>(cf, n, n, n, op);
  E::template pack_v<float>(cf, n, n, n, op);
  E::load_q(cf, n, 1.0f, op);
  E::qk(n, n, n, co, co, f);
  E::pv(n, n, n, f, co, n, f, cf, f);
  E::prepare();
  E::begin();
  E::end();
};

static_assert(gemm_engine<f32_engine<scalar>>);

LONGCTX_NAMESPACE_END
