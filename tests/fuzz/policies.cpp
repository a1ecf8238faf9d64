// libFuzzer harness: every sequence policy's forward on random splits. The
// input bytes pick a policy (every bounded-cache rule, in f32, bf16, f16 and
// int8 storage, with its options: budget, prefill mode, score aggregation,
// kept current token, layout, cache-relative positions, per-channel key
// scales, scale, bf16 compute; dense in f32 and f16; Infini with the linear
// and delta rules in f32, bf16, f16, int8 storage and double memory, with
// its gates, feature map, sharing, read-only memory and bf16 compute; FLASH causal and non-causal
// with each norm, scale and bias), small dims (odd sizes, b = 0 too), a
// stream of up to 40 tokens (values from a seeded generator in one of
// several distributions, then byte-chosen overrides: subnormal to FLT_MAX
// for caches, up to 1e15 for Infini and FLASH) in one of three memory layouts, its split into calls (lengths
// 0..12), a thread count, the calls before which the state is snapshotted
// and restored into another state (fresh or used), separate memory / linear
// queries and keys, and bad calls inserted between the good ones (wrong
// shapes, null data, out aliasing an input, interleaved strides, overflowing
// extents, a state of another configuration). Properties, not only crashes:
//   - only longctx::invalid_argument escapes; every bad call throws it,
//     naming the argument, and leaves the state bit for bit as it was;
//   - the stream with its bad calls and snapshot/restore cuts gives the bits
//     (outputs and final state) of the same split run uninterrupted;
//   - a thread_pool of 2 or 3 threads gives the bits of the serial executor;
//   - where the protocol suite asserts it (Infini, causal FLASH, caches with
//     prefill_mode::token_by_token), the split gives the bits of one call
//     for the whole stream and of one call per token (compared as the
//     protocol suite does, == with NaN equal to NaN; with non-finite input
//     only which outputs are non-finite);
//   - every output element is written and nothing around it; finite inputs
//     within the value contract (README, Safety) give finite outputs;
//   - the state counts the tokens it has seen; a bounded cache never holds
//     more than its budget; footprint() is constant once a cache is full
//     (Infini, FLASH: from make_state on).
// Any other exception, a sanitizer report or a broken property aborts.
//
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -Iinclude \
//       -I/usr/include/eigen3 tests/fuzz/policies.cpp -o policies
//   ./policies -max_total_time=600 tests/fuzz/corpus/policies
// tools/fuzz policies 600 wraps this (corpus: tests/fuzz/corpus/policies,
// grown by the runs); -write_seeds=DIR writes a few inputs of every policy
// to DIR; -nonfinite=1 adds NaN and infinities to the inputs; POLICIES_VERBOSE=1 in
// the environment prints each input's configuration.
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <longctx/policies/dense.hpp>
#include <longctx/policies/flash.hpp>
#include <longctx/policies/infini.hpp>
#include <longctx/policies/tova.hpp>

#include "harness.hpp"
#include "policy_list.hpp"

using namespace longctx;

namespace {

constexpr index_t max_tokens = 40;
constexpr std::size_t max_calls = 64;
// Linear states (Infini, FLASH) overflow like a float GEMM (README, Safety:
// finite while every term fits float): their outputs are checked finite for
// inputs up to this size.
constexpr float linear_finite_bound = 100.0f;
// 16-bit storage overflows to infinity (f16 from 65520, bf16 from about
// 3.396e38; a rotated key grows by up to sqrt 2): caches storing them are
// checked finite below these.
constexpr float f16_finite_bound = 30000.0f;
constexpr float bf16_finite_bound = 3.3e38f;
// cache_relative keys are RoPE outputs, whose pairs have a norm within
// FLT_MAX (re-rotation keeps it): inputs stay below this.
constexpr float rotated_bound = 2.2e38f;

// What the current input runs (printed with a broken property).
std::string context;
// -nonfinite=1: overrides may also write NaN and +-inf, and f16 storage may
// overflow (outside the value contract: no finiteness check, and across
// splits and threads only which outputs are non-finite is compared).
bool nonfinite = false;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz property broken: %s\n%s\n", what, context.c_str());
  std::abort();
}

// The fuzzer's bytes, front to back; 0 once they run out.
struct byte_reader {
  const std::uint8_t* p;
  std::size_t n;
  bool empty() const { return n == 0; }
  unsigned u8() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  unsigned u16() {
    const unsigned lo = u8();
    return lo | (u8() << 8);
  }
  std::uint32_t u32() {
    const std::uint32_t lo = u16();
    return lo | (std::uint32_t(u16()) << 16);
  }
};

// Outputs start as this signalling NaN: arithmetic never produces it, so an
// element still holding it was not written.
const float unwritten = std::bit_cast<float>(0x7fa5a5a5u);
bool same_bits(float a, float b) { return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b); }
// The protocol suite's comparison: == elementwise (so -0 == 0), NaN equal to NaN.
bool same_values(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) {
      std::fprintf(stderr, "first difference at element %zu (of (b, h, n, d_v)): %.9g vs %.9g\n", i,
                   double(a[i]), double(b[i]));
      return false;
    }
  return true;
}

// Non-finite inputs: the same outputs are non-finite.
bool same_finiteness(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::isfinite(a[i]) != std::isfinite(b[i])) {
      std::fprintf(stderr, "element %zu (of (b, h, n, d_v)) finite in one run only: %.9g vs %.9g\n", i,
                   double(a[i]), double(b[i]));
      return false;
    }
  return true;
}

