// libFuzzer harness: the whole-layer drivers (models/) on fuzzed
// configurations and streams. The first input byte picks the layer (GAU:
// either norm, FLASH mixed-chunk or FLASH-Quad, causal or not, every FLASH
// normalisation, logit scales, a chunk bias, chunks 1-97, norm epsilon, RoPE
// base; RMT over the example backbone: decoder or encoder, every mask
// convention and position mode and offsets up to 2^52, 0-4 memory tokens,
// segment budgets up to 2^40, 1-2 layers, and rarely a width-64 backbone
// big enough to use its pool), whether the configuration may be out of range
// (then make_state or the first call may reject it), the input magnitude
// (up to 1e9), serial or a thread pool of 2 or 3; the next bytes the row
// layout (contiguous, padded, GAU in place, reversed rows), small shapes (odd
// included; GAU sometimes 97-296 rows or a value width past FLASH's
// column slice), and a plan that splits the stream into forward calls, with
// RMT flushes and snapshot/restore points, and deliberately bad calls
// between them (wrong shapes, null data, an output overlapping the input,
// overflowing extents, a foreign or invalid configuration, corrupt
// snapshots); the rest are the values. Properties, not only crashes:
//   - only longctx::invalid_argument escapes, and valid calls are accepted;
//   - every bad call is rejected and leaves the state as it was: the same
//     counters and snapshot, and the rest of the stream gives the bits of a
//     run without the bad calls;
//   - an RMT snapshot restored into a fresh state round-trips and continues
//     with the bits of the uninterrupted run; a resealed corrupt one either
//     is rejected or round-trips and runs finite;
//   - thread pool and row layout: RMT gives the bits of serial contiguous
//     calls (bitwise, as tests/models/rmt.cpp asserts for threads); GAU agrees
//     within tests/models/gau.cpp's streaming tolerance (-strict=1: threads
//     bitwise);
//   - split invariance as tests/models assert it: GAU causal mixed-chunk and
//     the RMT decoder within their tolerances (the decoder for inputs of the
//     tests' size only), the RMT encoder bitwise for splits at segments;
//   - finite inputs give finite outputs (and RMT memories), and no call
//     writes the rows after its own or the padding between rows.
// Any other exception, a sanitizer report or a broken property aborts.
//
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -Iinclude \
//       -I/usr/include/eigen3 tests/fuzz/layers.cpp -o layers
//   ./layers -max_total_time=600 tests/fuzz/corpus/layers
// tools/fuzz layers 600 wraps this (corpus: tests/fuzz/corpus/layers, grown by
// the runs); -write_seeds=DIR writes a seed input for every layer mode to DIR.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <longctx/models/gau.hpp>
#include <longctx/models/rmt.hpp>
#include <longctx/models/rmt_backbone.hpp>

#include "harness.hpp"

using namespace longctx;

namespace {

bool strict = false;  // -strict=1: GAU threads bitwise too

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz property broken: %s\n", what);
  std::abort();
}
[[noreturn]] void fail(const char* what, const std::exception& e) {
  std::fprintf(stderr, "fuzz property broken: %s\n  (%s)\n", what, e.what());
  std::abort();
}

// The input bytes front to back; zeros once they run out.
struct reader {
  const std::uint8_t* p;
  std::size_t left;
  std::uint8_t u8() {
    if (left == 0) return 0;
    --left;
    return *p++;
  }
};

// splitmix64: weights and biases from a seed byte.
struct rng {
  std::uint64_t s;
  float uniform(float lo, float hi) {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return lo + (hi - lo) * float(double(z >> 11) * 0x1.0p-53);
  }
};

// Input values: (b - 128) / 128 * magnitude, a fixed pattern once the bytes
// run out. Magnitudes 0-3 are the size the tests use (their tolerances apply).
constexpr float magnitudes[8] = {1.0f, 1.0f, 0.25f, 4.0f, 100.0f, 1e4f, 1e7f, 1e9f};
constexpr int tame_magnitudes = 4;
std::vector<float> read_values(reader& r, std::size_t count, float mag) {
  std::vector<float> v(count);
  for (std::size_t i = 0; i < count; ++i)
    v[i] = r.left ? float(int(r.u8()) - 128) / 128.0f * mag : std::sin(0.37f * float(i) + 0.1f) * mag;
  return v;
}

bool same_bits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}
bool all_finite(std::span<const float> a) {
  return std::all_of(a.begin(), a.end(), [](float x) { return std::isfinite(x); });
}
// max |a - b| <= tol_rel * max |b| + tol_abs.
bool close(std::span<const float> a, std::span<const float> b, double tol_rel, double tol_abs) {
  if (a.size() != b.size()) return false;
  double err = 0, mag = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::abs(double(a[i]) - double(b[i])));
    mag = std::max(mag, std::abs(double(b[i])));
  }
  return err <= tol_rel * mag + tol_abs;
}

// True when f throws longctx::invalid_argument (anything else escapes).
template <class F>
bool rejected(F&& f) {
  try {
    f();
  } catch (const longctx::invalid_argument&) {
    return true;
  }
  return false;
}

thread_pool& pool(int i) {
  static thread_pool two(2), three(3);
  return i ? three : two;
}

// ---- The plan: forward calls splitting the stream, and what runs between. --
enum class op_kind { call, flush, snap, bad };
struct op {
  op_kind kind;
  index_t len = 0;          // call: rows
  std::uint8_t a = 0, b = 0;  // bad: kind, parameter
};
struct plan {
  index_t n = 0;
  std::vector<op> ops;  // the calls' rows sum to n
  int magnitude = 0;
  bool threaded = false;
  int pool = 0;
  int layout = 0;  // bit 0 padded rows, bit 1 in place, bit 2 reversed rows
};

// Calls of p % call_mod rows (0 included); specials pick one of `specials`
// (flush, snapshot, bad kinds: the layer's numbering) with a parameter byte.
void read_ops(reader& r, plan& pl, index_t call_mod, int specials) {
  const int count = r.u8() % 12;
  index_t left = pl.n;
  for (int i = 0; i < count; ++i) {
    const std::uint8_t t = r.u8(), p = r.u8();
    if (t < 0xb0) {
      const index_t len = std::min<index_t>(left, index_t(p) % call_mod);
      pl.ops.push_back({op_kind::call, len});
      left -= len;
    } else {
      pl.ops.push_back({op_kind::bad, 0, std::uint8_t((t - 0xb0) % specials), p});
    }
  }
  pl.ops.push_back({op_kind::call, left});
}

