// Linear-attention state carried across blocks (segments, chunks): for one
// head, M (d_k, d_v) and z (d_k). Retrieval reads the state of EARLIER blocks
// only, out = phi(Q) M / norm; the update folds a finished block in afterwards.
// Shared by Infini-attention (ELU+1, z-denominator, linear/delta) and FLASH's
// causal linear part (identity, 1/C mean over blocks, linear). Kernels are
// noexcept and do not allocate: callers pass scratch of the advertised size.
//
// Usage, one head, blocks g = 0, 1, ... in order (the state starts at zero,
// or at a user-supplied M, z):
//   std::vector<float> m(d_k * linear_state_ld(d_v)), z(d_k), scratch(...);
//   linear_state_view<float> st{m.data(), z.data(), d_k, d_v, linear_state_ld(d_v)};
//   // Infini-attention segment: gate the memory into the local output o_g.
//   linear_retrieve<Arch, float>(st, feature_map::elu_plus_one, {}, q_g, o_g, {gate, one_minus_gate}, scratch);
//   linear_update<Arch, float>(st, feature_map::elu_plus_one, update_rule::delta, {}, k_g, v_g, scratch);
//   // FLASH causal chunk g: add Q_lin S / (C g) to the quadratic part.
//   linear_retrieve<Arch, float>(st, feature_map::identity, {normaliser::block_mean, 1e-6f, double(C) * g},
//                                q_lin_g, o_g, {ones, ones}, scratch);
//   linear_update<Arch, float>(st, feature_map::identity, update_rule::linear, {}, k_lin_g, v_g, scratch);
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "micro_gemm.hpp"
#include "tiling.hpp"
#include "../simd/blas1.hpp"
#include "../simd/math.hpp"
#include "../tensor/view.hpp"

LONGCTX_NAMESPACE_BEGIN

/// phi, applied to queries and keys before they touch a linear state.
LONGCTX_UNTAGGED_BEGIN
enum class feature_map {
  elu_plus_one,  ///< ELU(x) + 1 = x + 1 (x > 0), exp(x) (x <= 0): positive, Infini-attention
  identity,      ///< phi(x) = x: FLASH's linear part
};
LONGCTX_UNTAGGED_END

/// How a retrieval phi(q) M is normalised.
LONGCTX_UNTAGGED_BEGIN
enum class normaliser {
  z_denominator,  ///< / (phi(q) . z), per query row (linear attention, Infini-attention)
  block_mean,     ///< / divisor, one scalar for the call (FLASH: C x number of visible blocks)
  none,           ///< no division
};
LONGCTX_UNTAGGED_END

/// How a finished block (K, V) is folded into a linear state (z +=
/// sum_t phi(K_t) under both rules).
LONGCTX_UNTAGGED_BEGIN
enum class update_rule {
  linear,  ///< M += phi(K)^T V
  delta,   ///< M += phi(K)^T (V - retrieve(old state, K)): every key of the block
           ///< reads the state as it was BEFORE the block (whole-block rule, not
           ///< the per-token DeltaNet recurrence)
};
LONGCTX_UNTAGGED_END
// z += sum_t phi(K_t) for both rules (z is unused by block_mean and none).

// The normalisation of one retrieval.
//  - z_denominator: when z is all zero (nothing folded yet, the first
//    segment) the retrieval is exactly 0: 0/0 is not a number, and an empty
//    memory has nothing to say. Otherwise a denominator with |den| < epsilon
//    is replaced by epsilon with den's sign (+epsilon for 0), so tiny or
//    cancelling denominators (possible with the identity map) give a large
//    but finite result, never inf or NaN. epsilon must be > 0.
//  - block_mean: retrieval / divisor; divisor 0 (no visible block) gives 0.
struct retrieval_norm {
  normaliser kind = normaliser::z_denominator;
  float epsilon = 1e-6f;
  double divisor = 1.0;
};

// out = a[c] * retrieval + b[c] * out, per value column c (d_v floats each).
// Null a and b (the default) mean overwrite: out = retrieval. Infini's gate
// is a = sigmoid(beta), b = 1 - sigmoid(beta); FLASH's sum is a = b = 1.
struct retrieval_combine {
  const float* a = nullptr;
  const float* b = nullptr;
};