// A (b, h, n, d) tensor in one of three layouts: (b, h, n, d) contiguous,
// (b, n, h, d) (what a fused QKV projection gives), or (b, h, n, d) with
// rows padded by 1 to 3 elements. The padding holds `fill`.
struct tensor {
  index_t b = 0, h = 0, n = 0, d = 0;
  std::array<index_t, 4> strides{};
  std::vector<float> buf;
  tensor() = default;
  tensor(index_t b_, index_t h_, index_t n_, index_t d_, unsigned layout, float fill) : b(b_), h(h_), n(n_), d(d_) {
    index_t r = d;
    switch (layout % 3) {
      case 0: strides = {h * n * d, n * d, d, 1}; break;
      case 1: strides = {n * h * d, d, h * d, 1}; break;
      default:
        r = d + 1 + index_t(layout / 3 % 3);
        strides = {h * n * r, n * r, r, 1};
    }
    buf.assign(std::size_t(std::max<index_t>(1, b * h * n * r)), fill);
  }
  std::size_t offset(index_t bi, index_t hi, index_t t, index_t c) const {
    return std::size_t(bi * strides[0] + hi * strides[1] + t * strides[2] + c);
  }
  using E = tensor4_view<float>::extents_type;
  tensor4_view<float> view() { return tensor4_view<float>(buf.data(), E(b, h, n, d), strides); }
  tensor4_view<const float> cview() const { return tensor4_view<const float>(buf.data(), E(b, h, n, d), strides); }
  // The elements in (b, h, n, d) order.
  std::vector<float> canonical() const {
    std::vector<float> out;
    out.reserve(std::size_t(b * h * n * d));
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t hi = 0; hi < h; ++hi)
        for (index_t t = 0; t < n; ++t)
          for (index_t c = 0; c < d; ++c) out.push_back(buf[offset(bi, hi, t, c)]);
    return out;
  }
  // True when every element outside the view still holds `fill`.
  bool padding_is(float fill) const {
    std::vector<char> inside(buf.size(), 0);
    for (index_t bi = 0; bi < b; ++bi)
      for (index_t hi = 0; hi < h; ++hi)
        for (index_t t = 0; t < n; ++t)
          for (index_t c = 0; c < d; ++c) inside[offset(bi, hi, t, c)] = 1;
    for (std::size_t i = 0; i < buf.size(); ++i)
      if (!inside[i] && !same_bits(buf[i], fill)) return false;
    return true;
  }
};

// Values the overrides write: zeros, tiny, subnormal, f16's limits, large,
// and huge (logits past FLT_MAX, mixed-sign overflows, V sums near it);
// clamped to the policy's cap. -nonfinite=1: the last three are NaN, +-inf.
constexpr int special_count = 20;
constexpr float specials[special_count] = {0.0f,  -0.0f,  1.0f,  -1.0f,  0.5f,   1e-40f, -1e-30f,
                                           100.0f, -1e3f, 3e4f,  65504.f, 7e4f,  1e6f,   -1e9f,
                                           1e12f, -9e14f, 1e19f, -1e30f,  3e38f, -3.4028235e38f};

// The stream: q, k, v (and, when `extra`, separate memory / linear queries
// and keys q2, k2) of n tokens, padding NaN (a kernel reading outside a view
// makes its output NaN). Values are clamped to +-cap (f16 storage: within
// its range, but with -nonfinite=1).
struct stream {
  attention_dims dims{};  // d_v resolved
  index_t n = 0;
  tensor q, k, v, q2, k2;
  bool extra = false;
  float max_abs = 0, max_kv = 0;  // over every value; over what K/V storage holds

  stream(const attention_dims& a, index_t n_, unsigned layout, bool extra_, bool wild, float cap, byte_reader& in)
      : dims(a), n(n_), extra(extra_) {
    const float pad = std::numeric_limits<float>::quiet_NaN();
    q = tensor(a.b, a.h, n, a.d, layout, pad);
    k = tensor(a.b, a.h_kv, n, a.d, layout, pad);
    v = tensor(a.b, a.h_kv, n, a.d_v, layout, pad);
    if (extra) {
      q2 = tensor(a.b, a.h, n, a.d, layout / 9, pad);
      k2 = tensor(a.b, a.h_kv, n, a.d, layout / 9, pad);
    }
    const unsigned dist = in.u8() % 7;
    std::mt19937 g(in.u32());
    std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
    std::uniform_int_distribution<int> small(-3, 3), expo(-20, 20);
    const float constant = unit(g) * 4.0f;
    auto value = [&] {
      switch (dist) {
        case 0: return unit(g);
        case 1: return float(small(g));                            // ties everywhere
        case 2: return 8.0f * unit(g);
        case 3: return g() % 5 == 0 ? 1.0f : 0.0f;                 // mostly zeros
        case 4: return std::ldexp(unit(g), expo(g));               // magnitudes 2^-20 .. 2^20
        case 5: return constant;                                   // one value
        default: return std::ldexp(unit(g), expo(g) % 8 + 8);      // up to 2^15
      }
    };
    std::vector<tensor*> all{&q, &k, &v};
    if (extra) all.insert(all.end(), {&q2, &k2});
    std::vector<std::size_t> offsets;  // every element of every tensor, in order
    std::vector<tensor*> owner;
    for (tensor* t : all)
      for (index_t bi = 0; bi < t->b; ++bi)
        for (index_t hi = 0; hi < t->h; ++hi)
          for (index_t i = 0; i < t->n; ++i)
            for (index_t c = 0; c < t->d; ++c) {
              t->buf[t->offset(bi, hi, i, c)] = std::clamp(value(), -cap, cap);
              offsets.push_back(t->offset(bi, hi, i, c));
              owner.push_back(t);
            }
    // The rest of the input: (element, special value) overrides.
    while (!offsets.empty() && in.n >= 3) {
      const std::size_t i = in.u16() % offsets.size();
      const int code = int(in.u8() % special_count);
      const float inf = std::numeric_limits<float>::infinity();
      owner[i]->buf[offsets[i]] = wild && code >= special_count - 3
                                      ? (code == special_count - 3 ? std::nanf("") : code == special_count - 2 ? inf : -inf)
                                      : std::clamp(specials[code], -cap, cap);
    }
    for (std::size_t i = 0; i < offsets.size(); ++i) {
      const float y = owner[i]->buf[offsets[i]];
      const float x = std::isnan(y) ? std::numeric_limits<float>::infinity() : std::abs(y);
      max_abs = std::max(max_abs, x);
      if (owner[i] == &k || owner[i] == &v || owner[i] == &k2) max_kv = std::max(max_kv, x);
    }
  }
};