// One call per run of calls between flushes, nothing else: the reference split.
plan grouped(const plan& pl) {
  plan g = pl;
  g.ops.clear();
  index_t acc = 0;
  for (const op& o : pl.ops) {
    if (o.kind == op_kind::call) acc += o.len;
    if (o.kind == op_kind::flush) {
      g.ops.push_back({op_kind::call, acc});
      g.ops.push_back(o);
      acc = 0;
    }
  }
  g.ops.push_back({op_kind::call, acc});
  return g;
}
bool has_extras(const plan& pl) {
  return std::any_of(pl.ops.begin(), pl.ops.end(), [](const op& o) { return o.kind == op_kind::bad || o.kind == op_kind::snap; });
}
bool split_is_trivial(const plan& pl) {
  const plan g = grouped(pl);
  index_t a = 0, b = 0;
  for (const op& o : pl.ops) a += o.kind == op_kind::call && o.len > 0;
  for (const op& o : g.ops) b += o.kind == op_kind::call && o.len > 0;
  return a == b;
}

// ---- Rows in memory: the stream laid out as the plan's layout says. --------
// Logical row t sits at buf[row(t) * ld] with row(t) = t or n - 1 - t; the
// padding (ld > width) and the rows not yet written hold a NaN sentinel.
constexpr std::uint32_t sentinel_bits = 0x7fc0beefu;
float sentinel() {
  float f;
  std::memcpy(&f, &sentinel_bits, 4);
  return f;
}
struct rows {
  index_t n, w, ld;
  bool reversed, in_place;
  std::vector<float> x, y, y0;  // y0: y as it started (in place: the input)
  rows(index_t n_, index_t w_, int layout, std::span<const float> values)
      : n(n_), w(w_), ld(w_ + (layout & 1 ? 1 + w_ % 3 : 0)), reversed(layout & 4), in_place(layout & 2) {
    x.assign(std::size_t(n * ld + 1), sentinel());
    for (index_t t = 0; t < n; ++t) std::copy_n(values.data() + t * w, w, x.data() + offset(t));
    y = in_place ? x : std::vector<float>(x.size(), sentinel());
    y0 = y;
  }
  index_t offset(index_t t) const { return (reversed ? n - 1 - t : t) * ld; }
  matrix_view<const float> in(index_t t0, index_t len) const {
    if (len == 0) return make_matrix<dynamic_extent, const float>(nullptr, 0, w);
    const float* base = in_place ? y.data() : x.data();
    return matrix_view<const float>(base + offset(t0), matrix_view<const float>::extents_type(len, w),
                                    {reversed ? -ld : ld, 1});
  }
  matrix_view<float> out(index_t t0, index_t len) {
    if (len == 0) return make_matrix(static_cast<float*>(nullptr), 0, w);
    return matrix_view<float>(y.data() + offset(t0), matrix_view<float>::extents_type(len, w), {reversed ? -ld : ld, 1});
  }
  // After a call of rows [t0, t0 + len): the next rows are as they started.
  void check_after(index_t t0, index_t len) const {
    for (index_t t = t0 + len; t < std::min(n, t0 + len + 2); ++t)
      if (std::memcmp(y.data() + offset(t), y0.data() + offset(t), std::size_t(w) * sizeof(float)) != 0)
        fail("a call wrote a row after its own");
  }
  // The outputs in logical order; the padding must be untouched.
  std::vector<float> result() const {
    for (std::size_t i = 0; i < y.size(); ++i)
      if ((i == y.size() - 1 || index_t(i) % ld >= w) && std::memcmp(&y[i], &y0[i], 4) != 0)
        fail("a call wrote the padding between rows");
    std::vector<float> r(std::size_t(n * w));
    for (index_t t = 0; t < n; ++t) std::copy_n(y.data() + offset(t), w, r.data() + t * w);
    return r;
  }
};

// Views for bad calls over a scratch buffer: two regions of (rows + 2) x
// (w + 4) floats.
struct scratch {
  std::vector<float> v;
  index_t region;
  scratch(index_t rows, index_t w) : v(std::size_t(2 * (rows + 2) * (w + 4) + 8), 0.5f), region((rows + 2) * (w + 4)) {}
  float* a() { return v.data(); }
  float* b() { return v.data() + region; }
};
matrix_view<const float> cview(const float* p, index_t r, index_t c, index_t ld = -1) {
  return make_matrix<dynamic_extent, const float>(p, r, c, ld);
}
matrix_view<float> mview(float* p, index_t r, index_t c, index_t ld = -1) { return make_matrix(p, r, c, ld); }
constexpr index_t huge_rows = index_t(1) << 62;  // with a row stride >= 4 the largest offset overflows

// The bad calls both layers share (kinds 0-8): calls fwd(x, y) with views
// that must be rejected. Returns false when the kind does not apply.
template <class F>
bool shape_bad_call(int kind, std::uint8_t p, index_t w, F&& fwd) {
  const index_t nb = 1 + p % 5, nb2 = nb + 1;
  scratch s(nb2, w);
  using cE = matrix_view<const float>::extents_type;
  using mE = matrix_view<float>::extents_type;
  switch (kind) {
    case 0: fwd(cview(s.a(), nb, w + 1), mview(s.b(), nb, w + 1)); return true;  // wrong width
    case 1: fwd(cview(s.a(), nb, w), mview(s.b(), nb + 1, w)); return true;      // rows differ
    case 2: fwd(cview(s.a(), nb, w), mview(s.b(), nb, w + 1)); return true;      // y width
    case 3: fwd(cview(nullptr, nb, w), mview(s.b(), nb, w)); return true;        // null x
    case 4: fwd(cview(s.a(), nb, w), mview(nullptr, nb, w)); return true;        // null y
    case 5: {  // y a shifted copy of x (same row stride), either side
      const index_t k = 1 + (p >> 3) % (nb2 * w - 1);
      float* lo = s.a() + 1;
      if (p & 0x80) fwd(cview(lo + k, nb2, w), mview(lo, nb2, w));
      else fwd(cview(lo, nb2, w), mview(lo + k, nb2, w));
      return true;
    }
    case 6: fwd(cview(s.a(), nb2, w), mview(s.a(), nb2, w, w + 1 + (p >> 6))); return true;  // same data, other stride
    case 7:                                                                                  // non-unit inner stride
      if (w < 2) return false;
      if (p & 0x80) fwd(matrix_view<const float>(s.a(), cE(nb, w), {2 * w, 2}), mview(s.b(), nb, w));
      else fwd(cview(s.a(), nb, w), matrix_view<float>(s.b(), mE(nb, w), {2 * w, 2}));
      return true;
    case 8:  // extents whose largest offset overflows index_t
      fwd(matrix_view<const float>(s.a(), cE(huge_rows, w), {w + 3, 1}),
          matrix_view<float>(s.b(), mE(huge_rows, w), {w + 3, 1}));
      return true;
  }
  return false;
}
constexpr int shape_bad_kinds = 9;