// Row stride of M that every backend accepts: a multiple of the widest
// vector (16 floats), so one state layout serves all archs. Columns
// [d_v, ld_m) are padding and must stay zero (the kernels keep them so).
constexpr index_t linear_state_ld(index_t d_v) noexcept { return round_up(d_v, 16); }

/// One head's linear-attention state, as Infini-attention's memory(b, m)
/// returns it: M (d_k, d_v) with row stride ld_m (see linear_state_ld; for a
/// double state any ld_m >= d_v), z (d_k) contiguous. S is float (the SIMD
/// path) or double (accumulation in double, plain loops). Non-owning.
template <class S>
struct linear_state_view {
  S* m = nullptr;  ///< M, (d_k, ld_m); columns [d_v, ld_m) stay zero
  S* z = nullptr;  ///< z, (d_k)
  index_t d_k = 0, d_v = 0, ld_m = 0;  ///< the shape and M's row stride

  operator linear_state_view<const S>() const noexcept
    requires(!std::is_const_v<S>)
  {
    return {m, z, d_k, d_v, ld_m};
  }
};

// Rows processed per step: bounds scratch, and amortises the state's C-tile
// loads in the update GEMM (k = block rows deep).
inline constexpr index_t linear_state_block = 128;

// Elements of S (the state's type) of scratch linear_retrieve / linear_update
// need, for any arch.
constexpr index_t linear_retrieve_scratch(index_t d_k, index_t d_v) noexcept {
  const index_t R = linear_state_block, dvp = linear_state_ld(d_v);
  return R * d_k + R * dvp + R;
}
constexpr index_t linear_update_scratch(index_t d_k, index_t d_v) noexcept {
  const index_t R = linear_state_block, dvp = linear_state_ld(d_v);
  return 2 * R * d_k + 2 * R * dvp + d_k * dvp + 2 * d_k + R;
}

// ---- Feature maps. ---------------------------------------------------------

// y[i] = phi(x[i]) for n floats (x == y allowed). NaN stays NaN.
template <arch_tag Arch>
inline void apply_feature_map(feature_map f, const float* x, float* y, index_t n) noexcept {
  if (f == feature_map::identity) {
    if (x != y) std::memmove(y, x, sizeof(float) * std::size_t(n));
    return;
  }
  using V = vec<float, Arch>;
  constexpr index_t W = V::width;
  const V zero = V::zero(), one = V::broadcast(1.0f);
  // exp of the positive lanes is computed and discarded: cheaper than a
  // branch per lane, and exp saturates to +inf without trapping.
  const auto elu1 = [&](V v) { return select(cmp_lt(zero, v), v + one, exp(v)); };
  index_t i = 0;
  for (; i + W <= n; i += W) elu1(V::load(x + i)).store(y + i);
  if (i < n) elu1(V::load_partial(x + i, int(n - i))).store_partial(y + i, int(n - i));
}

// The same map in double (the double-state path and the oracle).
inline double feature_value(feature_map f, double x) noexcept {
  if (f == feature_map::identity) return x;
  return x > 0 ? x + 1.0 : std::exp(x);
}

