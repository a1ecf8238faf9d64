// The AVX512_BF16 engine: Q K^T and P V with bf16 operands and fp32
// accumulation by vdpbf16ps (16 lanes, one bf16 pair each: 64 FLOPs per
// instruction against the fp32 FMA's 32), in the fp32 engine's register
// blocking (6 rows x 4 vectors of accumulators), on the VNNI layouts of
// bf16_pack.hpp. Compiled with AVX512_BF16 (LONGCTX_HAS_AVX512_BF16).
// Where it pays is a fact of the CPU, not of the ISA: vdpbf16ps runs at
// twice the fp32 FMA rate on AMD Zen 4 and Zen 5 and below it on Intel's
// AMX CPUs, which take the AMX engine instead (compute.hpp).
#pragma once

#include "../config.hpp"

#if LONGCTX_HAS_AVX512_BF16

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "bf16_pack.hpp"
#include "gemm_engine.hpp"

LONGCTX_NAMESPACE_BEGIN

namespace detail {

// C (MR x NV*16) (=|+= diag(rs) C +) A B over kw pair steps: A rows of
// 32-bit bf16 pairs (row stride lda words), B rows of NV*16 words (stride
// ldb words), C fp32 (stride ldc floats).
template <int MR, int NV, bool Acc>
inline void dot_micro(index_t kw, const std::uint32_t* a, index_t lda, const std::uint32_t* b, index_t ldb, float* c,
                      index_t ldc, const float* rs) noexcept {
  __m512 acc[MR][NV];
  LONGCTX_UNROLL for (int r = 0; r < MR; ++r) {
    if constexpr (Acc) {
      const __m512 s = _mm512_set1_ps(rs[r]);
      LONGCTX_UNROLL for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_mul_ps(_mm512_loadu_ps(c + r * ldc + v * 16), s);
    } else {
      LONGCTX_UNROLL for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
    }
  }
  for (index_t p = 0; p < kw; ++p) {
    __m512i bv[NV];
    LONGCTX_UNROLL for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_si512(b + p * ldb + v * 16);
    LONGCTX_UNROLL for (int r = 0; r < MR; ++r) {
      std::uint32_t w;
      std::memcpy(&w, a + r * lda + p, sizeof w);
      const __m512i ar = _mm512_set1_epi32(int(w));
      LONGCTX_UNROLL for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)ar, (__m512bh)bv[v]);
    }
  }
  LONGCTX_UNROLL for (int r = 0; r < MR; ++r)
    LONGCTX_UNROLL for (int v = 0; v < NV; ++v) _mm512_storeu_ps(c + r * ldc + v * 16, acc[r][v]);
}

template <int MR, int NV, bool Acc>
inline void dot_rows(int rows, index_t kw, const std::uint32_t* a, index_t lda, const std::uint32_t* b, index_t ldb,
                     float* c, index_t ldc, const float* rs) noexcept {
  if constexpr (MR > 0) {
    if (rows == MR) return dot_micro<MR, NV, Acc>(kw, a, lda, b, ldb, c, ldc, rs);
    return dot_rows<MR - 1, NV, Acc>(rows, kw, a, lda, b, ldb, c, ldc, rs);
  }
}
template <int MR, int NV, bool Acc>
inline void dot_tail(int rows, int nvec, index_t kw, const std::uint32_t* a, index_t lda, const std::uint32_t* b,
                     index_t ldb, float* c, index_t ldc, const float* rs) noexcept {
  if constexpr (NV > 0) {
    if (nvec == NV) return dot_rows<MR, NV, Acc>(rows, kw, a, lda, b, ldb, c, ldc, rs);
    return dot_tail<MR, NV - 1, Acc>(rows, nvec, kw, a, lda, b, ldb, c, ldc, rs);
  }
}

// The first clamp(t, 0, 16) of 16 lanes: masked loads of a row's tail.
inline __mmask16 first_lanes(index_t t) noexcept {
  return t >= 16 ? __mmask16(0xffff) : t <= 0 ? __mmask16(0) : __mmask16((1u << t) - 1u);
}