// ============================== GAU ==========================================
struct gau_case {
  gau layer;
  gau_weights w;
  std::vector<float> bias, quad_bias;  // (C, C): the mixed part's bias, one for a FLASH-Quad sibling
  index_t dm = 0, e = 0, s = 0;
  std::uint64_t seed = 0;  // of the weights
  bool raw = false;
  bool whole() const { return layer.attention == gau_attention::flash_quad || layer.mixed.mode == flash_mode::non_causal; }
};

// tests/models/gau.cpp's weights (deterministic from the seed).
void make_weights(gau_case& c, std::uint64_t seed) {
  rng g{seed};
  const index_t dm = c.dm, e = c.e, s = c.s;
  const auto fill = [&](auto& m, float lo, float hi) {
    for (index_t i = 0; i < index_t(m.size()); ++i) m.data()[i] = g.uniform(lo, hi);
  };
  gau_weights& w = c.w;
  w.w.resize(dm, 2 * e + s), w.b.resize(2 * e + s), w.gamma.resize(4, s), w.beta.resize(4, s), w.w_o.resize(e, dm);
  const float a = dm > 0 ? 1.0f / std::sqrt(float(dm)) : 1.0f, ao = e > 0 ? 1.0f / std::sqrt(float(e)) : 1.0f;
  fill(w.w, -a, a), fill(w.b, -0.1f, 0.1f), fill(w.gamma, 0.5f, 1.5f), fill(w.beta, -0.1f, 0.1f), fill(w.w_o, -ao, ao);
  if (c.layer.norm == gau_norm::scale_norm) {
    w.norm_gain.setConstant(1, std::sqrt(float(std::max<index_t>(dm, 1))));
  } else {
    w.norm_gain.resize(dm), w.norm_bias.resize(dm);
    fill(w.norm_gain, 0.8f, 1.2f), fill(w.norm_bias, -0.1f, 0.1f);
  }
}

// Five configuration bytes. Raw: zero sizes and chunk, non-finite scales,
// epsilons and RoPE bases, a FLASH-Quad bias may occur.
void read_gau(reader& r, bool raw, gau_case& c) {
  const std::uint8_t c0 = r.u8(), c1 = r.u8(), c2 = r.u8(), c3 = r.u8(), c4 = r.u8();
  gau& L = c.layer;
  c.raw = raw;
  L.norm = c0 & 1 ? gau_norm::layer_norm : gau_norm::scale_norm;
  L.attention = c0 & 2 ? gau_attention::flash_quad : gau_attention::mixed_chunk;
  L.mixed.mode = c0 & 4 ? flash_mode::non_causal : flash_mode::causal;
  L.mixed.norm = flash_norm((c0 >> 3) % 4);
  constexpr float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const float scales[4] = {0.5f, 0.125f, 2.0f, raw ? (c4 & 0x40 ? inf : nan) : 1.0f};
  if (c0 & 0x20) L.mixed.scale = scales[(c1 >> 4) & 3];
  if (c0 & 0x40) L.quad_scale = scales[(c4 >> 4) & 3];
  const index_t chunks[16] = {raw ? 0 : 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 16, 31, 64, 97};
  L.mixed.chunk = chunks[c1 % 16];
  c.dm = raw ? c2 % 8 : 1 + c2 % 7;
  c.e = raw ? (c2 / 8) % 10 : 1 + (c2 / 8) % 9 + (c4 & 0x40 ? flash::column_slice : 0);  // wide: two column slices
  c.s = raw ? c3 % 8 : 1 + c3 % 7;
  // Valid: > 0, down to subnormal (a zero row under scale_norm stays 0:
  // layers-gau-norm-epsilon, fixed).
  const float eps[4] = {1e-5f, 1e-3f, 1.0f, raw ? (c4 & 0x80 ? 0.0f : nan) : c4 & 0x80 ? inf : 1e-40f};
  L.norm_epsilon = eps[c4 & 3];
  const double bases[4] = {10000.0, 1.5, 1e6, raw ? (c4 & 0x80 ? 0.0 : -1.0) : 10000.0};
  L.rope_base = bases[(c4 >> 2) & 3];
  const index_t C = std::max<index_t>(L.mixed.chunk, 1);
  rng g{c3 * 131ull + 7};
  c.bias.resize(std::size_t(C * C));
  c.quad_bias.resize(std::size_t(C * C));
  for (auto& b : c.bias) b = g.uniform(-0.5f, 0.5f);
  for (auto& b : c.quad_bias) b = g.uniform(-0.5f, 0.5f);
  if ((c0 & 0x80) && L.mixed.chunk > 0 && (raw || L.attention == gau_attention::mixed_chunk))
    L.mixed.bias = cview(c.bias.data(), L.mixed.chunk, L.mixed.chunk);
  c.seed = c3 / 8 + 1;
}

struct gau_result {
  std::vector<float> y;
  index_t position = 0, chunks = 0;
  snapshot_bytes attn;
};

void check_unchanged(const gau::state_type& st, index_t pos, const snapshot_bytes& snap) {
  if (st.position() != pos || st.attention_state().snapshot() != snap) fail("a rejected GAU call changed the state");
}