namespace detail {

template <class S>
inline bool all_zero(const S* z, index_t n) noexcept {
  for (index_t i = 0; i < n; ++i)
    if (z[i] != S(0)) return false;
  return true;
}

// True when every retrieval of this state is 0 whatever the query: empty
// memory under z_denominator, no visible block under block_mean.
inline bool retrieval_vanishes(const retrieval_norm& nm, bool z_empty) noexcept {
  return (nm.kind == normaliser::z_denominator && z_empty) ||
         (nm.kind == normaliser::block_mean && nm.divisor == 0.0);
}

// The factor a row's phi(q) M is multiplied by (see retrieval_norm).
inline double norm_factor(const retrieval_norm& nm, bool z_empty, double den) noexcept {
  switch (nm.kind) {
    case normaliser::z_denominator: {
      if (z_empty) return 0.0;
      const double e = nm.epsilon;
      if (std::abs(den) < e) den = den < 0 ? -e : e;  // a NaN den fails the test and stays NaN
      return 1.0 / den;
    }
    case normaliser::block_mean: return nm.divisor == 0.0 ? 0.0 : 1.0 / nm.divisor;
    case normaliser::none: break;
  }
  return 1.0;
}

// phi of rows [r0, r0 + nr) of x (n, d) into dst (nr, d) contiguous.
template <arch_tag Arch>
inline void feature_rows(feature_map f, matrix_view<const float> x, index_t r0, index_t nr, float* dst) noexcept {
  const index_t d = x.extent(1);
  for (index_t r = 0; r < nr; ++r) apply_feature_map<Arch>(f, x.data() + (r0 + r) * x.stride(0), dst + r * d, d);
}
inline void feature_rows_f64(feature_map f, matrix_view<const float> x, index_t r0, index_t nr,
                             double* dst) noexcept {
  const index_t d = x.extent(1);
  for (index_t r = 0; r < nr; ++r)
    for (index_t p = 0; p < d; ++p) dst[r * d + p] = feature_value(f, x(r0 + r, p));
}

// Float state: num (nr, dvw) = phi (nr, d_k) M and factor[r] for each row
// (dvw = d_v rounded up to whole vectors).
template <arch_tag Arch>
inline void retrieve_rows_f32(linear_state_view<const float> st, const retrieval_norm& nm, bool z_empty,
                              const float* phi, index_t nr, float* num, float* factor) noexcept {
  const index_t d_k = st.d_k, dvw = round_up(st.d_v, Arch::width);
  block_gemm<Arch, false>(nr, dvw, d_k, phi, d_k, st.m, st.ld_m, num, dvw);
  for (index_t r = 0; r < nr; ++r) {
    const double den = nm.kind == normaliser::z_denominator && !z_empty
                           ? double(dot<Arch>(phi + r * d_k, st.z, d_k))
                           : 0.0;
    factor[r] = float(norm_factor(nm, z_empty, den));
  }
}

// Double state: res[c] = (phi M)[c] * factor in double for one row.
inline double retrieve_row_f64(linear_state_view<const double> st, const retrieval_norm& nm, bool z_empty,
                               const double* phi, double* res) noexcept {
  double den = 0;
  if (nm.kind == normaliser::z_denominator && !z_empty)
    for (index_t p = 0; p < st.d_k; ++p) den += phi[p] * st.z[p];
  const double f = norm_factor(nm, z_empty, den);
  for (index_t c = 0; c < st.d_v; ++c) res[c] = 0;
  for (index_t p = 0; p < st.d_k; ++p) {
    const double* mr = st.m + p * st.ld_m;
    for (index_t c = 0; c < st.d_v; ++c) res[c] += phi[p] * mr[c];
  }
  for (index_t c = 0; c < st.d_v; ++c) res[c] *= f;
  return f;
}

}  // namespace detail

// ---- Retrieval. --------------------------------------------------------------