// P rows (fp32, stride ldp) to bf16 rows (stride ldo) by vcvtne2ps2bf16,
// 32 at a time: columns [0, nk) rounded to nearest even (subnormals flush
// to zero, which a softmax weight below 2^-126 may), then zeros to the next
// multiple of 32 (at most ldo).
inline void probabilities_to_bf16_ne(const float* p, index_t ldp, index_t nb, index_t nk, bf16* out,
                                     index_t ldo) noexcept {
  for (index_t r = 0; r < nb; ++r) {
    const float* pr = p + r * ldp;
    bf16* o = out + r * ldo;
    for (index_t j = 0; j < nk; j += 32) {
      const __m512 a = _mm512_maskz_loadu_ps(first_lanes(nk - j), pr + j),
                   b = _mm512_maskz_loadu_ps(first_lanes(nk - j - 16), pr + j + 16);
      _mm512_storeu_si512(o + j, (__m512i)_mm512_cvtne2ps_pbh(b, a));
    }
  }
}

// V rows into pack_v_vnni's layout, 16 columns per step: two float rows
// rounded together by vcvtne2ps2bf16, or two bf16 rows taken as stored,
// then interleaved word by word by one vpermw. Same words as pack_v_vnni
// except that a float subnormal becomes a signed zero (the instruction's
// DAZ), which vdpbf16ps reads as the same zero as the subnormal bf16 that
// pack_v_vnni makes. A chunk kernel's V (c_k x d_v = 256 x 1536) is packed
// once per call: pack_v_vnni's software rounding and scalar interleave were
// a fifth of its time; this is 2x faster from memory, 2.8x from cache (Zen 4).
// dvp: a multiple of 16 (v_ld).
template <class KV>
inline void pack_v_pairs(const KV* v, index_t ldv, index_t d_v, index_t dvp, index_t nk, index_t kp,
                         bf16* out) noexcept {
  alignas(64) static constexpr std::int16_t order[32] = {0,  16, 1,  17, 2,  18, 3,  19, 4,  20, 5,
                                                         21, 6,  22, 7,  23, 8,  24, 9,  25, 10, 26,
                                                         11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i idx = _mm512_load_si512(order);
  const index_t last = std::max<index_t>(nk - 1, 0);
  for (index_t j = 0; j < kp; j += 2) {
    const KV* a = v + std::min(j, last) * ldv;  // rows past nk: loads masked off
    const KV* b = v + std::min(j + 1, last) * ldv;
    const bool ha = j < nk, hb = j + 1 < nk;
    bf16* o = out + j * dvp;
    for (index_t c = 0; c < dvp; c += 16) {
      const __mmask16 m = first_lanes(d_v - c), ma = ha ? m : __mmask16(0),
                      mb = hb ? m : __mmask16(0);
      __m512i pair;  // 16-bit lanes 0-15: a[c, c+16) as bf16; lanes 16-31: b's
      if constexpr (std::is_same_v<KV, float>) {
        pair = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(mb, b + c),
                                            _mm512_maskz_loadu_ps(ma, a + c));
      } else {
        const __m256i lo = _mm256_maskz_loadu_epi16(ma, a + c),
                      hi = _mm256_maskz_loadu_epi16(mb, b + c);
        pair = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
      }
      _mm512_storeu_si512(o + 2 * c, _mm512_permutexvar_epi16(idx, pair));
    }
  }
}

// C (m x n) (=|+=) A (m x 2 kw) B (2 kw x n), n a multiple of 16: the
// micro-kernel swept over the tile, tails by smaller instances.
template <bool Acc>
inline void dot_block(index_t m, index_t n, index_t kw, const bf16* a, index_t lda, const bf16* b, index_t ldb,
                      float* c, index_t ldc, const float* rs = nullptr) noexcept {
  constexpr int MR = 6, NR = 4;
  // bf16 buffers read as 32-bit words: the scratch is raw memory written
  // through memcpy (bf16_pack.hpp) and read here by vector loads, which may alias.
  const auto* aw = reinterpret_cast<const std::uint32_t*>(static_cast<const void*>(a));
  const auto* bw = reinterpret_cast<const std::uint32_t*>(static_cast<const void*>(b));
  lda /= 2, ldb /= 2;
  for (index_t j = 0; j < n; j += NR * 16) {
    const int nvec = int(std::min<index_t>(NR, (n - j) / 16));
    for (index_t i = 0; i < m; i += MR) {
      const int rows = int(std::min<index_t>(MR, m - i));
      if (rows == MR && nvec == NR)
        dot_micro<MR, NR, Acc>(kw, aw + i * lda, lda, bw + j, ldb, c + i * ldc + j, ldc, rs ? rs + i : nullptr);
      else
        dot_tail<MR, NR, Acc>(rows, nvec, kw, aw + i * lda, lda, bw + j, ldb, c + i * ldc + j, ldc,
                              rs ? rs + i : nullptr);
    }
  }
}

}  // namespace detail