// Bad call kind k (shape kinds, then 9: a sibling layer of an invalid
// configuration on this state, 10: a state not made by make_state).
constexpr int gau_bad_kinds = shape_bad_kinds + 2;
template <class Exec>
void gau_bad(const gau_case& c, gau::state_type& st, const op& o, Exec&& exec) {
  const index_t pos = st.position();
  const snapshot_bytes snap = st.attention_state().snapshot();
  const gau& L = c.layer;
  const auto on_layer = [&](matrix_view<const float> x, matrix_view<float> y) { L.forward(st, x, y, exec); };
  bool applies = true, ok = true;
  if (o.a < shape_bad_kinds) {
    ok = rejected([&] { applies = shape_bad_call(o.a, o.b, c.dm, on_layer); });
  } else if (o.a == shape_bad_kinds) {
    gau sib = L;
    const int v = o.b % 8, sub = o.b / 8;
    constexpr double dnan = std::numeric_limits<double>::quiet_NaN();
    constexpr float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    switch (v) {
      case 0: sib.rope_base = std::array<double, 4>{0.0, -1.0, dnan, HUGE_VAL}[sub % 4]; break;
      case 1: sib.norm_epsilon = std::array<float, 3>{0.0f, -1e-5f, nan}[sub % 3]; break;
      case 2:  // the other norm: the weights do not fit it (unless layer norm with d_model 1)
        applies = !(L.norm == gau_norm::layer_norm && c.dm == 1);
        sib.norm = L.norm == gau_norm::layer_norm ? gau_norm::scale_norm : gau_norm::layer_norm;
        break;
      case 3: sib.attention = gau_attention::mixed_chunk, sib.mixed.chunk = L.mixed.chunk + 1 + sub % 3, sib.mixed.bias = {}; break;
      case 4:
        sib.attention = gau_attention::mixed_chunk;
        sib.mixed.mode = L.mixed.mode == flash_mode::causal ? flash_mode::non_causal : flash_mode::causal;
        break;
      case 5: sib.attention = gau_attention::mixed_chunk, sib.mixed.norm = flash_norm((int(L.mixed.norm) + 1 + sub % 3) % 4); break;
      case 6:  // FLASH-Quad takes no chunk bias
        sib.attention = gau_attention::flash_quad;
        sib.mixed.bias = cview(c.quad_bias.data(), std::max<index_t>(L.mixed.chunk, 1), std::max<index_t>(L.mixed.chunk, 1));
        break;
      case 7:  // a non-finite FLASH-Quad logit scale (FLASH's own scale must be finite too)
        sib.attention = gau_attention::flash_quad;
        sib.quad_scale = sub & 1 ? inf : nan;
        break;
    }
    if (applies) {
      scratch s(1 + sub % 3, c.dm);
      ok = rejected([&] { sib.forward(st, cview(s.a(), 1 + sub % 3, c.dm), mview(s.b(), 1 + sub % 3, c.dm), exec); });
      if (!ok && v == 7) fail("gau accepted a non-finite quad_scale (FLASH-Quad logit scale)");
    }
  } else {
    gau::state_type fresh;
    scratch s(1, c.dm);
    ok = rejected([&] { L.forward(fresh, cview(s.a(), 1, c.dm), mview(s.b(), 1, c.dm), exec); });
  }
  if (!applies) return;
  if (!ok) fail("gau accepted a bad call");
  check_unchanged(st, pos, snap);
}

// One run of the plan. extras: the bad calls too. Returns false when a raw
// configuration is rejected (make_state or the first call).
template <class Exec>
bool run_gau(const gau_case& c, const plan& pl, std::span<const float> xs, bool extras, int layout, Exec&& exec,
             gau_result& res) {
  std::optional<gau::state_type> made;
  try {
    made.emplace(c.layer.make_state(c.w));
  } catch (const longctx::invalid_argument& e) {
    if (c.raw) return false;
    fail("gau::make_state rejected a valid configuration", e);
  }
  gau::state_type& st = *made;
  rows io(pl.n, c.dm, layout, xs);
  const bool whole = c.whole();
  bool extra_seen = false, accepted = false;
  index_t t = 0;
  for (const op& o : pl.ops) {
    if (o.kind == op_kind::bad) {
      if (extras) gau_bad(c, st, o, exec), extra_seen = true;
      continue;
    }
    index_t len = o.len;
    if (whole) {  // the whole sequence in its first non-empty call; later calls are rejected
      if (len == 0 || pl.n == 0) continue;
      if (t == pl.n) {
        if (!extras) continue;
        const index_t pos = st.position();
        const snapshot_bytes snap = st.attention_state().snapshot();
        scratch s(len, c.dm);
        if (!rejected([&] { c.layer.forward(st, cview(s.a(), len, c.dm), mview(s.b(), len, c.dm), exec); }))
          fail("a whole-sequence GAU state accepted a second call");
        check_unchanged(st, pos, snap);
        continue;
      }
      len = pl.n;
    }
    try {
      c.layer.forward(st, io.in(t, len), io.out(t, len), exec);
    } catch (const longctx::invalid_argument& e) {
      if (c.raw && !accepted && len > 0) return false;
      if (extra_seen) fail("a valid GAU call was rejected after a rejected call (that call changed the state)", e);
      fail("a valid GAU call was rejected", e);
    }
    accepted |= len > 0;
    io.check_after(t, len);
    t += len;
  }
  if (c.layer.attention == gau_attention::flash_quad && c.layer.quad_scale && !std::isfinite(*c.layer.quad_scale) &&
      accepted)
    fail("gau accepted a non-finite quad_scale (FLASH-Quad logit scale)");
  res.y = io.result();
  res.position = st.position();
  res.chunks = st.attention_state().chunks_folded();
  res.attn = st.attention_state().snapshot();
  if (res.position != t) fail("gau position() is not the tokens fed");
  return true;
}

template <class F>
decltype(auto) with_exec(bool threaded, int p, F&& f) {
  if (threaded) return f(pool(p));
  serial_executor s;
  return f(s);
}