// ---- Policy kinds and their accessors. --------------------------------------

template <class P>
constexpr bool is_cache = requires { typename P::rule_type; };
template <class P>
constexpr bool is_flash = std::is_same_v<P, flash>;
template <class P>
constexpr bool is_bounded_cache = [] {
  if constexpr (is_cache<P>) return !P::unbounded;
  else return false;
}();
template <class P>
constexpr bool has_extra = requires(typename P::input_type in) { in.q_mem; } || is_flash<P>;

template <class P>
void set_extra(typename P::input_type& in, tensor4_view<const float> q2, tensor4_view<const float> k2) {
  if constexpr (is_flash<P>)
    in.q_lin = q2, in.k_lin = k2;
  else if constexpr (has_extra<P>)
    in.q_mem = q2, in.k_mem = k2;
}

template <class P>
typename P::input_type input(const stream& s, index_t at, index_t len) {
  typename P::input_type in{s.q.cview().tokens(at, len), s.k.cview().tokens(at, len), s.v.cview().tokens(at, len)};
  if (s.extra) set_extra<P>(in, s.q2.cview().tokens(at, len), s.k2.cview().tokens(at, len));
  return in;
}

template <class S>
std::uint64_t tokens_seen(const S& st) {
  if constexpr (requires { st.next_position(); })
    return std::uint64_t(st.next_position());
  else
    return std::uint64_t(st.tokens_seen());
}

template <class P>
bool non_causal(const P& p) {
  if constexpr (is_flash<P>)
    return p.mode == flash_mode::non_causal;
  else
    return false;
}

// Whether the protocol suite asserts split == one call for this policy.
template <class P>
bool split_exact(const P& p) {
  if constexpr (is_cache<P>)
    return p.prefill == prefill_mode::token_by_token;
  else
    return !non_causal(p);
}

// Whether finite outputs are promised (README, Safety: the value contract).
template <class P>
bool in_value_contract(const P& p, const stream& s) {
  if (!std::isfinite(s.max_abs)) return false;
  if constexpr (is_cache<P>) {  // any finite input, 16-bit storage within its range
    using KV = typename P::storage_type;
    if (std::is_same_v<KV, f16> && s.max_kv > f16_finite_bound) return false;
    if (std::is_same_v<KV, bf16> && s.max_kv > bf16_finite_bound) return false;
    return true;
  } else if constexpr (is_flash<P>) {
    return s.max_abs <= linear_finite_bound;
  } else {
    if (std::is_same_v<typename P::storage_type, f16> && s.max_kv > f16_finite_bound) return false;
    return p.phi == feature_map::elu_plus_one && s.max_abs <= linear_finite_bound;
  }
}

// The same policy in another configuration (a state of p must be rejected by it).
template <class P>
P other_configuration(P p) {
  if constexpr (is_cache<P>)
    p.budget += 1;
  else if constexpr (is_flash<P>)
    p.norm = p.norm == flash_norm::none ? flash_norm::chunk_sum : flash_norm::none;  // the bias fixes the chunk
  else
    p.segment += 1;
  return p;
}

// ---- Options: the bytes after the policy index tweak its parameters. -------

struct options {
  unsigned o1 = 0, o2 = 0, o3 = 0;
};
const float scales[4] = {0.0f, 1.0f, 0.25f, 3.0f};  // 0: unset
const float betas[6] = {0.0f, 1.5f, -2.0f, 4.0f, std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity()};