// out (n, d_v) = combine(phi(q) M * norm) for the n query rows of q (n, d_k),
// reading the state only. Inner strides 1; scratch: linear_retrieve_scratch
// elements of S. A row's result does not depend on n or on the other rows,
// so streaming token by token gives the same bits as a whole block.
template <arch_tag Arch, class S>
void linear_retrieve(linear_state_view<const S> st, feature_map phi_kind, const retrieval_norm& nm,
                     matrix_view<const float> q, matrix_view<float> out, retrieval_combine comb,
                     S* scratch) noexcept {
  using V = vec<float, Arch>;
  constexpr index_t W = V::width;
  const index_t n = q.extent(0), d_k = st.d_k, d_v = st.d_v;
  LONGCTX_ASSERT(q.extent(1) == d_k && out.extent(0) == n && out.extent(1) == d_v);
  LONGCTX_ASSERT((comb.a == nullptr) == (comb.b == nullptr));
  const bool z_empty = detail::all_zero(st.z, d_k);
  const index_t R = linear_state_block, dvw = round_up(d_v, W);
  const bool vanishes = detail::retrieval_vanishes(nm, z_empty);
  for (index_t r0 = 0; r0 < n; r0 += R) {
    const index_t nr = std::min(R, n - r0);
    if constexpr (std::is_same_v<S, float>) {
      LONGCTX_ASSERT(st.ld_m % W == 0 && st.ld_m >= dvw);
      float* phi = scratch;            // (R, d_k)
      float* num = phi + R * d_k;      // (R, dvw)
      float* factor = num + R * dvw;   // (R)
      if (vanishes) {  // the retrieval is exactly 0: skip the GEMM
        std::fill(num, num + nr * dvw, 0.0f);
        std::fill(factor, factor + nr, 0.0f);
      } else {
        detail::feature_rows<Arch>(phi_kind, q, r0, nr, phi);
        detail::retrieve_rows_f32<Arch>(st, nm, z_empty, phi, nr, num, factor);
      }
      for (index_t r = 0; r < nr; ++r) {
        const float* src = num + r * dvw;
        float* dst = out.data() + (r0 + r) * out.stride(0);
        // The factor multiplies (1/den, not a division) so a row's value is
        // the same expression in every path and every arch.
        const V f = V::broadcast(factor[r]);
        index_t c = 0;
        if (comb.a) {
          for (; c + W <= d_v; c += W)
            fma(V::load(comb.a + c), V::load(src + c) * f, V::load(comb.b + c) * V::load(dst + c)).store(dst + c);
          if (c < d_v) {
            const int t = int(d_v - c);
            fma(V::load_partial(comb.a + c, t), V::load(src + c) * f,
                V::load_partial(comb.b + c, t) * V::load_partial(dst + c, t))
                .store_partial(dst + c, t);
          }
        } else {
          for (; c + W <= d_v; c += W) (V::load(src + c) * f).store(dst + c);
          if (c < d_v) (V::load(src + c) * f).store_partial(dst + c, int(d_v - c));
        }
      }
    } else {
      double* phi = scratch;        // (R, d_k)
      double* res = phi + R * d_k;  // (d_v)
      detail::feature_rows_f64(phi_kind, q, r0, nr, phi);
      for (index_t r = 0; r < nr; ++r) {
        if (vanishes)
          std::fill(res, res + d_v, 0.0);
        else
          detail::retrieve_row_f64(st, nm, z_empty, phi + r * d_k, res);
        float* dst = out.data() + (r0 + r) * out.stride(0);
        for (index_t c = 0; c < d_v; ++c) {
          const float x = float(res[c]);
          dst[c] = comb.a ? std::fma(comb.a[c], x, comb.b[c] * dst[c]) : x;
        }
      }
    }
  }
}

// ---- Update. ------------------------------------------------------------------