void fuzz_gau(reader& r, std::uint8_t kind) {
  gau_case c;
  read_gau(r, kind & 2, c);
  plan pl;
  pl.magnitude = (kind >> 2) & 7;
  pl.threaded = kind & 0x20;
  pl.layout = r.u8();
  pl.pool = (pl.layout >> 3) & 1;
  const bool long_stream = pl.layout & 0x10;  // past GAU's 128-row blocks and FLASH-Quad's row tasks
  pl.layout &= 7;
  pl.n = long_stream ? 97 + r.u8() % 200 : r.u8() % 49;
  if (long_stream && c.e > flash::column_slice) c.e -= flash::column_slice;  // one at a time
  make_weights(c, c.seed);
  read_ops(r, pl, long_stream ? 150 : 20, gau_bad_kinds);
  const std::vector<float> xs = read_values(r, std::size_t(pl.n * c.dm), magnitudes[pl.magnitude]);

  gau_result a;
  if (!with_exec(pl.threaded, pl.pool, [&](auto& ex) { return run_gau(c, pl, xs, true, pl.layout, ex, a); })) return;
  if (!all_finite(a.y)) fail("gau: finite inputs gave a non-finite output");
  // Without the bad calls: the same bits.
  gau_result r1 = a;
  if (has_extras(pl)) {
    with_exec(pl.threaded, pl.pool, [&](auto& ex) { return run_gau(c, pl, xs, false, pl.layout, ex, r1); });
    if (!same_bits(a.y, r1.y) || a.position != r1.position || a.attn != r1.attn)
      fail("gau: the stream after rejected calls differs from the stream without them");
  }
  // tests/models/gau.cpp: streaming agrees to 1e-5 of the largest output.
  constexpr double tol = 1e-5;
  gau_result r2 = r1;
  if (pl.threaded || pl.layout) {
    run_gau(c, pl, xs, false, 0, serial_executor{}, r2);
    if (r1.position != r2.position || r1.chunks != r2.chunks) fail("gau: threads or layout changed the state's counters");
    // -strict=1: threads alone bitwise (a row stride may change Eigen's kernels, so the bits, with AVX-512).
    if (strict && !pl.layout ? !same_bits(r1.y, r2.y) || r1.attn != r2.attn : !close(r1.y, r2.y, tol, 0))
      fail("gau: threads or row layout changed the outputs");
  }
  if (!c.whole() && !split_is_trivial(pl)) {
    gau_result r0;
    run_gau(c, grouped(pl), xs, false, 0, serial_executor{}, r0);
    if (r0.position != r2.position || r0.chunks != r2.chunks) fail("gau: the split changed the state's counters");
    if (!close(r2.y, r0.y, tol, 0)) fail("gau: streaming in pieces disagrees with one call");
  }
}

// ============================== RMT ==========================================
using backbone = rmt_reference_backbone<>;
using rmt_st = rmt::state_type<backbone>;

struct rmt_case {
  rmt p;
  rmt_backbone_config cfg;
  bool raw = false, big = false;
  index_t width() const { return cfg.width; }
};

// Four configuration bytes. Raw: negative memory, budgets that leave no
// content or exceed 2^40, offsets outside [0, 2^52], widths that are not a
// multiple of the heads.
void read_rmt(reader& r, bool raw, rmt_case& c) {
  const std::uint8_t r0 = r.u8(), r1 = r.u8(), r2 = r.u8(), r3 = r.u8();
  c.raw = raw;
  rmt& p = c.p;
  p.layout = r0 & 1 ? rmt_layout::encoder : rmt_layout::decoder;
  p.convention = rmt_convention((r0 >> 1) % 3);
  p.positions.mode = rmt_position_mode((r0 >> 3) % 4);
  p.positions.memory_position = index_t((r0 >> 5) % 3) * 5;  // content_offset: 0, 5 or 10
  const index_t offsets[8] = {0, 1, 7, 50, index_t(1) << 20, index_t(1) << 40,
                              raw ? rmt::max_offset + 1 : rmt::max_offset, raw ? -1 : 3};
  p.positions.offset = offsets[r0 >> 5];
  p.memory = raw ? r1 % 7 - 1 : r1 % 5;
  const index_t per = p.layout == rmt_layout::decoder ? 2 : 1;
  if (r1 / 8 == 31) p.segment_budget = raw ? rmt::max_segment_budget + 1 : rmt::max_segment_budget;
  else p.segment_budget = p.memory * per + (raw ? (r1 / 8) % 12 - 2 : 1 + (r1 / 8) % 10);
  c.big = r3 == 0xff;
  if (c.big) {  // big enough that the backbone uses its pool (~128-row products of width 64)
    c.cfg = {.width = 64, .heads = 4, .layers = 1, .hidden = 16, .seed = r3};
    p.segment_budget = p.memory * per + 128 + r1 % 8;
    return;
  }
  const index_t heads = raw ? r2 % 4 : 1 + r2 % 3, dh = 1 + (r2 / 4) % 5;
  const index_t hidden[4] = {0, 1, 3, 8};
  c.cfg = {.width = heads * dh + (raw && (r3 & 0x80) ? 1 : 0), .heads = heads, .layers = 1 + (r2 / 20) % 2,
           .hidden = hidden[(r2 / 40) % 4], .seed = std::uint64_t(r3 & 0x3f)};
  if (c.cfg.width == 0) c.cfg.width = 1;
  if (p.layout == rmt_layout::decoder && (r3 & 0x40)) {  // a Transformer-XL cache
    p.xl = raw && (r2 & 1) ? -1 : 1 + r2 % 9;
    p.xl_visibility = rmt_xl((r2 >> 6) & 1);
    p.read_sees_xl = (r1 & 1) != 0;
  }
}

struct rmt_result {
  std::vector<float> y, memory;
  std::uint64_t segments = 0;
  index_t pending = 0;
};

std::vector<float> memory_of(const rmt_st& st) {
  const auto m = st.memory();
  return {m.data(), m.data() + m.extent(0) * m.extent(1)};
}