// Parameters that do not depend on the dims; cache_relative needs an even d.
template <class P>
void tweak(P& p, const options& o, std::vector<float>& bias) {
  if constexpr (is_cache<P>) {
    using Rule = typename P::rule_type;
    if constexpr (!P::unbounded) p.budget = index_t(o.o1 % 11);
    switch ((o.o1 >> 4) % 4) {
      case 0: case 1: p.prefill = prefill_mode::token_by_token; break;
      case 2: p.prefill = prefill_mode::full_then_top_k; break;
      default: p.prefill = prefill_mode::chunked, p.chunk = index_t(1 + o.o2 % 5);
    }
    if ((o.o2 >> 6) & 1) p.layout = p.layout == kv_layout::slots ? kv_layout::compacted : kv_layout::slots;
    if ((o.o3 >> 2) & 1)
      p.positions = p.positions == position_mode::absolute ? position_mode::cache_relative : position_mode::absolute;
    if (const float sc = scales[o.o3 % 4]; sc != 0.0f) p.scale = sc;
    if constexpr (std::is_same_v<typename P::storage_type, q8>)
      if ((o.o3 >> 3) & 1)
        p.keys = p.keys == key_scales::per_token ? key_scales::per_channel : key_scales::per_token;
    if constexpr (std::is_same_v<Rule, h2o_rule>) {
      p.rule.recent = index_t((o.o3 >> 4) % (p.budget + 2)) - 1;  // -1 .. budget
      p.rule.norm = (o.o3 >> 7) & 1 ? h2o_normalisation::query_count : h2o_normalisation::none;
    }
    if constexpr (std::is_same_v<Rule, sinks_rule>) p.rule.sinks = index_t((o.o3 >> 4) % (p.budget + 1));
    if constexpr (std::is_same_v<Rule, snapkv_rule>) {
      p.budget = std::max<index_t>(p.budget, 1);
      p.rule.window = 1 + index_t((o.o3 >> 4) % p.budget);
      p.rule.kernel = 1 + 2 * index_t((o.o3 >> 6) % 4);
      p.rule.pooling = (o.o2 >> 7) & 1 ? snapkv_pooling::average : snapkv_pooling::max;
      if (p.rule.reselect_every > 0) p.rule.reselect_every = 1 + index_t(o.o2 % 6);
    }
    if ((o.o1 >> 6) & 1) p.compute = compute_precision::bf16;  // prefill products (f32 where no engine)
    if ((o.o2 >> 5) & 1 && !P::unbounded && p.budget >= 1) {
      bool ok = true;
      if constexpr (std::is_same_v<Rule, sinks_rule>) ok = p.rule.sinks < p.budget;
      if (ok) p.current = current_token::kept;
    }
  } else if constexpr (is_flash<P>) {
    p.chunk = index_t(1 + o.o1 % 8);
    p.norm = static_cast<flash_norm>((o.o1 >> 3) % 4);
    if (const float sc = scales[o.o2 % 4]; sc != 0.0f) p.scale = sc;
    if ((o.o2 >> 2) & 1) {
      bias.resize(std::size_t(p.chunk * p.chunk));
      for (std::size_t i = 0; i < bias.size(); ++i) bias[i] = std::sin(float(i) * 1.7f + float(o.o3));
      p.bias = make_matrix<dynamic_extent, const float>(bias.data(), p.chunk, p.chunk);
    }
  } else {
    p.segment = index_t(1 + o.o1 % 8);
    if ((o.o1 >> 3) & 1) p.update = p.update == update_rule::linear ? update_rule::delta : update_rule::linear;
    if ((o.o1 >> 4) & 1) p.phi = feature_map::identity;
    if ((o.o1 >> 5) & 1) p.sharing = memory_sharing::per_query_head;
    if ((o.o1 >> 6) & 1) p.memory = memory_mode::read_only;
    if ((o.o1 >> 7) & 1) p.compute = compute_precision::bf16;  // local attention's products
    if ((o.o2 >> 2) & 1) p.epsilon = 1e-3f;
    if ((o.o2 >> 3) & 1) p.scale = 0.5f;
  }
}

// Parameters that depend on the dims (per-head scores need h == h_kv; gates
// come one per head or per head and value column).
template <class P>
void tweak_for(P& p, const options& o, const attention_dims& a) {
  if constexpr (is_cache<P>) {
    const unsigned agg = (o.o2 >> 3) % 3;
    p.aggregation = agg == 0   ? score_aggregation::mean_all_heads
                    : agg == 1 || a.h != a.h_kv ? score_aggregation::mean_kv_group
                                                : score_aggregation::per_head;
  } else if constexpr (!is_flash<P>) {
    const unsigned mode = (o.o2 >> 4) % 3;
    const std::size_t count = mode == 0 ? 0 : mode == 1 ? std::size_t(a.h) : std::size_t(a.h * a.d_v);
    p.beta.resize(count);
    for (std::size_t i = 0; i < count; ++i) p.beta[i] = betas[(o.o3 + 7 * i) % 6];
  }
}