// Fold a finished block into the state: keys k (n, d_k), values v (n, d_v);
// rule as above (delta normalises its retrieval with `nm`). Every key of the
// block sees the state from before the block. Inner strides 1; scratch:
// linear_update_scratch elements of S.
template <arch_tag Arch, class S>
void linear_update(linear_state_view<S> st, feature_map phi_kind, update_rule rule, const retrieval_norm& nm,
                   matrix_view<const float> k, matrix_view<const float> v, S* scratch) noexcept {
  using V = vec<float, Arch>;
  constexpr index_t W = V::width;
  const index_t n = k.extent(0), d_k = st.d_k, d_v = st.d_v;
  LONGCTX_ASSERT(k.extent(1) == d_k && v.extent(0) == n && v.extent(1) == d_v);
  if (n == 0) return;
  const bool z_empty = detail::all_zero(st.z, d_k);
  // Delta against a state that retrieves 0 is the linear rule, exactly.
  const bool delta = rule == update_rule::delta && !detail::retrieval_vanishes(nm, z_empty);
  const index_t R = linear_state_block, dvw = round_up(d_v, W);

  if constexpr (std::is_same_v<S, float>) {
    LONGCTX_ASSERT(st.ld_m % W == 0 && st.ld_m >= dvw);
    float* phi = scratch;           // (R, d_k)   phi(K) rows
    float* phit = phi + R * d_k;    // (d_k, R)   phi(K)^T, the update GEMM's A
    float* vp = phit + d_k * R;     // (R, dvw)   V (delta: V - retrieval), padded
    float* num = vp + R * dvw;      // (R, dvw)   delta: retrieval numerators
    float* dm = num + R * dvw;      // (d_k, dvw) delta: the block's change of M
    float* dz = dm + d_k * dvw;     // (d_k)      the block's change of z
    float* ones = dz + d_k;         // (d_k)      row scale 1 of the accumulating GEMM
    float* factor = ones + d_k;     // (R)
    std::fill(dz, dz + d_k, 0.0f);
    std::fill(ones, ones + d_k, 1.0f);
    // Delta reads M_old for every key of the block, so its change collects
    // in dm and lands after the last row block; linear accumulates in place.
    if (delta) std::fill(dm, dm + d_k * dvw, 0.0f);
    float* target = delta ? dm : st.m;
    const index_t ld_t = delta ? dvw : st.ld_m;
    for (index_t r0 = 0; r0 < n; r0 += R) {
      const index_t nr = std::min(R, n - r0);
      detail::feature_rows<Arch>(phi_kind, k, r0, nr, phi);
      for (index_t r = 0; r < nr; ++r) {
        const float* pr = phi + r * d_k;
        for (index_t p = 0; p < d_k; ++p) phit[p * nr + r] = pr[p];
        axpy<Arch>(1.0f, pr, dz, d_k);
      }
      const float* b = vp;
      index_t ldb = dvw;
      if (!delta && d_v % W == 0) {  // V read in place: whole vectors per row, nothing to pad
        b = v.data() + r0 * v.stride(0);
        ldb = v.stride(0);
      } else {
        for (index_t r = 0; r < nr; ++r) {
          float* dst = vp + r * dvw;
          std::memcpy(dst, v.data() + (r0 + r) * v.stride(0), sizeof(float) * std::size_t(d_v));
          std::fill(dst + d_v, dst + dvw, 0.0f);
        }
        if (delta) {
          detail::retrieve_rows_f32<Arch>(st, nm, z_empty, phi, nr, num, factor);
          for (index_t r = 0; r < nr; ++r) {
            const V f = V::broadcast(factor[r]);
            for (index_t c = 0; c < dvw; c += W)
              fnma(V::load(num + r * dvw + c), f, V::load(vp + r * dvw + c)).store(vp + r * dvw + c);
          }
        }
      }
      block_gemm<Arch, true>(d_k, dvw, nr, phit, nr, b, ldb, target, ld_t, ones);
    }
    if (delta)
      for (index_t p = 0; p < d_k; ++p) axpy<Arch>(1.0f, dm + p * dvw, st.m + p * st.ld_m, dvw);
    axpy<Arch>(1.0f, dz, st.z, d_k);
  } else {
    // Double state: everything in double, plain loops (accuracy, not speed).
    double* phi = scratch;         // (R, d_k)
    double* res = phi + R * d_k;   // (R, d_v)
    double* dm = res + R * d_v;    // (d_k, d_v)
    double* dz = dm + d_k * d_v;   // (d_k)
    std::fill(dm, dm + d_k * d_v, 0.0);
    std::fill(dz, dz + d_k, 0.0);
    for (index_t r0 = 0; r0 < n; r0 += R) {
      const index_t nr = std::min(R, n - r0);
      detail::feature_rows_f64(phi_kind, k, r0, nr, phi);
      for (index_t r = 0; r < nr; ++r) {
        const double* pr = phi + r * d_k;
        double* rr = res + r * d_v;
        if (delta)
          detail::retrieve_row_f64(st, nm, z_empty, pr, rr);
        else
          std::fill(rr, rr + d_v, 0.0);
        for (index_t c = 0; c < d_v; ++c) rr[c] = double(v(r0 + r, c)) - rr[c];
        for (index_t p = 0; p < d_k; ++p) {
          dz[p] += pr[p];
          double* dr = dm + p * d_v;
          for (index_t c = 0; c < d_v; ++c) dr[c] += pr[p] * rr[c];
        }
      }
    }
    for (index_t p = 0; p < d_k; ++p) {
      for (index_t c = 0; c < d_v; ++c) st.m[p * st.ld_m + c] += dm[p * d_v + c];
      st.z[p] += dz[p];
    }
  }
}

LONGCTX_NAMESPACE_END