struct rmt_mark {  // what a rejected call must not change
  std::vector<float> memory;
  std::uint64_t segments;
  index_t pending;
  snapshot_bytes snap;
  explicit rmt_mark(const rmt_st& st) : memory(memory_of(st)), segments(st.segments()), pending(st.pending()) {
    if (pending == 0) snap = st.snapshot();
  }
  void check(const rmt_st& st) const {
    if (!same_bits(memory, memory_of(st)) || segments != st.segments() || pending != st.pending() ||
        (pending == 0 && snap != st.snapshot()))
      fail("a rejected RMT call changed the state");
  }
};

// Snapshot / restore into a fresh state (made with another initial memory,
// fed a few rows first when b says so); st continues as the restored state.
void rmt_snap(const rmt_case& c, backbone& bb, rmt_st& st, std::uint8_t b, std::span<const float> mem0) {
  if (st.pending() > 0) {  // decoder mid-segment: no snapshot
    const rmt_mark mark(st);
    if (!rejected([&] { (void)st.snapshot(); })) fail("rmt_state::snapshot accepted pending tokens");
    mark.check(st);
    return;
  }
  const snapshot_bytes snap = st.snapshot();
  std::vector<float> other(mem0.begin(), mem0.end());
  for (auto& x : other) x = -x * 0.5f + 0.25f;
  rmt_st fresh = c.p.make_state(bb, cview(other.data(), c.p.memory, c.width()));
  if (b & 1) {
    const index_t k = 1 + (b >> 1) % 3;
    scratch s(k, c.width());
    c.p.forward(fresh, cview(s.a(), k, c.width()), mview(s.b(), k, c.width()));
  }
  fresh.restore(snap);
  if (fresh.snapshot() != snap) fail("a restored RMT snapshot does not round-trip");
  if (fresh.segments() != st.segments() || fresh.pending() != 0 || !same_bits(memory_of(fresh), memory_of(st)))
    fail("a restored RMT state differs from the one snapshotted");
  st = std::move(fresh);
}

// Bad call kind k: shape kinds (rmt::forward), then 9: a foreign policy's
// forward or flush, 10: snapshot with pending tokens or restore of a
// snapshot with one byte flipped, 11: restore of another configuration's
// snapshot, 12: a truncated snapshot, 13: make_state with a wrong initial
// memory, 14: a resealed corrupt snapshot on a copy (rejected, or round-trips
// and runs finite).
constexpr int rmt_bad_kinds = shape_bad_kinds + 6;
void rmt_bad(const rmt_case& c, backbone& bb, rmt_st& st, const op& o) {
  const rmt& p = c.p;
  const index_t w = c.width();
  const rmt_mark mark(st);
  bool applies = true, ok = true;
  std::vector<float> mem(std::size_t((p.memory + 1) * (w + 1)), 0.25f);
  if (o.a == 5 && (o.b & 0x40)) {  // out = in, in place
    scratch s(2, w);
    if (!rejected([&] { p.forward(st, cview(s.a(), 2, w), mview(s.a(), 2, w)); }))
      fail("rmt::forward accepted an output that overlaps its input");
  } else if (o.a < shape_bad_kinds) {
    ok = rejected([&] {
      applies = shape_bad_call(o.a, o.b, w, [&](matrix_view<const float> x, matrix_view<float> y) { p.forward(st, x, y); });
    });
    if (!ok && (o.a == 5 || o.a == 6)) fail("rmt::forward accepted an output that overlaps its input");
  } else if (o.a == shape_bad_kinds) {
    rmt q = p;
    switch (o.b % 7) {
      case 0: q.memory += 1; break;
      case 1: q.segment_budget += 1; break;
      case 2: q.layout = p.layout == rmt_layout::decoder ? rmt_layout::encoder : rmt_layout::decoder; break;
      case 3: q.convention = rmt_convention((int(p.convention) + 1) % 3); break;
      case 4: q.positions.mode = rmt_position_mode((int(p.positions.mode) + 1) % 4); break;
      case 5: q.positions.offset += 1; break;
      case 6: q.xl += 1; break;
    }
    scratch s(2, w);
    if (o.b & 0x80) ok = rejected([&] { q.flush(st); });
    else ok = rejected([&] { q.forward(st, cview(s.a(), 2, w), mview(s.b(), 2, w)); });
  } else if (o.a == shape_bad_kinds + 1) {
    if (st.pending() > 0) {
      ok = rejected([&] { (void)st.snapshot(); });
    } else {
      snapshot_bytes s = st.snapshot();
      s[o.b % s.size()] ^= std::byte(1 + (o.b >> 1) % 255);
      ok = rejected([&] { st.restore(s); });
    }
  } else if (o.a == shape_bad_kinds + 2) {
    rmt q = p;
    if (o.b & 1) q.convention = rmt_convention((int(p.convention) + 1) % 3);
    else q.positions.mode = rmt_position_mode((int(p.positions.mode) + 1) % 4);
    if (q.positions.offset < 0 || q.positions.offset > rmt::max_offset) q.positions.offset = 0;  // raw: keep q valid
    const rmt_st other = q.make_state(bb, cview(mem.data(), p.memory, w));
    ok = rejected([&] { st.restore(other.snapshot()); });
  } else if (o.a == shape_bad_kinds + 3) {
    applies = st.pending() == 0;
    if (applies) {
      snapshot_bytes s = st.snapshot();
      s.resize(o.b % s.size());
      ok = rejected([&] { st.restore(s); });
    }
  } else if (o.a == shape_bad_kinds + 4) {
    if (o.b & 1) ok = rejected([&] { (void)p.make_state(bb, cview(mem.data(), p.memory + 1, w)); });
    else if (o.b & 2) ok = rejected([&] { (void)p.make_state(bb, cview(mem.data(), p.memory, w + 1)); });
    else {
      applies = p.memory > 0;
      if (applies) ok = rejected([&] { (void)p.make_state(bb, cview(nullptr, p.memory, w)); });
    }
  } else {
    applies = st.pending() == 0;
    if (applies) {
      snapshot_bytes s = st.snapshot();
      const std::size_t at = o.b % (s.size() - 4);
      s[at] ^= std::byte(1 + (o.b >> 3));
      const std::uint32_t crc = detail::crc32c(std::span<const std::byte>(s).first(s.size() - 4));
      std::memcpy(s.data() + s.size() - 4, &crc, 4);
      rmt_st copy = st;
      if (!rejected([&] { copy.restore(s); })) {
        if (copy.snapshot() != s) fail("an accepted RMT snapshot does not round-trip");
        // Moderate restored memories only (huge finite ones are outside the value contract).
        const std::vector<float> restored = memory_of(copy);
        const bool moderate = std::all_of(restored.begin(), restored.end(), [](float x) { return std::abs(x) < 1e10f; });
        scratch sc(3, w);
        p.forward(copy, cview(sc.a(), 3, w), mview(sc.b(), 3, w));
        p.flush(copy);
        if (moderate && (!all_finite(std::span<const float>(sc.b(), std::size_t(3 * w))) || !all_finite(memory_of(copy))))
          fail("a restored RMT state gave a non-finite output on finite input");
      }
    }
  }
  if (!applies) return;
  if (!ok) fail("rmt accepted a bad call");
  mark.check(st);
}