// The policies, by index; visit(i, f) calls f(policy): the shared list (policy_list.hpp),
// then the other cases of the protocol suite, then a few more storage types.
template <class F>
bool visit(unsigned i, F&& f) {
  if (i < longctx_fuzz::shared_policies) return longctx_fuzz::visit_shared(i, f);
  switch (i) {
    case 11: f(snapkv{.budget = 9, .rule = {.window = 3, .kernel = 3}}); return true;  // no re-selection
    case 12: f(bounded_cache<sinks_rule, f16>{.budget = 8, .rule = {.sinks = 2},
                                              .positions = position_mode::cache_relative}); return true;
    case 13: f(bounded_cache<tova_rule, q8>{.budget = 9, .positions = position_mode::cache_relative}); return true;
    case 14: f(bounded_cache<full_rule, f16>{}); return true;
    case 15: f(basic_infini<float, bf16>{.segment = 6, .update = update_rule::delta}); return true;
    case 16: f(infini{.segment = 6, .update = update_rule::linear}); return true;
    case 17: f(flash{.chunk = 5, .mode = flash_mode::non_causal}); return true;
    case 18: f(basic_infini<float, f16>{.segment = 4}); return true;
    case 19: f(basic_infini<double>{.segment = 4, .update = update_rule::delta}); return true;
    case 20: f(bounded_cache<h2o_rule, q8>{.budget = 6, .keys = key_scales::per_channel}); return true;
    case 21: f(bounded_cache<snapkv_rule, bf16>{.budget = 6, .rule = {.window = 2, .kernel = 3}}); return true;
    case 22: f(bounded_cache<window_rule, f16>{.budget = 5}); return true;
  }
  return false;
}
constexpr unsigned policies = 23;

// ---- Bad calls. --------------------------------------------------------------

// Buffers for one bad call's views (each sized for the extents it declares,
// so a missing check shows as an accepted call, not an overflow here).
struct bad_buffers {
  std::vector<std::vector<float>> bufs;
  tensor4_view<float> make(index_t b, index_t h, index_t n, index_t d) {
    bufs.emplace_back(std::size_t(std::max<index_t>(1, b * h * n * d)), 0.25f);
    return from_bhnd(bufs.back().data(), b, h, n, d);
  }
};

enum bad_kind : unsigned {
  q_heads, q_dim, k_tokens, k_heads, v_dim, out_tokens, out_batch, out_dim, k_batch,  // shapes
  null_q, null_v, null_out,                                                        // data
  out_is_q, out_is_k, out_is_v, out_interleaves_q,                                  // aliasing
  k_strided, huge_extents,                                                          // views
  extra_shape, out_is_extra,                                                        // q_mem / q_lin, k_mem / k_lin
  other_config, blank_state,                                                        // states
  bad_kinds
};
// Not drawn by the fuzzer: a good call on a state a non-causal call consumed.
constexpr unsigned consumed_state = bad_kinds + 1;