/// The AVX512_BF16 engine (kernels/gemm_engine.hpp): bf16 Q, K^T (VNNI
/// pairs), P and V (VNNI pairs), fp32 accumulation by vdpbf16ps. Q is
/// scaled in fp32 and rounded once; P is rounded once per tile after the
/// fp32 softmax. vdpbf16ps treats bf16 subnormal inputs as zero.
struct bf16_dot_engine {
  using arch = avx512;
  using operand = bf16;
  static constexpr const char* name = "avx512-bf16";
  static constexpr index_t block_q = 48;
  static constexpr index_t block_kv = 256;
  static constexpr bool reads_v_in_place = false;

  static constexpr index_t q_ld(index_t d) noexcept { return round_up(d, 2); }
  static constexpr index_t kt_tile(index_t d) noexcept { return round_up(d, 2) * block_kv; }
  static constexpr index_t v_ld(index_t d_v) noexcept { return round_up(d_v, 16); }
  static constexpr index_t v_tile(index_t d_v) noexcept { return block_kv * v_ld(d_v); }
  static constexpr index_t acc_ld(index_t d_v) noexcept { return round_up(d_v, 16); }
  static constexpr index_t scratch_floats(index_t, index_t) noexcept { return block_q * block_kv / 2; }

  static void prepare() {}
  static void begin() noexcept {}
  static void end() noexcept {}

  template <class KV>
  static void pack_k(const KV* k, index_t ldk, index_t d, index_t nk, bf16* tile) noexcept {
    detail::pack_kt_vnni<avx512>(k, ldk, d, q_ld(d), nk, block_kv, tile);
  }
  template <class KV>
  static void pack_v(const KV* v, index_t ldv, index_t d_v, index_t nk, bf16* tile) noexcept {
    if constexpr (std::is_same_v<KV, float> || std::is_same_v<KV, bf16>)
      detail::pack_v_pairs<KV>(v, ldv, d_v, v_ld(d_v), nk, block_kv, tile);
    else
      detail::pack_v_vnni<avx512>(v, ldv, d_v, v_ld(d_v), nk, block_kv, tile);
  }
  static void load_q(const float* q, index_t d, float scale, bf16* dst) noexcept {
    detail::scaled_row_to_bf16<avx512>(q, d, scale, q_ld(d), dst);
  }
  static void qk(index_t nb, index_t nk, index_t d, const bf16* q, const bf16* kt, float* s) noexcept {
    detail::dot_block<false>(nb, round_up(nk, 16), q_ld(d) / 2, q, q_ld(d), kt, 2 * block_kv, s, block_kv);
  }
  static void pv(index_t nb, index_t nk, index_t d_v, float* p, const bf16* v, index_t, float* acc,
                 const float* alpha, float* scratch) noexcept {
    bf16* p16 = reinterpret_cast<bf16*>(scratch);
    const index_t kp = round_up(nk, 2);
    detail::probabilities_to_bf16_ne(p, block_kv, nb, nk, p16, block_kv);
    if (alpha)
      detail::dot_block<true>(nb, acc_ld(d_v), kp / 2, p16, block_kv, v, 2 * v_ld(d_v), acc,
                              acc_ld(d_v), alpha);
    else
      detail::dot_block<false>(nb, acc_ld(d_v), kp / 2, p16, block_kv, v, 2 * v_ld(d_v), acc,
                               acc_ld(d_v));
  }
};

LONGCTX_NAMESPACE_END

#endif  // LONGCTX_HAS_AVX512_BF16