// One run of the plan (extras: bad calls and snapshot/restore points too);
// a final flush. Returns false when a raw configuration is rejected.
bool run_rmt(const rmt_case& c, backbone& bb, const plan& pl, std::span<const float> mem0, std::span<const float> xs,
             bool extras, int layout, rmt_result& res) {
  const rmt& p = c.p;
  std::optional<rmt_st> made;
  try {
    made.emplace(p.make_state(bb, cview(mem0.data(), std::max<index_t>(p.memory, 0), c.width())));
  } catch (const longctx::invalid_argument& e) {
    if (c.raw) return false;
    fail("rmt::make_state rejected a valid configuration", e);
  }
  rmt_st& st = *made;
  rows io(pl.n, c.width(), layout, xs);
  bool extra_seen = false;
  index_t t = 0;
  for (const op& o : pl.ops) {
    try {
      switch (o.kind) {
        case op_kind::call:
          p.forward(st, io.in(t, o.len), io.out(t, o.len));
          io.check_after(t, o.len);
          t += o.len;
          break;
        case op_kind::flush: p.flush(st); break;
        case op_kind::snap:
          if (extras) rmt_snap(c, bb, st, o.b, mem0), extra_seen = true;
          break;
        case op_kind::bad:
          if (extras) rmt_bad(c, bb, st, o), extra_seen = true;
          break;
      }
    } catch (const longctx::invalid_argument& e) {
      if (extra_seen) fail("a valid RMT call was rejected after a rejected call or a restore", e);
      fail("a valid RMT call was rejected", e);
    }
  }
  p.flush(st);
  res.y = io.result();
  res.memory = memory_of(st);
  res.segments = st.segments();
  res.pending = st.pending();
  return true;
}

void fuzz_rmt(reader& r, std::uint8_t kind) {
  rmt_case c;
  read_rmt(r, kind & 2, c);
  plan pl;
  pl.magnitude = (kind >> 2) & 7;
  pl.threaded = (kind & 0x20) || c.big;
  pl.layout = r.u8();
  pl.pool = (pl.layout >> 3) & 1;
  pl.layout &= 5;  // RMT's out may not share a byte with in, in place included (a bad call here)
  const index_t content = c.p.content(), cap = 60;
  const index_t nmax = content < 1 ? 8 : std::min<index_t>(cap, 3 * std::min<index_t>(content, cap) + 5);
  pl.n = c.big ? content + r.u8() % 5 : index_t(r.u8()) % (nmax + 1);
  read_ops(r, pl, content < 1 ? 8 : std::min<index_t>(2 * std::min<index_t>(content, cap) + 2, 64), 2 + rmt_bad_kinds);
  if (c.big) pl.ops = {{op_kind::call, pl.n}};  // slow: one call (a whole segment, a few rows), threads only
  for (op& o : pl.ops)  // specials: 0 flush, 1 snapshot/restore, then the bad kinds
    if (o.kind == op_kind::bad) {
      if (o.a == 0) o.kind = op_kind::flush;
      else if (o.a == 1) o.kind = op_kind::snap;
      else o.a -= 2;
    }
  const index_t w = c.width(), m = std::max<index_t>(c.p.memory, 0);
  const std::vector<float> mem0 = read_values(r, std::size_t(m * w), magnitudes[pl.magnitude]);
  const std::vector<float> xs = read_values(r, std::size_t(pl.n * w), magnitudes[pl.magnitude]);

  std::optional<backbone> serial_bb, pooled_bb;
  try {
    serial_bb.emplace(c.cfg);
    pooled_bb.emplace(c.cfg, &pool(pl.pool));
  } catch (const longctx::invalid_argument& e) {
    if (c.raw) return;
    fail("rmt_reference_backbone rejected a valid configuration", e);
  }
  backbone& bb = pl.threaded ? *pooled_bb : *serial_bb;
  rmt_result a;
  if (!run_rmt(c, bb, pl, mem0, xs, true, pl.layout, a)) return;
  if (!all_finite(a.y) || !all_finite(a.memory)) fail("rmt: finite inputs gave a non-finite output or memory");
  const auto same = [](const rmt_result& x, const rmt_result& y) {
    return same_bits(x.y, y.y) && same_bits(x.memory, y.memory) && x.segments == y.segments && x.pending == y.pending;
  };
  rmt_result r1 = a;
  if (has_extras(pl)) {
    run_rmt(c, bb, pl, mem0, xs, false, pl.layout, r1);
    if (!same(a, r1)) fail("rmt: the stream after rejected calls or a restore differs from the stream without them");
  }
  // tests/models/rmt.cpp: the backbone's thread count changes no bit.
  rmt_result r2 = r1;
  if (pl.threaded || pl.layout) {
    run_rmt(c, *serial_bb, pl, mem0, xs, false, 0, r2);
    if (!same(r1, r2)) fail("rmt: threads or row layout changed the bits");
  }
  if (c.big || split_is_trivial(pl)) return;
  const plan g = grouped(pl);
  if (c.p.layout == rmt_layout::encoder) {
    // Each call is cut into its own segments: splits at segment boundaries
    // make the same backbone calls.
    std::vector<index_t> lens;
    for (const op& o : pl.ops)
      if (o.kind == op_kind::call && o.len > 0) lens.push_back(o.len);
    for (std::size_t i = 0; i + 1 < lens.size(); ++i)
      if (lens[i] % content != 0) return;
    rmt_result r0;
    run_rmt(c, *serial_bb, g, mem0, xs, false, 0, r0);
    if (!same(r2, r0)) fail("rmt encoder: calls split at segment boundaries differ from one call");
    return;
  }
  rmt_result r0;
  run_rmt(c, *serial_bb, g, mem0, xs, false, 0, r0);
  if (r0.segments != r2.segments || r0.pending != r2.pending) fail("rmt decoder: the split changed the segment count");
  if (pl.magnitude >= tame_magnitudes) return;
  // tests/models/rmt.cpp: 2e-5 per layer and segment against the double
  // oracle, so twice that between two splits.
  const double tol = 2 * 2e-5 * double(c.cfg.layers) * double(std::max<std::uint64_t>(1, r0.segments));
  if (!close(r2.y, r0.y, 0, tol) || !close(r2.memory, r0.memory, 0, tol))
    fail("rmt decoder: streaming in pieces disagrees with whole segments");
}