// Runs bad call `kind` of `len` tokens on st: it must throw
// longctx::invalid_argument naming the argument (`state` once a non-causal
// call consumed st) and leave st unchanged.
template <class P>
void bad_call(const P& p, typename P::state_type& st, unsigned kind, index_t len, bool consumed) {
  using In = typename P::input_type;
  const attention_dims a = resolved(st.dims());
  const index_t b = a.b, h = a.h, hk = a.h_kv, d = a.d, dv = a.d_v;
  // Kinds whose views would be empty, or are not there, fall back to a shape error.
  const bool data = b >= 1;
  if ((kind >= null_q && kind <= out_interleaves_q && !data) || (kind == huge_extents && !data) ||
      (kind == k_strided && d < 2) ||
      ((kind == extra_shape || kind == out_is_extra) && (!has_extra<P> || !data)))
    kind = q_heads;
  if (kind == out_interleaves_q) len = std::max<index_t>(len, 2);  // two rows, or the spans do not meet
  bad_buffers bb;
  auto mq = bb.make(b, h, len, d);
  auto mk = bb.make(b, hk, len, d);
  auto mv = bb.make(b, hk, len, dv);
  auto mo = bb.make(b, h, len, dv);
  In in{mq, mk, mv};
  tensor4_view<float> out = mo;
  const char* names = "'q'";
  using E = tensor4_view<float>::extents_type;
  switch (kind) {
    case q_heads: in.q = bb.make(b, h + 1, len, d); break;
    case q_dim: in.q = bb.make(b, h, len, d + 1); break;
    case k_tokens: in.k = bb.make(b, hk, len + 1, d), names = "'k'"; break;
    case k_heads: in.k = bb.make(b, hk + 1, len, d), names = "'k'"; break;
    case v_dim: in.v = bb.make(b, hk, len, dv + 1), names = "'v'"; break;
    case out_tokens: out = bb.make(b, h, len + 1, dv), names = "'out'"; break;
    case out_batch: out = bb.make(b + 1, h, len, dv), names = "'out'"; break;
    case out_dim: out = bb.make(b, h, len, dv + 1), names = "'out'"; break;
    case k_batch: in.k = bb.make(b + 1, hk, len, d), names = "'k'"; break;
    case null_q: in.q = from_bhnd<dynamic_extent, const float>(nullptr, b, h, len, d); break;
    case null_v: in.v = from_bhnd<dynamic_extent, const float>(nullptr, b, hk, len, dv), names = "'v'"; break;
    case null_out: out = from_bhnd<dynamic_extent, float>(nullptr, b, h, len, dv), names = "'out'"; break;
    case out_is_q: case out_is_k: case out_is_v: {
      // One buffer: the input from its start, out from the middle of the input.
      const index_t rows = kind == out_is_q ? h : hk, cols = kind == out_is_v ? dv : d;
      auto whole = bb.make(1, 1, 1, b * rows * len * cols + b * h * len * dv);
      const auto input = from_bhnd<dynamic_extent, const float>(whole.data(), b, rows, len, cols);
      out = from_bhnd(whole.data() + b * rows * len * cols / 2, b, h, len, dv);
      (kind == out_is_q ? in.q : kind == out_is_k ? in.k : in.v) = input;
      names = "'out'";
      break;
    }
    case out_interleaves_q: {
      // Rows of q and out alternate in one buffer: no element shared, the spans meet.
      const index_t w = std::max(d, dv), rows = b * h * len;
      auto whole = bb.make(1, 1, 1, 2 * w * rows + w);
      const std::array<index_t, 4> st4{h * len * 2 * w, len * 2 * w, 2 * w, 1};
      in.q = tensor4_view<const float>(whole.data(), E(b, h, len, d), st4);
      out = tensor4_view<float>(whole.data() + w, E(b, h, len, dv), st4);
      names = "'out'";
      break;
    }
    case k_strided: {
      auto wide = bb.make(b, hk, len, 2 * d);
      in.k = tensor4_view<const float>(wide.data(), E(b, hk, len, d), {hk * len * 2 * d, len * 2 * d, 2 * d, 2});
      names = "'k'";
      break;
    }
    case huge_extents: {
      // Consistent shapes whose element count and reach overflow index_t.
      const index_t huge = index_t(1) << 62;
      auto one = bb.make(1, 1, 1, 8);
      in.q = tensor4_view<const float>(one.data(), E(b, h, huge, d), {0, 0, d + 4, 1});
      in.k = tensor4_view<const float>(one.data(), E(b, hk, huge, d), {0, 0, d + 4, 1});
      in.v = tensor4_view<const float>(one.data(), E(b, hk, huge, dv), {0, 0, dv + 4, 1});
      auto other = bb.make(1, 1, 1, 8);
      out = tensor4_view<float>(other.data(), E(b, h, huge, dv), {0, 0, dv + 4, 1});
      break;
    }
    case extra_shape:
      set_extra<P>(in, bb.make(b, h, len + 1, d), mk);
      names = is_flash<P> ? "'q_lin'" : "'q_mem'";
      break;
    case out_is_extra: {
      auto whole = bb.make(1, 1, 1, b * h * len * dv + b * hk * len * d);
      out = from_bhnd(whole.data(), b, h, len, dv);
      set_extra<P>(in, mq, from_bhnd<dynamic_extent, const float>(whole.data() + b * h * len * dv / 2, b, hk, len, d));
      names = "'out'";
      break;
    }
    case other_config: case consumed_state: names = "'state'"; break;
    case blank_state: {
      typename P::state_type blank{};
      try {
        p.forward(blank, in, out);
      } catch (const longctx::invalid_argument&) {
        return;
      }
      fail("a forward on a state not made by make_state was accepted");
    }
  }
  if (consumed) names = "'state'";
  const snapshot_bytes before = st.snapshot();
  try {
    if (kind == other_config)
      other_configuration(p).forward(st, in, out);
    else
      p.forward(st, in, out);
  } catch (const longctx::invalid_argument& e) {
    if (!std::strstr(e.what(), names)) {
      std::fprintf(stderr, "bad call %u: expected %s in: %s\n", kind, names, e.what());
      fail("a bad call's message does not name the argument");
    }
    if (st.snapshot() != before) fail("a rejected call changed the state");
    return;
  }
  std::fprintf(stderr, "bad call %u (%s) accepted\n", kind, names);
  fail("a bad call was accepted");
}

// ---- The runs. -----------------------------------------------------------------

// The thread pools, shared by every policy.
thread_pool& pool(std::size_t threads) {
  static thread_pool two(2), three(3);
  return threads == 3 ? three : two;
}

struct event {
  std::size_t before;  // call index (calls.size(): after the last)
  unsigned what;       // bad_kinds: snapshot/restore; else a bad call's kind
  index_t len;         // a bad call's tokens
};

struct plan {
  std::vector<index_t> calls;
  std::vector<event> events;  // only for interrupted runs
  bool dirty_target = false;  // restore into a state that has seen other tokens
  unsigned out_layout = 0;
};

struct result {
  std::vector<float> out;
  snapshot_bytes last;  // the final state
};

// Feeds a few unrelated tokens to st (a used restore target).
template <class P>
void garbage(const P& p, typename P::state_type& st) {
  const attention_dims a = resolved(st.dims());
  bad_buffers bb;
  const index_t len = 2;
  auto q = bb.make(a.b, a.h, len, a.d), k = bb.make(a.b, a.h_kv, len, a.d), v = bb.make(a.b, a.h_kv, len, a.d_v);
  p.forward(st, typename P::input_type{q, k, v}, bb.make(a.b, a.h, len, a.d_v));
}