// ---- Seeds. ----------------------------------------------------------------
std::vector<std::uint8_t> seed_input(std::uint8_t kind, std::initializer_list<std::uint8_t> cfg, std::uint8_t layout,
                                     std::uint8_t n, std::initializer_list<std::uint8_t> ops, std::uint64_t vseed) {
  std::vector<std::uint8_t> s{kind};
  s.insert(s.end(), cfg);
  s.push_back(layout);
  s.push_back(n);
  s.push_back(std::uint8_t(ops.size() / 2));
  s.insert(s.end(), ops);
  rng g{vseed};
  for (int i = 0; i < 400; ++i) s.push_back(std::uint8_t(128 + int(g.uniform(-100.0f, 100.0f))));
  return s;
}

// A seed for every layer mode (-write_seeds=DIR).
std::vector<longctx_fuzz::seed_file> layer_seeds() {
  std::vector<std::vector<std::uint8_t>> seeds;
  // GAU: norm x attention x causality x FLASH normalisation, some with
  // scales, a bias, threads, layouts, and bad calls between the calls.
  for (std::uint8_t mode = 0; mode < 8; ++mode)
    for (std::uint8_t fn = 0; fn < 3; ++fn) {
      const std::uint8_t c0 = std::uint8_t(mode | fn << 3 | (fn == 1 ? 0x60 : 0) | (fn == 2 && !(mode & 2) ? 0x80 : 0));
      const std::uint8_t kind = std::uint8_t(0 | (fn == 2 ? 0x20 : 0) | (mode % 3) << 2);
      seeds.push_back(seed_input(kind, {c0, std::uint8_t(2 + 3 * fn + mode), std::uint8_t(8 * mode + 3 + fn),
                                        std::uint8_t(5 + 8 * fn), std::uint8_t(fn * 5)},
                                 std::uint8_t(mode), std::uint8_t(17 + 5 * mode),
                                 {3, 1, 0xb0 + 9, std::uint8_t(8 * fn + mode), 5, 4, std::uint8_t(0xb0 + mode), 7,
                                  2, 0, 0xb0 + 10, 1},
                                 mode * 3 + fn));
    }
  // RMT: decoder / encoder x conventions x position modes, with flushes
  // (special 0), snapshot/restore (1) and bad calls (2...).
  for (std::uint8_t layout = 0; layout < 2; ++layout)
    for (std::uint8_t conv = 0; conv < 3; ++conv)
      for (std::uint8_t pos = 0; pos < 3; ++pos) {
        const std::uint8_t r0 = std::uint8_t(layout | conv << 1 | pos << 3 | (conv + pos) % 8 << 5);
        const std::uint8_t r1 = std::uint8_t((conv + pos) % 5 + 8 * (3 + pos));
        const std::uint8_t kind = std::uint8_t(1 | (pos == 2 ? 0x20 : 0) | (conv % 2) << 2);
        seeds.push_back(seed_input(kind, {r0, r1, std::uint8_t(7 + 4 * conv + 20 * pos), std::uint8_t(conv * 9 + pos)},
                                   std::uint8_t(conv + 3 * pos), std::uint8_t(40 + conv * 7),
                                   {std::uint8_t(conv * 3), 5, 0xb0 + 1, 0, std::uint8_t(0xb0 + 2 + conv * 4 + pos),
                                    std::uint8_t(pos * 37), 9, 1, 0xb0 + 0, 0, 0xb0 + 1, 3, 2, 7,
                                    0xb0 + 2 + 11, 0x21},
                                   30 + layout * 9 + conv * 3 + pos));
      }
  // Big RMT (the backbone's pool), raw configurations of both layers.
  seeds.push_back(seed_input(0x21, {0x02, 0x10, 0x05, 0xff}, 0, 0, {100, 130, 0xb0 + 1, 0, 50, 1}, 77));
  seeds.push_back(seed_input(0x03, {0xe7, 0x03, 0x00, 0x30, 0xff}, 0, 9, {2, 2}, 78));
  seeds.push_back(seed_input(0x03, {0x46, 0x80, 0x11, 0x11, 0x3f}, 0, 9, {2, 2}, 79));
  seeds.push_back(seed_input(0x03, {0xff, 0xfb, 0x13, 0x81}, 0, 9, {2, 2}, 80));
  seeds.push_back(seed_input(0x03, {0xc0, 0x06, 0x2a, 0x81}, 0, 9, {2, 2}, 81));
  std::vector<longctx_fuzz::seed_file> files;
  for (const auto& b : seeds) files.push_back({"seed_" + std::to_string(files.size()), {b.begin(), b.end()}});
  return files;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  strict = longctx_fuzz::has_flag(*argc, *argv, "-strict=1");
  longctx_fuzz::write_seeds_if_asked(*argc, *argv, layer_seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  reader r{data + 1, size - 1};
  try {
    if (data[0] & 1) fuzz_rmt(r, data[0]);
    else fuzz_gau(r, data[0]);
  } catch (const longctx::invalid_argument& e) {
    fail("a valid call threw longctx::invalid_argument", e);
  } catch (const std::exception& e) {
    fail("an exception other than longctx::invalid_argument escaped", e);
  } catch (...) {
    fail("a non-std exception escaped");
  }
  return 0;
}