// Runs the stream through a fresh state in calls of the plan's lengths, with
// its events when `interrupted`; checks every per-call property.
template <class P, class Exec>
result run(const P& p, const stream& s, const plan& pl, bool interrupted, Exec& exec) {
  const attention_dims& a = s.dims;
  const bool contract = in_value_contract(p, s);
  auto st = p.make_state(a);
  const std::size_t fp0 = st.footprint();
  std::size_t fp_full = 0;
  tensor out(a.b, a.h, s.n, a.d_v, pl.out_layout, unwritten);
  index_t at = 0;
  for (std::size_t i = 0; i <= pl.calls.size(); ++i) {
    if (interrupted)
      for (const event& e : pl.events) {
        if (e.before != i) continue;
        if (e.what != bad_kinds) {
          bad_call(p, st, e.what, e.len, non_causal(p) && i > 0);
          continue;
        }
        const snapshot_bytes bytes = st.snapshot();
        auto target = p.make_state(a);
        if (pl.dirty_target) garbage(p, target);
        const snapshot_bytes target_before = target.snapshot();
        try {
          target.restore(bytes);
        } catch (const longctx::invalid_argument& err) {
          if (contract) {
            std::fprintf(stderr, "%s\n", err.what());
            fail("a state's own snapshot was rejected");
          }
          if (target.snapshot() != target_before) fail("a rejected restore changed the state");
          continue;  // outside the value contract: carry on with st
        }
        if (target.snapshot() != bytes) fail("a restored snapshot does not round-trip");
        st = std::move(target);
      }
    if (i == pl.calls.size()) break;
    const index_t len = pl.calls[i];
    try {
      p.forward(st, input<P>(s, at, len), out.view().tokens(at, len), exec);
    } catch (const longctx::invalid_argument& e) {
      std::fprintf(stderr, "%s\n", e.what());
      fail("a well-formed call threw");
    }
    at += len;
    if (tokens_seen(st) != std::uint64_t(at)) fail("the state miscounts the tokens it has seen");
    if constexpr (is_bounded_cache<P>) {
      if (st.size() > p.budget) fail("a cache exceeded its budget");
      if (!interrupted && st.size() == p.budget) {  // a restored state has its own capacity
        if (fp_full == 0) fp_full = st.footprint();
        if (st.footprint() != fp_full) fail("a full cache's footprint changed");
      }
    } else if constexpr (!is_cache<P>) {
      if (st.footprint() != fp0) fail("the footprint changed over the stream");
    }
  }
  if (non_causal(p) && interrupted) bad_call(p, st, consumed_state, 1, true);
  const std::vector<float> o = out.canonical();
  for (float x : o) {
    if (same_bits(x, unwritten)) fail("an output element was not written");
    if (contract && !std::isfinite(x)) fail("finite input within the contract gave a non-finite output");
  }
  if (!out.padding_is(unwritten)) fail("a call wrote outside its output view");
  return {o, st.snapshot()};
}

template <class P>
void exercise(P p, unsigned data0, byte_reader& in) {
  options o;
  o.o1 = in.u8(), o.o2 = in.u8(), o.o3 = in.u8();
  std::vector<float> bias;
  tweak(p, o, bias);
  bool even_d = false;
  if constexpr (is_cache<P>) even_d = p.positions == position_mode::cache_relative;
  // Dims: b 0..2, h_kv 1..3, groups of 1..3, d 1..9 (even when rotated), d_v 0..9 (0: d).
  const unsigned d1 = in.u8(), d2 = in.u8();
  attention_dims a;
  a.b = (d1 & 7) == 0 ? 0 : (d1 & 7) < 6 ? 1 : 2;
  a.h_kv = 1 + index_t((d1 >> 3) % 3);
  a.h = a.h_kv * (1 + index_t((d1 >> 5) % 3));
  a.d = 1 + index_t(d2 % 9);
  if (even_d && a.d % 2) ++a.d;
  a.d_v = index_t((d2 >> 4) % 10);
  tweak_for(p, o, resolved(a));
  try {
    (void)p.make_state(a);
  } catch (const longctx::invalid_argument&) {
    return;  // a configuration the options made invalid: rejected, as it should be
  }
  const unsigned flags = in.u8(), layout = in.u8();
  const index_t n = index_t(in.u8() % (max_tokens + 1));
  plan pl;
  pl.dirty_target = flags & 1;
  pl.out_layout = layout / 27;
  const bool three = flags & 2, extra = has_extra<P> && (flags & 4);
  // Events: up to three snapshot/restore cuts and three bad calls.
  const unsigned cuts = (flags >> 3) % 4, bads = (flags >> 5) % 4;
  std::vector<unsigned> where;
  for (unsigned c = 0; c < cuts + bads; ++c) where.push_back(in.u16());
  // The split: lengths 0..12 until the stream is used up (non-causal FLASH: one call).
  if (non_causal(p)) {
    pl.calls = {n};
  } else {
    index_t at = 0;
    while (at < n && pl.calls.size() + 1 < max_calls && !in.empty()) {
      const index_t len = std::min<index_t>(n - at, index_t(in.u8() % 13));
      pl.calls.push_back(len);
      at += len;
    }
    if (at < n || pl.calls.empty()) pl.calls.push_back(n - at);
  }
  for (unsigned c = 0; c < cuts + bads; ++c) {
    const std::size_t before = where[c] % (pl.calls.size() + 1);
    if (c < cuts)
      pl.events.push_back({before, bad_kinds, 0});
    else
      pl.events.push_back({before, (where[c] >> 8) % bad_kinds, 1 + index_t((where[c] >> 13) % 3)});
  }
  const bool f16_storage = [] {
    if constexpr (requires { typename P::storage_type; }) return std::is_same_v<typename P::storage_type, f16>;
    return false;
  }();
  const bool bf16_storage = [] {
    if constexpr (requires { typename P::storage_type; }) return std::is_same_v<typename P::storage_type, bf16>;
    return false;
  }();
  // Softmax attention is finite for any finite input (README, Safety): caches
  // get values up to FLT_MAX (f16 storage: its range). Linear states overflow
  // like a float GEMM: Infini and FLASH get moderate values.
  float cap = is_cache<P> ? std::numeric_limits<float>::max() : 1e15f;
  if (f16_storage && !nonfinite) cap = f16_finite_bound;
  if (bf16_storage && !nonfinite) cap = std::min(cap, bf16_finite_bound);
  if (even_d) cap = std::min(cap, rotated_bound);
  const stream s(resolved(a), n, layout, extra, nonfinite, cap, in);
  context = detail::concat("policy ", data0, " options ", o.o1, " ", o.o2, " ", o.o3, "; dims (b ", a.b, ", h ", a.h,
                           ", h_kv ", a.h_kv, ", d ", a.d, ", d_v ", a.d_v, "); ", n, " tokens, layouts ", layout % 9,
                           " ", layout / 9 % 3, " ", pl.out_layout, ", extra ", extra, ", max |x| ", s.max_abs,
                           "; calls");
  for (index_t c : pl.calls) context += " " + std::to_string(c);
  context += "; events (before call: kind, snapshot = " + std::to_string(bad_kinds) + ")";
  for (const event& e : pl.events) context += " " + std::to_string(e.before) + ":" + std::to_string(e.what);
  context += pl.dirty_target ? "; restore into a used state" : "";
  context += three ? "; 3 threads" : "; 2 threads";
  if (std::getenv("POLICIES_VERBOSE")) std::fprintf(stderr, "%s\n", context.c_str());

  serial_executor serial;
  // Bit-identity is promised for finite inputs; a NaN or infinity reaches
  // the outputs it reaches whatever the split (README, Safety), so then the
  // non-finite outputs must be the same ones. Values that 16-bit storage
  // turns into infinities count as infinities.
  const bool finite = std::isfinite(s.max_abs) && !(f16_storage && s.max_kv > f16_finite_bound) &&
                      !(bf16_storage && s.max_kv > bf16_finite_bound);
  const auto same = [&](const result& x, const result& y, const char* outputs, const char* state) {
    if (finite ? !same_values(x.out, y.out) : !same_finiteness(x.out, y.out)) fail(outputs);
    if (finite && x.last != y.last) fail(state);
  };
  const result base = run(p, s, pl, false, serial);
  // Bad calls and snapshot/restore cuts change nothing.
  same(run(p, s, pl, true, serial), base, "bad calls or snapshot/restore changed the outputs",
       "bad calls or snapshot/restore changed the final state");
  // Threads change nothing.
  same(run(p, s, pl, false, pool(three ? 3 : 2)), base, "a thread pool changed the outputs",
       "a thread pool changed the final state");
  // The split changes nothing: one call, one token per call.
  if (split_exact(p)) {
    plan whole = pl, single = pl;
    whole.calls = {n};
    single.calls.assign(std::size_t(n), 1);
    same(run(p, s, whole, false, serial), base, "a split gave other outputs than one call",
         "a split gave another final state than one call");
    same(run(p, s, single, false, serial), base, "a split gave other outputs than one call per token",
         "a split gave another final state than one call per token");
  }
}

// Inputs of policy pi for the seed corpus: one per shape class.
std::vector<std::uint8_t> seed_input(unsigned pi, unsigned variant) {
  std::mt19937 g(pi * 131 + variant);
  std::vector<std::uint8_t> b;
  b.push_back(std::uint8_t(pi));
  for (int i = 0; i < 3; ++i) b.push_back(std::uint8_t(g()));  // options
  b.push_back(std::uint8_t(variant == 0 ? 0x01 : g()));         // dims
  b.push_back(std::uint8_t(variant == 0 ? 0x37 : g()));
  b.push_back(std::uint8_t(g()));                                // flags
  b.push_back(std::uint8_t(g() % 81));                           // layouts
  b.push_back(std::uint8_t(variant == 0 ? 9 : 20 + g() % 21));   // tokens
  for (int i = 0; i < 12; ++i) b.push_back(std::uint8_t(g()));   // event positions
  for (int i = 0; i < 8; ++i) b.push_back(std::uint8_t(g() % 8)); // split
  for (int i = 0; i < 5; ++i) b.push_back(std::uint8_t(g()));     // values: distribution, seed
  if (variant == 2)
    for (int i = 0; i < 9; ++i) b.push_back(std::uint8_t(g()));   // a few overrides
  return b;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  nonfinite = longctx_fuzz::has_flag(*argc, *argv, "-nonfinite=1");          // see `nonfinite`
  longctx_fuzz::write_seeds_if_asked(*argc, *argv, [] {  // a few inputs of every policy
    std::vector<longctx_fuzz::seed_file> files;
    for (unsigned pi = 0; pi < policies; ++pi)
      for (unsigned variant = 0; variant < 3; ++variant) {
        const std::vector<std::uint8_t> b = seed_input(pi, variant);
        files.push_back({"p" + std::to_string(pi) + "_v" + std::to_string(variant), {b.begin(), b.end()}});
      }
    return files;
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  byte_reader in{data + 1, size - 1};
  try {
    visit(data[0] % policies, [&](const auto& p) { exercise(p, data[0] % policies, in); });
  } catch (const longctx::invalid_argument& e) {
    std::fprintf(stderr, "%s\n", e.what());
    fail("longctx::invalid_argument escaped a well-formed run");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    fail("an exception other than longctx::invalid_argument escaped");
  } catch (...) {
    fail("a non-standard exception escaped");
  }
  return 0;
}
