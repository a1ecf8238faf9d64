// libFuzzer harness: the exact-attention entry points, attention() (tiled
// prefill, optionally with row_logits) and decode() (split-KV, optionally
// with logits), on hostile arguments. A 17-byte header picks the entry
// point, the mask (no_mask, causal, sliding_window, sinks_window,
// chunk_local, either alignment, with their parameters), the shapes (b,
// h_kv, the GQA group, n_q, n_kv, d, d_v: small and odd, now and then long
// enough to cross the query block, the key tile and decode's key chunks),
// the scale, the memory layouts (bhnd, bnhd, padded rows, reversed or
// broadcast axes, misaligned bases, inputs sharing one buffer), an optional
// lse (strided) and logits output, the kind of values, and at most one
// mutation that breaks the call (mismatched, zero, negative or overflowing
// extents, null data, an output aliasing or interleaving an input, a
// non-contiguous last axis, a non-finite scale, a bad mask parameter, a bad
// row range); the rest are the values. Properties, not only crashes:
//   - only longctx::invalid_argument escapes; a call the README calls bad
//     throws, a valid one does not, and serial and 2-thread runs agree;
//   - a rejected call writes nothing (the README: every argument is checked
//     before data is read); an accepted one writes nothing but its output
//     elements (inputs and the padding between output rows keep their bits);
//   - serial and thread_pool(2) outputs are bit-identical;
//   - fully masked rows give o = 0 and lse = -inf; masked logits are -inf;
//   - moderate finite values: o, lse and logits close to a double oracle
//     (reference/attention.hpp's formula on plain arrays, checked against
//     reference::attention_head on one head per call; an independent mask
//     predicate), within (1e-3 + 16 eps (1 + sum_p |scale q_p k_p|)) max|v|;
//   - large finite values (|q|, |k| up to 2^66, one sign per q and k row,
//     or signs per element, whose dot products overflow as inf - inf or hit
//     -inf first): o finite and inside the hull of the visible v(j, c),
//     logits and lse finite (saturated at +-FLT_MAX); a row with a decisive
//     winner (exact logits apart by more than twice the float error plus
//     50) equal to the exact softmax, and a row the exact-row fallback must
//     recompute (an exact logit past 2 FLT_MAX, or all below -2 FLT_MAX)
//     equal to it rounded once, lse included;
//   - a NaN or infinity in q, k or v: a NaN or +inf logit makes its row NaN
//     (o and lse); a key whose exact logit is -inf weighs 0 (README: as if
//     masked); NaN (inf) in a weighed v gives NaN (non-finite) in its
//     column; every output no non-finite input reaches is finite and
//     matches the oracle over the weighed keys;
//   - attention() with compute_precision::bf16 (one case in two, check_bf16):
//     the f32 call's bits where no 16-bit engine is compiled, else within
//     the engines' bf16 bound of the f32 result on moderate values, and
//     the structural properties above on any values.
// Any other exception, a sanitizer report or a broken property aborts.
//
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -Iinclude \
//       -I/usr/include/eigen3 tests/fuzz/attention.cpp -o attention
//   ./attention -max_total_time=600 tests/fuzz/corpus/attention
// tools/fuzz attention 600 wraps this (scalar backend: no -m flags; add
// -march=native to the line above for the SIMD kernels); -write_seeds=DIR
// writes one input per entry point, mask, value kind and mutation to DIR;
// FUZZ_VERBOSE=1 in the environment prints each case, FUZZ_TIMING=1 the
// time of each phase (calls, checks).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <variant>
#include <vector>

#include <longctx/attention.hpp>
#include <longctx/kernels/scale.hpp>
#include <longctx/reference/attention.hpp>

#include "harness.hpp"

using namespace longctx;

// The checks read every element: no coverage callbacks there (the harness's
// own branches are not what the fuzzer should explore, and they cost).
#define NO_COVERAGE __attribute__((no_sanitize("coverage")))

namespace {

constexpr double eps = std::numeric_limits<float>::epsilon() / 2;  // unit roundoff
constexpr float sentinel = -3.0e30f;                                 // unwritten output

// Findings of this harness (tests/fuzz/findings/README.md) are fixed; their
// inputs are regression seeds in the corpus (named attention-*).
// Harness limits that follow the README rather than a bug:
// an empty row-logits view without data and with first = 0 is "no logits"
// whatever its other extents; a key whose exact logit is -inf (an infinite
// q or k) weighs 0, as if masked, and then neither a row whose every key
// does (NaN, or fully masked) nor the non-finite v of such a key is pinned.

struct call_case;
std::string describe(const call_case& c);
const call_case* current = nullptr;  // the case being run, printed on failure

// Aborts with the property, the case and, if given, a printf-style detail.
[[noreturn]] __attribute__((format(printf, 2, 3))) void fail(const char* what, const char* detail = nullptr, ...) {
  std::fprintf(stderr, "fuzz property broken: %s\n", what);
  if (current) std::fprintf(stderr, "  case: %s\n", describe(*current).c_str());
  if (detail) {
    va_list args;
    va_start(args, detail);
    std::fprintf(stderr, "  at: ");
    std::vfprintf(stderr, detail, args);
    std::fprintf(stderr, "\n");
    va_end(args);
  }
  std::abort();
}

// Reads the fuzzer's bytes; 0 once they run out.
struct reader {
  const std::uint8_t* p;
  std::size_t n;
  std::uint8_t u8() { return n ? (--n, *p++) : 0; }
};

// Values come from the bytes after the header; once they run out, from a
// hash of the element's index, so short inputs still fill every tensor.
struct values {
  reader r;
  std::uint32_t i = 0;
  std::uint8_t u8() {
    ++i;
    if (r.n) return r.u8();
    std::uint32_t x = i * 2654435761u;
    x ^= x >> 15;
    return std::uint8_t(x >> 7);
  }
};

using any_mask = std::variant<no_mask, causal, sliding_window, sinks_window, chunk_local>;

// Visibility from the README's definitions, written independently of
// kernels/mask.hpp: bottom-right alignment puts the last query on the last key.
struct visibility {
  int kind;  // 0 none, 1 causal, 2 sliding, 3 sinks, 4 chunk
  index_t off, window, sinks, chunk, n_kv;
  bool operator()(index_t i, index_t j) const {
    if (j < 0 || j >= n_kv) return false;
    const index_t last = i + off;  // the row's own key position
    switch (kind) {
      case 0: return true;
      case 1: return j <= last;
      case 2: return j <= last && j > last - window;
      case 3: return j <= last && (j > last - window || j < sinks);
      default: return last >= 0 && j <= last && j / chunk == last / chunk;
    }
  }
};

// 64-byte-aligned memory of exactly n floats (ASan sees the true end).
struct block {
  float* p = nullptr;
  std::size_t n = 0;
  block() = default;
  explicit block(std::size_t count) : n(count) {
    if (n) p = static_cast<float*>(::operator new(n * sizeof(float), std::align_val_t{64}));
  }
  block(const block&) = delete;
  block& operator=(block&& o) noexcept {
    std::swap(p, o.p);
    std::swap(n, o.n);
    return *this;
  }
  ~block() {
    if (p) ::operator delete(p, std::align_val_t{64});
  }
  std::vector<float> bits() const { return std::vector<float>(p, p + n); }
  bool same(const std::vector<float>& b) const { return n == b.size() && (n == 0 || std::memcmp(p, b.data(), n * 4) == 0); }
};

// A view as numbers (rank 4 or 3), so mutations edit it freely.
template <int R>
struct vspec {
  float* data = nullptr;
  index_t e[R]{}, s[R]{};
  bool empty() const {
    for (int r = 0; r < R; ++r)
      if (e[r] == 0) return true;
    return false;
  }
  float& at(const index_t* ix) const {
    index_t off = 0;
    for (int r = 0; r < R; ++r) off += ix[r] * s[r];
    return data[off];
  }
};
using spec4 = vspec<4>;
using spec3 = vspec<3>;

tensor4_view<float> view4(const spec4& v) {
  return tensor4_view<float>(v.data, tensor4_view<float>::extents_type(v.e[0], v.e[1], v.e[2], v.e[3]),
                             {v.s[0], v.s[1], v.s[2], v.s[3]});
}
lse_view view3(const spec3& v) {
  return lse_view(v.data, dextents<index_t, 3>(v.e[0], v.e[1], v.e[2]), {v.s[0], v.s[1], v.s[2]});
}

// Strides of a (B, H, N, D) tensor in layout `kind` with rows of D + pad
// floats; the base offset and float count follow from the strides' reach.
struct layout {
  index_t s[4];
  index_t base;
  std::size_t floats;
};
layout make_layout(unsigned kind, index_t B, index_t H, index_t N, index_t D, index_t pad, bool misalign) {
  const index_t dp = D + pad;
  layout L{};
  switch (kind % 8) {
    case 1: L = {{N * H * dp, dp, H * dp, 1}, 0, 0}; break;        // bnhd
    case 2: L = {{H * N * dp, N * dp, -dp, 1}, 0, 0}; break;       // tokens reversed
    case 3: L = {{0, N * dp, dp, 1}, 0, 0}; break;                 // batch broadcast (inputs)
    case 4: L = {{N * dp, 0, dp, 1}, 0, 0}; break;                 // head broadcast (inputs)
    case 5: L = {{-H * N * dp, N * dp, dp, 1}, 0, 0}; break;       // batch reversed
    case 6: L = {{N * H * dp, dp, -H * dp, 1}, 0, 0}; break;       // bnhd, tokens reversed
    default: L = {{H * N * dp, N * dp, dp, 1}, 0, 0}; break;       // bhnd
  }
  const index_t e[4] = {B, H, N, D};
  index_t lo = 0, hi = 0;
  bool empty = false;
  for (int r = 0; r < 4; ++r) {
    if (e[r] <= 0) empty = true;
    const index_t reach = (std::max<index_t>(e[r], 1) - 1) * L.s[r];
    (reach < 0 ? lo : hi) += reach;
  }
  L.base = empty ? 0 : -lo + (misalign ? 1 : 0);
  if (empty && misalign) L.base = 1;  // one past the end of a 1-float block: never read
  L.floats = empty ? (misalign ? 1 : 0) : std::size_t(hi - lo + 1 + (misalign ? 1 : 0)) + std::size_t(pad);
  return L;
}

spec4 place(const block& b, const layout& L, index_t B, index_t H, index_t N, index_t D) {
  spec4 v;
  v.data = b.p ? b.p + L.base : nullptr;
  const index_t e[4] = {B, H, N, D};
  for (int r = 0; r < 4; ++r) v.e[r] = e[r], v.s[r] = L.s[r];
  return v;
}

// What a mutation promises about the call.
enum class expect { accept, reject, either };

struct call_case {
  bool decode = false, with_lse = false, with_logits = false, long_mode = false, share_inputs = false;
  int mask_kind = 0;
  alignment align = alignment::bottom_right;
  index_t window = 1, sinks = 0, chunk = 1;
  index_t b = 1, h_kv = 1, group = 1, h = 1, n_q = 1, n_kv = 1, d = 1, d_v = 1;
  float scale = 1;
  unsigned lay[4]{};  // q, k, v, o
  index_t pad[4]{};
  bool mis[4]{};
  index_t lse_stride = 1, logits_pad = 0, first = 0, w = 0;
  int mode = 0;  // 0 moderate, 1 large, 2 non-finite injected, 3 raw bits
  bool mixed = false;  // large: signs per element (q . k may overflow as inf - inf), else per row
  float amp = 1;
  bool bf16 = false;  // attention() only: the call again with compute_precision::bf16
  int mutation = 0;
  std::uint8_t mparam = 0;
};

std::string describe(const call_case& c) {
  static const char* masks[] = {"no_mask", "causal", "sliding_window", "sinks_window", "chunk_local"};
  return detail::concat(c.decode ? "decode" : "attention", " mask ", masks[c.mask_kind],
                        c.align == alignment::top_left ? "(top_left" : "(bottom_right", " w ", c.window, " sinks ",
                        c.sinks, " chunk ", c.chunk, ") b ", c.b, " h ", c.h, " h_kv ", c.h_kv, " n_q ", c.n_q,
                        " n_kv ", c.n_kv, " d ", c.d, " d_v ", c.d_v, " scale ", c.scale, " layouts ", c.lay[0],
                        c.lay[1], c.lay[2], c.lay[3], " pads ", c.pad[0], c.pad[1], c.pad[2], c.pad[3],
                        " misaligned ", c.mis[0], c.mis[1], c.mis[2], c.mis[3], c.share_inputs ? " shared" : "",
                        c.with_lse ? " lse stride " : " no lse", c.with_lse ? c.lse_stride : 0,
                        c.with_logits ? " logits first " : " no logits", c.first, " w ", c.w, " mode ", c.mode,
                        c.mixed ? " mixed" : "", c.bf16 ? " bf16" : "",
                        " amp ", c.amp, " mutation ", c.mutation, "/", int(c.mparam));
}

const index_t dims_small[16] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 23, 31, 33, 40, 64};

call_case decode_header(reader& r) {
  call_case c;
  const std::uint8_t f = r.u8();
  c.decode = f & 1;
  c.with_lse = f & 2;
  c.with_logits = f & 4;
  c.long_mode = (f & 0x58) == 0x58;  // one input in eight
  c.share_inputs = f & 0x20;
  const std::uint8_t m = r.u8();
  c.mask_kind = (m & 0x7f) % 5;
  c.align = (m & 0x80) ? alignment::top_left : alignment::bottom_right;
  const std::uint8_t mp_a = r.u8(), mp_b = r.u8();
  const std::uint8_t bh = r.u8();
  const index_t heads[8][2] = {{1, 1}, {1, 2}, {2, 1}, {1, 3}, {2, 2}, {1, 4}, {4, 1}, {3, 2}};  // (h_kv, group)
  c.b = 1 + bh % 4;
  c.h_kv = heads[(bh >> 2) % 8][0];
  c.group = heads[(bh >> 2) % 8][1];
  const std::uint8_t nq = r.u8(), nkv = r.u8();
  if (c.long_mode) {
    c.b = 1, c.h_kv = 1 + bh % 2, c.group = 1 + (bh >> 1) % 2;
    c.n_q = c.decode ? 1 + nq % 8 : 41 + nq % 20;
    c.n_kv = c.decode ? 400 + 4 * index_t(nkv) : 41 + nkv % 260;
  } else {
    c.n_q = c.decode ? nq % 5 : nq % 41;
    c.n_kv = nkv % 41;
  }
  c.h = c.h_kv * c.group;
  const std::uint8_t dd = r.u8(), ddv = r.u8();
  c.d = c.long_mode ? 1 + dd % 16 : dims_small[dd % 16];
  c.d_v = ddv < 128 ? c.d : (c.long_mode ? 1 + ddv % 16 : dims_small[ddv % 16]);
  c.window = 1 + mp_a % (c.n_kv + 4);
  c.chunk = 1 + mp_a % (c.n_kv + 4);
  c.sinks = mp_b % 8;
  const std::uint8_t sc = r.u8();
  const float ds = default_scale(c.d);
  const float scales[8] = {ds, 3 * ds, 10 * ds, 30 * ds, -ds, 1.0f, 0.0f, 1e-3f};
  c.scale = scales[sc % 8];
  const std::uint8_t l1 = r.u8(), l2 = r.u8();
  c.lay[0] = l1 & 7, c.lay[1] = (l1 >> 3) & 7, c.lay[2] = l2 & 7, c.lay[3] = (l2 >> 3) & 7;
  if (c.lay[3] == 3 || c.lay[3] == 4) c.lay[3] = 0;  // an output may not broadcast (it would overlap itself)
  for (int t = 0; t < 4; ++t) c.pad[t] = ((l1 ^ l2) >> (2 * t)) & 1 ? 1 + t % 3 : 0;
  c.mis[0] = l1 & 0x40, c.mis[1] = l1 & 0x80, c.mis[2] = l2 & 0x40, c.mis[3] = l2 & 0x80;
  const std::uint8_t lo = r.u8();
  c.lse_stride = 1 + lo % 3;
  c.logits_pad = (lo >> 2) % 3;
  // Row logits of attention(): rows [first, first + w) of the n_q.
  c.first = c.n_q ? (lo >> 4) % (c.n_q + 1) : 0;
  const std::uint8_t wb = r.u8();
  c.w = c.n_q - c.first ? 1 + wb % (c.n_q - c.first) : 0;
  const std::uint8_t md = r.u8();
  switch (md % 8) {
    case 0: case 1: case 2: case 3: c.mode = 0; break;
    case 4: c.mode = 1; break;
    case 5: c.mode = 1, c.mixed = true; break;
    case 6: c.mode = 2; break;
    default: c.mode = 3; break;
  }
  const float amps[4] = {1.0f, 0.125f, 4.0f, 1.0f};
  c.amp = amps[(md >> 3) % 4];
  c.bf16 = !c.decode && (md & 0x20);  // decode has no compute option (it is f32, bandwidth-bound)
  const std::uint8_t mu = r.u8();
  c.mutation = mu < 128 ? 0 : 1 + (mu - 128) % 19;
  c.mparam = r.u8();
  return c;
}

float moderate(values& in, float amp) { return float(std::int8_t(in.u8())) / 32.0f * amp; }

// Same-sign rows of large magnitude: (1 + m/16) 2^e, e in [-10, 66].
float large(values& in, float sign) {
  const std::uint8_t a = in.u8(), b = in.u8();
  if (a == 0) return 0.0f;
  return sign * (1.0f + float(a & 15) / 16.0f) * std::ldexp(1.0f, int(b % 77) - 10);
}

float raw(values& in) {
  std::uint32_t u = 0;
  for (int i = 0; i < 4; ++i) u = u << 8 | in.u8();
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// Fills a tensor's logical elements (rows one sign each in the large mode).
void fill(const spec4& t, const call_case& c, values& in, bool is_v) {
  index_t ix[4];
  for (ix[0] = 0; ix[0] < t.e[0]; ++ix[0])
    for (ix[1] = 0; ix[1] < t.e[1]; ++ix[1])
      for (ix[2] = 0; ix[2] < t.e[2]; ++ix[2]) {
        const std::uint8_t signs = in.u8();
        for (ix[3] = 0; ix[3] < t.e[3]; ++ix[3]) {
          const bool negative = c.mixed ? (signs >> (ix[3] % 8)) & 1 : signs & 1;
          float x;
          if (c.mode == 3) x = raw(in);
          else if (c.mode == 1 && !is_v) x = large(in, negative ? -1.0f : 1.0f);
          else x = moderate(in, c.amp);
          t.at(ix) = x;
        }
      }
}

struct setup {
  call_case c;
  block bq, bk, bv, bo, bl, bg;
  spec4 q, k, v, o, lg;
  spec3 lse;
  any_mask mask;
  row_logits rows{};
  expect want = expect::accept;
  compute_precision compute = compute_precision::f32;
};

// Builds the views of case c (valid), then applies its mutation.
void build(setup& s, values& in) {
  call_case& c = s.c;
  const layout lq = make_layout(c.lay[0], c.b, c.h, c.n_q, c.d, c.pad[0], c.mis[0]);
  const layout lk = make_layout(c.lay[1], c.b, c.h_kv, c.n_kv, c.d, c.pad[1], c.mis[1]);
  const layout lv = make_layout(c.lay[2], c.b, c.h_kv, c.n_kv, c.d_v, c.pad[2], c.mis[2]);
  const layout lo = make_layout(c.lay[3], c.b, c.h, c.n_q, c.d_v, c.pad[3], c.mis[3]);
  // Inputs sharing memory (self-attention on one buffer) are valid: k
  // reads q's rows, and v k's, when their shapes and layouts agree.
  const bool k_on_q = c.share_inputs && c.h_kv == c.h && c.n_kv == c.n_q;
  const bool v_on_k = c.share_inputs && c.d_v == c.d;
  s.bq = block(lq.floats);
  s.bk = block(k_on_q ? 0 : lk.floats);
  s.bv = block(v_on_k ? 0 : lv.floats);
  s.bo = block(lo.floats);
  s.q = place(s.bq, lq, c.b, c.h, c.n_q, c.d);
  s.k = k_on_q ? s.q : place(s.bk, lk, c.b, c.h_kv, c.n_kv, c.d);
  if (k_on_q) s.k.e[1] = c.h_kv, s.k.e[2] = c.n_kv;
  s.v = v_on_k ? s.k : place(s.bv, lv, c.b, c.h_kv, c.n_kv, c.d_v);
  s.o = place(s.bo, lo, c.b, c.h, c.n_q, c.d_v);
  for (block* b : {&s.bq, &s.bk, &s.bv}) std::fill(b->p, b->p + b->n, 0.5f);
  std::fill(s.bo.p, s.bo.p + s.bo.n, sentinel);
  fill(s.q, c, in, false);
  if (!k_on_q) fill(s.k, c, in, false);
  if (!v_on_k) fill(s.v, c, in, true);
  if (c.mode == 2) {  // 1-3 NaN or infinities at chosen elements of q, k or v
    const int count = 1 + in.u8() % 3;
    for (int t = 0; t < count; ++t) {
      const std::uint8_t which = in.u8();
      const spec4& x = which % 3 == 0 ? s.q : which % 3 == 1 ? s.k : s.v;
      if (x.empty()) continue;
      index_t ix[4];
      for (int r = 0; r < 4; ++r) ix[r] = index_t(in.u8()) % x.e[r];
      const float bad[3] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity()};
      x.at(ix) = bad[(which / 3) % 3];
    }
  }
  if (c.with_lse) {
    s.bl = block(std::size_t(c.b * c.h * c.n_q * c.lse_stride) + 1);
    std::fill(s.bl.p, s.bl.p + s.bl.n, sentinel);
    s.lse.data = s.bl.p;
    s.lse.e[0] = c.b, s.lse.e[1] = c.h, s.lse.e[2] = c.n_q;
    // (b, h, n) or (b, n, h) order, with a token stride of lse_stride.
    if (c.lse_stride == 3) s.lse.s[0] = c.h * c.n_q, s.lse.s[1] = 1, s.lse.s[2] = c.h;
    else s.lse.s[0] = c.h * c.n_q * c.lse_stride, s.lse.s[1] = c.n_q * c.lse_stride, s.lse.s[2] = c.lse_stride;
  }
  if (c.with_logits) {
    const index_t rows = c.decode ? c.n_q : c.w, ld = c.n_kv + c.logits_pad;
    s.bg = block(std::size_t(c.b * c.h * rows * ld));
    std::fill(s.bg.p, s.bg.p + s.bg.n, sentinel);
    s.lg.data = s.bg.p;
    const index_t e[4] = {c.b, c.h, rows, c.n_kv}, st[4] = {c.h * rows * ld, rows * ld, ld, 1};
    for (int r = 0; r < 4; ++r) s.lg.e[r] = e[r], s.lg.s[r] = st[r];
    s.rows.first = c.first;
  }
  switch (c.mask_kind) {
    case 0: s.mask = no_mask{}; break;
    case 1: s.mask = causal{c.align}; break;
    case 2: s.mask = sliding_window{c.window, c.align}; break;
    case 3: s.mask = sinks_window{c.sinks, c.window, c.align}; break;
    default: s.mask = chunk_local{c.chunk, c.align}; break;
  }

  // ---- The mutation: each makes the call invalid by the README, or (where
  // noted) keeps it valid, or its effect depends on the shapes (either).
  const std::uint8_t p = c.mparam;
  spec4* views[5] = {&s.q, &s.k, &s.v, &s.o, c.with_logits ? &s.lg : &s.o};
  spec4& pick = *views[p % 5];
  const bool pick_lg = &pick == &s.lg;
  // Whether the entry point must check `pick`: q, k, v and o always; decode's
  // logits when their data is not null; attention's row logits when anything
  // but the default {0, {}} is passed.
  const auto lg_checked = [&] {
    if (c.decode) return s.lg.data != nullptr;
    bool nonempty = true;  // the view's size is not 0 (no extent is 0)
    for (index_t x : s.lg.e) nonempty &= x != 0;
    return s.lg.data != nullptr || nonempty || s.rows.first != 0;
  };
  const auto checked = [&] { return !pick_lg || lg_checked(); };
  const float bad[3] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity()};
  switch (c.mutation) {
    case 0: break;
    case 1: {  // one batch size differs
      spec4* t[3] = {&s.k, &s.v, &s.o};
      t[p % 3]->e[0] += p & 8 ? -1 : 1;
      s.want = expect::reject;
      break;
    }
    case 2:  // d = 0 on q and k
      s.q.e[3] = s.k.e[3] = 0;
      s.want = expect::reject;
      break;
    case 3:  // k's head dim differs from q's
      s.k.e[3] += s.k.e[3] > 1 && (p & 1) ? -1 : 1;
      s.want = expect::reject;
      break;
    case 4:  // d_v = 0 on v and o
      s.v.e[3] = s.o.e[3] = 0;
      s.want = expect::reject;
      break;
    case 5:  // no KV heads while there are query heads
      s.k.e[1] = s.v.e[1] = 0;
      s.want = expect::reject;
      break;
    case 6: {  // query heads not a multiple of the KV heads (q, o, lse, logits agree)
      // h_kv = 1 takes any h: then h = 0, valid, with nothing to do.
      const index_t h = c.h_kv >= 2 ? c.h - 1 : 0;
      s.q.e[1] = s.o.e[1] = h;
      if (s.lg.data || c.with_logits) s.lg.e[1] = h;
      if (s.lse.data) s.lse.e[1] = h;
      s.want = c.h_kv >= 2 ? expect::reject : expect::accept;
      break;
    }
    case 7:  // v's (h_kv, n_kv) differ from k's
      s.v.e[1 + p % 2] += (p & 4) && s.v.e[1 + p % 2] > 0 ? -1 : 1;
      s.want = expect::reject;
      break;
    case 8: {  // o is not (b, h, n_q, d_v)
      const int ax = 1 + p % 3;
      s.o.e[ax] += (p & 4) && s.o.e[ax] > 0 ? -1 : 1;
      s.want = expect::reject;
      break;
    }
    case 9:  // lse of the wrong shape (no lse: nothing to break)
      if (s.lse.data) {
        s.lse.e[p % 3] += (p & 4) && s.lse.e[p % 3] > 0 ? -1 : 1;
        s.want = expect::reject;
      }
      break;
    case 10:  // logits of the wrong shape, or rows outside [0, n_q)
      if (c.with_logits && (s.lg.data || !c.decode)) {
        if (!c.decode && (p & 1)) {
          s.rows.first = p & 2 ? -1 - index_t(p >> 4) : c.n_q - s.lg.e[2] + 1 + index_t(p >> 4);
        } else {
          const int ax = (p >> 1) % 4;
          if (!c.decode && ax == 2)  // any w within n_q - first is fine: past it is wrong
            s.lg.e[2] = c.n_q - s.rows.first + 1;
          else
            s.lg.e[ax] += (p & 8) && s.lg.e[ax] > 0 ? -1 : 1;
        }
        // An empty view without data and rows from 0 is "no logits", whatever its extents.
        s.want = lg_checked() ? expect::reject : expect::either;
      } else if (!c.decode && !c.with_logits && c.b > 0) {  // a row range without a view is a mistake
        s.rows.first = 1 + p % 7;
        s.want = expect::reject;
      }
      break;
    case 11:  // non-finite scale
      c.scale = bad[p % 3];
      s.want = expect::reject;
      break;
    case 12:  // a bad mask parameter (masks without parameters: still valid)
      switch (c.mask_kind) {
        case 2: s.mask = sliding_window{-index_t(p % 3), c.align}; s.want = expect::reject; break;
        case 3:
          s.mask = p & 1 ? sinks_window{-1 - index_t(p % 5), c.window, c.align}
                         : sinks_window{c.sinks, -index_t(p % 3), c.align};
          s.want = expect::reject;
          break;
        case 4: s.mask = chunk_local{-index_t(p % 3), c.align}; s.want = expect::reject; break;
        default: break;
      }
      break;
    case 13:  // a non-contiguous last axis (one column is contiguous whatever its stride)
      pick.s[3] = p & 8 ? 2 : (p & 16 ? 0 : -1);
      s.want = pick.e[3] > 1 && checked() ? expect::reject : expect::either;
      break;
    case 14:  // null data: rejected unless the view is empty (or decode's logits: not requested)
      pick.data = nullptr;
      s.want = pick.empty() || (pick_lg && c.decode) ? expect::accept : expect::reject;
      break;
    case 15: {  // an output on an input's (or o's) first element: both spans hold it
      spec4* in_t[3] = {&s.q, &s.k, &s.v};
      const spec4& src = *in_t[p % 3];
      s.want = expect::reject;
      if ((p & 8) && s.lse.data && !src.empty() && !s.lse.empty())
        s.lse.data = src.data;
      else if ((p & 16) && s.lg.data && !src.empty() && !s.lg.empty())
        s.lg.data = src.data;
      else if ((p & 32) && s.lse.data && !s.o.empty() && !s.lse.empty())
        s.lse.data = s.o.data;
      else if ((p & 64) && s.lg.data && !s.o.empty() && !s.lg.empty())
        s.lg.data = s.o.data;
      else if (!src.empty() && !s.o.empty())
        s.o.data = src.data;
      else
        s.want = expect::either;
      break;
    }
    case 16:  // o interleaved with q without sharing an element: rejected too
      if (!c.share_inputs && c.d_v == c.d && !s.q.empty()) {
        // q's rows at the even, o's at the odd row slots of one buffer.
        s.bo = block(0);
        s.bq = block(std::size_t(c.b * c.h * c.n_q * 2 * c.d));
        for (std::size_t i = 0; i < s.bq.n; ++i) s.bq.p[i] = float(i % 7) * 0.25f;
        const index_t st[4] = {c.h * c.n_q * 2 * c.d, c.n_q * 2 * c.d, 2 * c.d, 1};
        for (int r = 0; r < 4; ++r) s.q.s[r] = s.o.s[r] = st[r];
        s.q.data = s.bq.p;
        s.o.data = s.bq.p + c.d;
        // One row each: q's span ends where o's begins, and the call is valid.
        s.want = c.b * c.h * c.n_q >= 2 ? expect::reject : expect::accept;
      }
      break;
    case 17:  // a negative extent on a checked view (or on lse)
      if (p & 1) {
        pick.e[(p >> 1) % 4] = -1 - index_t(p >> 5);
        s.want = checked() || !pick_lg ? expect::reject : expect::either;
        if (pick_lg && !c.decode) s.want = expect::reject;  // negative size: not the default
      } else if (s.lse.data) {
        s.lse.e[(p >> 1) % 3] = -1;
        s.want = expect::reject;
      }
      break;
    case 18: {  // extents or strides whose element count or reach overflows index_t
      const int ax = (p >> 1) % 4;
      if (p & 1) {
        pick.e[ax] = index_t(1) << (40 + p % 23);
        if (ax < 3) pick.s[ax] = index_t(1) << (30 + (p >> 3) % 33);
      } else {
        const int a = ax < 3 ? ax : 2;
        pick.s[a] = (p & 8) ? std::numeric_limits<index_t>::min() : index_t(1) << 62;
        pick.e[a] = std::max<index_t>(pick.e[a], 3);
      }
      // An empty view reaches nothing and may pass; decode's null logits are not read.
      s.want = !pick.empty() && checked() ? expect::reject : expect::either;
      break;
    }
    case 19:  // valid but odd: no batch, no query rows or no keys; null data where empty
      switch (p % 3) {
        case 0:
          for (spec4* t : {&s.q, &s.k, &s.v, &s.o, &s.lg}) t->e[0] = 0;
          s.lse.e[0] = 0;
          break;
        case 1:
          s.q.e[2] = s.o.e[2] = 0;
          s.lse.e[2] = 0;
          s.lg.e[2] = 0;
          s.rows.first = 0;
          break;
        default:
          s.k.e[2] = s.v.e[2] = 0;
          s.lg.e[3] = 0;
          break;
      }
      if (p & 8)
        for (spec4* t : {&s.q, &s.k, &s.v, &s.o})
          if (t->empty()) t->data = nullptr;
      s.want = expect::accept;
      break;
    default: break;
  }
}

template <class Exec>
void call(setup& s, Exec& exec) {
  const call_case& c = s.c;
  const auto q = tensor4_view<const float>(view4(s.q)), k = tensor4_view<const float>(view4(s.k)),
             v = tensor4_view<const float>(view4(s.v));
  const auto o = view4(s.o);
  const lse_view lse = view3(s.lse);  // null data: not requested
  std::visit(
      [&](const auto& m) {
        if (c.decode) {
          decode(q, k, v, o, c.scale, m, lse, exec, view4(s.lg));
        } else {
          row_logits rows = s.rows;
          rows.logits = view4(s.lg);
          attention(q, k, v, o, c.scale, m, lse, exec, rows, s.compute);
        }
      },
      s.mask);
}

// Runs the call; true when it was accepted. Only invalid_argument may escape.
template <class Exec>
bool run(setup& s, Exec& exec) {
  try {
    call(s, exec);
  } catch (const longctx::invalid_argument&) {
    return false;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "exception: %s\n", e.what());
    fail("an exception other than longctx::invalid_argument escaped");
  } catch (...) {
    fail("a non-std exception escaped");
  }
  return true;
}

// Marks the floats of block b that view t's elements occupy.
template <int R>
NO_COVERAGE void mark(std::vector<char>& m, const block& b, const vspec<R>& t) {
  if (!t.data || t.empty()) return;
  index_t ix[4] = {0, 0, 0, 0};
  const index_t base = t.data - b.p;
  const auto rec = [&](auto&& self, int r, index_t off) -> void {
    if (r == R) {
      if (off < 0 || std::size_t(off) >= b.n) fail("an accepted output view reaches outside its buffer (harness)");
      m[std::size_t(off)] = 1;
      return;
    }
    for (ix[r] = 0; ix[r] < t.e[r]; ++ix[r]) self(self, r + 1, off + ix[r] * t.s[r]);
  };
  rec(rec, 0, base);
}

thread_pool& pool() {
  static thread_pool p(2);
  return p;
}

// ---- Value properties of an accepted call. ---------------------------------

// Head (bi, hi) of t as rows x cols row-major floats.
NO_COVERAGE void copy_head(const spec4& t, index_t bi, index_t hi, std::vector<float>& out) {
  const index_t n = t.e[2], cols = t.e[3];
  out.resize(std::size_t(n * cols));
  if (n == 0 || cols == 0) return;
  const float* base = t.data + bi * t.s[0] + hi * t.s[1];
  for (index_t i = 0; i < n; ++i)
    for (index_t x = 0; x < cols; ++x) out[std::size_t(i * cols + x)] = base[i * t.s[2] + x * t.s[3]];
}

NO_COVERAGE bool all_finite(const float* p, index_t n) {
  for (index_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) return false;
  return true;
}

// reference::attention_head's formula on plain arrays (q (n_q, d), k (n_kv,
// d), v (n_kv, d_v) row-major), for every head; the reference itself runs
// on one head per call and the two must agree (its views are slow here).
template <class Visible>
NO_COVERAGE void oracle_head(const float* q, const float* k, const float* v, index_t n_q, index_t n_kv, index_t d,
                             index_t d_v, double scale, const Visible& visible, reference::attention_result& r) {
  constexpr double ninf = -std::numeric_limits<double>::infinity();
  r.o.assign(static_cast<std::size_t>(n_q * d_v), 0.0);
  r.lse.assign(static_cast<std::size_t>(n_q), ninf);
  r.logits.assign(static_cast<std::size_t>(n_q * n_kv), ninf);
  for (index_t i = 0; i < n_q; ++i) {
    double m = ninf;
    double* lg = r.logits.data() + i * n_kv;
    for (index_t j = 0; j < n_kv; ++j) {
      if (!visible(i, j)) continue;
      double dot = 0;
      for (index_t p = 0; p < d; ++p) dot += double(q[i * d + p]) * double(k[j * d + p]);
      lg[j] = dot * scale;
      m = std::max(m, lg[j]);
    }
    if (m == ninf) continue;
    double l = 0;
    for (index_t j = 0; j < n_kv; ++j)
      if (lg[j] != ninf) l += std::exp(lg[j] - m);
    double* o = r.o.data() + i * d_v;
    for (index_t j = 0; j < n_kv; ++j) {
      if (lg[j] == ninf) continue;
      const double p = std::exp(lg[j] - m) / l;
      for (index_t c = 0; c < d_v; ++c) o[c] += p * double(v[j * d_v + c]);
    }
    r.lse[static_cast<std::size_t>(i)] = m + std::log(l);
  }
}

// Two oracles' results agree (NaN with NaN).
NO_COVERAGE bool agree(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!(a[i] == b[i] || std::abs(a[i] - b[i]) <= 1e-9 * (1 + std::abs(b[i])) || (std::isnan(a[i]) && std::isnan(b[i]))))
      return false;
  return true;
}

// The f32 kernel's tolerances against the double oracle, for a row whose
// largest |scale| sum_p |q_p k_p| is `a` and largest |v| is `v`; the bf16
// bounds of check_bf16 add to these.
NO_COVERAGE double f32_output_tol(double a, double v) { return (1e-3 + 16 * eps * (1 + a)) * v + 1e-30; }
NO_COVERAGE double f32_lse_tol(double lse, double a) { return 1e-4 * (1 + std::abs(lse)) + 16 * eps * (1 + a); }

// Puts every block back to the bits it held before the call.
NO_COVERAGE void restore(block* const (&blocks)[6], const std::vector<float> (&before)[6]) {
  for (int i = 0; i < 6; ++i)
    if (blocks[i]->n) std::memcpy(blocks[i]->p, before[i].data(), blocks[i]->n * 4);
}

// Fails unless the call changed nothing but the elements `out` marks.
NO_COVERAGE void check_wrote_only(block* const (&blocks)[6], const std::vector<float> (&before)[6],
                                  const std::vector<char> (&out)[6], const char* what) {
  for (int i = 0; i < 6; ++i)
    for (std::size_t j = 0; j < blocks[i]->n; ++j)
      if (!out[i][j] && std::memcmp(&blocks[i]->p[j], &before[i][j], 4) != 0) fail(what);
}

NO_COVERAGE void check_values(const setup& s) {
  // The shapes as the call saw them (a valid mutation may have emptied an axis).
  call_case c = s.c;
  c.b = s.o.e[0], c.h = s.o.e[1], c.n_q = s.o.e[2], c.n_kv = s.k.e[2];
  if (c.b * c.h * c.n_q == 0) return;
  const index_t n_q = c.n_q, n_kv = c.n_kv, d = c.d, d_v = c.d_v;
  const visibility vis{c.mask_kind, c.align == alignment::bottom_right ? n_kv - n_q : 0,
                       c.window, c.sinks, c.chunk, n_kv};
  const auto sz = [](index_t n) { return static_cast<std::size_t>(n); };
  constexpr double big = std::numeric_limits<float>::max(), inf = std::numeric_limits<double>::infinity();
  std::vector<char> seen(sz(n_q * n_kv)), gone(sz(n_q * n_kv));
  for (index_t i = 0; i < n_q; ++i)
    for (index_t j = 0; j < n_kv; ++j) seen[sz(i * n_kv + j)] = vis(i, j);
  const auto visible = [&](index_t i, index_t j) { return seen[sz(i * n_kv + j)] != 0; };
  // The keys a row weighs: visible, and (README) not an infinite input's
  // logit of exactly -inf, which weighs 0, as if masked.
  const auto weighed = [&](index_t i, index_t j) { return seen[sz(i * n_kv + j)] != 0 && !gone[sz(i * n_kv + j)]; };
  const bool has_lg = s.lg.data && !s.lg.empty();
  const index_t lg_first = c.decode ? 0 : s.rows.first, lg_rows = s.lg.e[2];
  const bool oracle = c.mode != 3;
  std::vector<float> Q, K, V;
  std::vector<char> k_bad_row(sz(n_kv));
  std::vector<double> qk(sz(n_kv)), lo(sz(d_v)), hi_v(sz(d_v)), exact(sz(n_kv));
  std::vector<char> col_nan(sz(d_v)), col_bad(sz(d_v)), col_skip(sz(d_v));
  index_t cached = -1;
  double max_v = 0;
  reference::attention_result ref;
  for (index_t bi = 0; bi < c.b; ++bi)
    for (index_t hi = 0; hi < c.h; ++hi) {
      const index_t hk = hi / c.group;
      copy_head(s.q, bi, hi, Q);
      if (cached != bi * c.h_kv + hk) {
        cached = bi * c.h_kv + hk;
        copy_head(s.k, bi, hk, K);
        copy_head(s.v, bi, hk, V);
        max_v = 0;
        for (float y : V)
          if (std::isfinite(y)) max_v = std::max(max_v, double(std::abs(y)));
        for (index_t j = 0; j < n_kv; ++j) k_bad_row[sz(j)] = !all_finite(&K[sz(j * d)], d);
      }
      // Exact logits (double: |q . k| <= d FLT_MAX^2 fits), and which are -inf.
      const auto logit = [&](index_t i, index_t j) {
        double dot = 0;
        for (index_t x = 0; x < d; ++x) dot += double(Q[sz(i * d + x)]) * double(K[sz(j * d + x)]);
        return dot * double(c.scale);
      };
      if (c.mode == 2)
        for (index_t i = 0; i < n_q; ++i)
          for (index_t j = 0; j < n_kv; ++j) gone[sz(i * n_kv + j)] = visible(i, j) && logit(i, j) == -inf;
      if (oracle) {
        oracle_head(Q.data(), K.data(), V.data(), n_q, n_kv, d, d_v, double(c.scale), weighed, ref);
        if (bi == 0 && hi == 0) {
          const auto r = reference::attention_head(make_matrix(static_cast<const float*>(Q.data()), n_q, d),
                                                   make_matrix(static_cast<const float*>(K.data()), n_kv, d),
                                                   make_matrix(static_cast<const float*>(V.data()), n_kv, d_v),
                                                   double(c.scale), weighed);
          if (!agree(ref.o, r.o) || !agree(ref.lse, r.lse) || !agree(ref.logits, r.logits))
            fail("the harness's oracle disagrees with reference::attention_head (harness)");
        }
      }
      for (index_t i = 0; i < n_q; ++i) {
        const float* orow = s.o.data + bi * s.o.s[0] + hi * s.o.s[1] + i * s.o.s[2];
        const float lse = s.lse.data ? s.lse.data[bi * s.lse.s[0] + hi * s.lse.s[1] + i * s.lse.s[2]] : 0.0f;
        const float* q = &Q[sz(i * d)];
        // What the row sees, and what reaches it.
        bool any = false, any_weighed = false, q_bad = false, poison = false;
        for (index_t x = 0; x < d; ++x) q_bad |= !std::isfinite(q[x]);
        double s_max = 0, l_max = -inf;
        for (index_t x = 0; x < d_v; ++x) {
          lo[sz(x)] = inf, hi_v[sz(x)] = -inf;
          col_nan[sz(x)] = col_bad[sz(x)] = col_skip[sz(x)] = 0;
        }
        for (index_t j = 0; j < n_kv; ++j) {
          if (!visible(i, j)) continue;
          any = true;
          const float* k = &K[sz(j * d)];
          double sum = 0;
          for (index_t x = 0; x < d; ++x) sum += std::abs(double(q[x]) * double(k[x]));
          qk[sz(j)] = std::abs(double(c.scale)) * sum;
          exact[sz(j)] = oracle ? ref.logits[sz(i * n_kv + j)] : 0;
          const float* v = &V[sz(j * d_v)];
          if (!weighed(i, j)) {  // weight 0: its v's non-finite values are not checked either way
            for (index_t x = 0; x < d_v; ++x) col_skip[sz(x)] |= !std::isfinite(v[x]);
            continue;
          }
          any_weighed = true;
          s_max = std::max(s_max, qk[sz(j)]);
          if (c.mode == 2) {
            const double l = logit(i, j);
            poison |= std::isnan(l) || l == inf;
          }
          l_max = std::max(l_max, exact[sz(j)]);
          for (index_t x = 0; x < d_v; ++x) {
            const std::size_t u = sz(x);
            if (!std::isfinite(v[x])) col_bad[u] = 1, col_nan[u] |= std::isnan(v[x]);
            lo[u] = std::min(lo[u], double(v[x])), hi_v[u] = std::max(hi_v[u], double(v[x]));
          }
        }
        if (!any) {  // fully masked: o = 0 and lse = -inf, whatever the values
          for (index_t x = 0; x < d_v; ++x)
            if (orow[x] != 0.0f) fail("a fully masked row's output is not 0", "b %ld h %ld row %ld col %ld: %g", long(bi), long(hi), long(i), long(x), double(orow[x]));
          if (s.lse.data && lse != neg_inf) fail("a fully masked row's lse is not -inf");
        }
        // Logits: -inf where masked; where visible, the oracle's (moderate
        // values), saturated at +-FLT_MAX (large values).
        if (has_lg && i >= lg_first && i < lg_first + lg_rows) {
          const float* lrow = s.lg.data + bi * s.lg.s[0] + hi * s.lg.s[1] + (i - lg_first) * s.lg.s[2];
          for (index_t j = 0; j < n_kv; ++j) {
            const float l = lrow[j];
            if (!visible(i, j)) {
              if (l != neg_inf) fail("a masked key's logit is not -inf", "b %ld h %ld row %ld key %ld: %g", long(bi), long(hi), long(i), long(j), double(l));
              continue;
            }
            if (c.mode == 1 && !(std::abs(l) <= big)) fail("a logit on finite input is not finite (saturated)", "b %ld h %ld row %ld key %ld: %g, exact %g", long(bi), long(hi), long(i), long(j), double(l), exact[sz(j)]);
            if ((c.mode != 0 && c.mode != 2) || q_bad || k_bad_row[sz(j)]) continue;
            const double rl = exact[sz(j)];
            const double tol = 4 * double(d + 2) * eps * qk[sz(j)] + 2 * eps * std::abs(rl) + 1e-30;
            if (!(std::abs(double(l) - rl) <= tol)) fail("a logit is off the oracle's", "b %ld h %ld row %ld key %ld: %.9g, oracle %.9g, tol %g", long(bi), long(hi), long(i), long(j), double(l), rl, tol);
          }
        }
        if (!any || c.mode == 3) continue;
        const double tol = f32_output_tol(s_max, max_v);
        if (c.mode == 2) {
          if (poison) {  // a NaN or +inf logit: the row is NaN
            for (index_t x = 0; x < d_v; ++x)
              if (!std::isnan(orow[x])) fail("a NaN or infinity in q or a visible k gave a non-NaN output");
            if (s.lse.data && !std::isnan(lse)) fail("a NaN or infinity in q or a visible k gave a non-NaN lse");
            continue;
          }
          if (!any_weighed) {  // every visible logit -inf: NaN, or weight 0 throughout (fully masked)
            bool all_nan = !s.lse.data || std::isnan(lse), all_zero = !s.lse.data || lse == neg_inf;
            for (index_t x = 0; x < d_v; ++x) all_nan &= std::isnan(orow[x]), all_zero &= orow[x] == 0.0f;
            if (!all_nan && !all_zero) fail("a row whose every logit is -inf is neither NaN nor fully masked");
            continue;
          }
          for (index_t x = 0; x < d_v; ++x) {
            const float y = orow[x];
            if (col_skip[sz(x)]) continue;
            if (col_nan[sz(x)]) {
              if (!std::isnan(y)) fail("a NaN in a weighed v gave a non-NaN output");
            } else if (col_bad[sz(x)]) {
              if (std::isfinite(y)) fail("an infinity in a weighed v gave a finite output");
            } else {
              if (!std::isfinite(y)) fail("an output no non-finite input reaches is not finite");
              if (!(std::abs(double(y) - ref.o[sz(i * d_v + x)]) <= tol))
                fail("an output no non-finite input reaches is off the oracle's");
            }
          }
          if (s.lse.data) {
            const double rl = ref.lse[sz(i)];
            if (!std::isfinite(lse)) fail("a row with finite logits has a non-finite lse");
            if (!(std::abs(double(lse) - rl) <= f32_lse_tol(rl, s_max)))
              fail("an lse is off the oracle's");
          }
          continue;
        }
        // Finite inputs (moderate, or large): finite outputs in the hull of
        // the visible values; moderate ones near the oracle; rows that the
        // exact-row fallback must have recomputed (some exact logit past
        // 2 FLT_MAX, or every one below -2 FLT_MAX) exact, rounded once.
        const bool recomputed = c.mode == 1 && (l_max > 2 * big || l_max < -2 * big);
        // Large values with a decisive winner: its exact logit beats the
        // next by more than twice any float logit's error plus 50, so any
        // correct kernel (float or recomputed) weighs only it.
        bool decisive = false;
        double delta = 0;
        if (c.mode == 1) {
          double top1 = -inf, top2 = -inf;
          for (index_t j = 0; j < n_kv; ++j) {
            if (!visible(i, j)) continue;
            delta = std::max(delta, 4 * double(d + 2) * eps * qk[sz(j)]);
            const double l = exact[sz(j)];
            if (l > top1) top2 = top1, top1 = l;
            else if (l > top2) top2 = l;
          }
          decisive = top1 - top2 > 2 * delta + 50;
        }
        const double t = (1e-5 + 4 * eps * double(n_kv + 2)) * max_v;
        for (index_t x = 0; x < d_v; ++x) {
          const float y = orow[x];
          if (!std::isfinite(y)) fail("finite input gave a non-finite output", "b %ld h %ld row %ld col %ld: %g", long(bi), long(hi), long(i), long(x), double(y));
          if (!(y >= lo[sz(x)] - t && y <= hi_v[sz(x)] + t)) fail("an output lies outside the hull of the visible values", "b %ld h %ld row %ld col %ld: %.9g, hull [%.9g, %.9g]", long(bi), long(hi), long(i), long(x), double(y), lo[sz(x)], hi_v[sz(x)]);
          const double r = ref.o[sz(i * d_v + x)];
          if (c.mode == 0 && !(std::abs(double(y) - r) <= tol)) fail("an output is off the oracle's", "b %ld h %ld row %ld col %ld: %.9g, oracle %.9g, tol %g", long(bi), long(hi), long(i), long(x), double(y), r, tol);
          if (decisive && !(std::abs(double(y) - r) <= 4 * eps * std::abs(r) + 1e-5 * max_v))
            fail("a row of large values with a decisive winner is off the exact softmax",
                 "b %ld h %ld row %ld col %ld: %.9g, exact %.9g", long(bi), long(hi), long(i), long(x), double(y), r);
          if (recomputed && !(std::abs(double(y) - r) <= 4 * eps * std::abs(r) + 1e-12 * max_v))
            fail("a row of extreme logits is not the exact softmax rounded once", "b %ld h %ld row %ld col %ld: %.9g, exact %.9g", long(bi), long(hi), long(i), long(x), double(y), r);
        }
        if (s.lse.data) {
          if (!std::isfinite(lse)) fail("a row that sees a key has a non-finite lse on finite input", "b %ld h %ld row %ld: %g", long(bi), long(hi), long(i), double(lse));
          const double rl = ref.lse[sz(i)];
          if (c.mode == 0 && !(std::abs(double(lse) - rl) <= f32_lse_tol(rl, s_max)))
            fail("an lse is off the oracle's");
          const double rs = std::clamp(rl, -big, big);  // saturated, as returned
          if (decisive && !(std::abs(double(lse) - rs) <= 2 * delta + 4 * eps * std::abs(rs) + 1e-5))
            fail("a decisive row's lse is off the exact one", "b %ld h %ld row %ld: %.9g, exact %.9g", long(bi),
                 long(hi), long(i), double(lse), rs);
          if (recomputed && !(std::abs(double(lse) - rs) <= 4 * eps * std::abs(rs)))
            fail("a recomputed row's lse is not the exact one, saturated", "b %ld h %ld row %ld: %.9g, exact %.9g", long(bi), long(hi), long(i), double(lse), rs);
        }
      }
    }
}

// The accepted attention() call again with compute_precision::bf16 (one
// case in two): accepted too (or longctx::unsupported, writing nothing,
// where the AMX engine is compiled and the CPU or OS refuses it), writing
// only its outputs, serial and 2-thread bits equal; with no 16-bit engine
// compiled (scalar, AVX2) the f32 call's bits; with one, on moderate
// values, within the engines' bound of the f32 result (tests/kernels/
// engines.cpp: bf16 rounding of the operands, u = 2^-8, A the row's largest
// |scale| sum_p |q_p k_p|, V its largest |v|): o within
// (expm1(4 u A) + 2 u) V plus twice the f32 tolerance, logits within
// 2 u A + 1e-6, lse within 2 u A plus the f32 tolerance; fully masked rows
// 0 and -inf as in f32, on any values.
NO_COVERAGE void check_bf16(setup& s, block* const (&blocks)[6], const std::vector<float> (&before)[6],
                            const std::vector<char> (&out)[6], const std::vector<float> (&f32)[6]) {
  const auto attempt = [&](auto&& exec) {
    s.compute = compute_precision::bf16;
    bool ran = true;
    try {
      call(s, exec);
    } catch (const longctx::unsupported&) {
      ran = false;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "exception: %s\n", e.what());
      fail("bf16 compute threw on a call f32 accepted");
    }
    s.compute = compute_precision::f32;
    return ran;
  };
  restore(blocks, before);
  serial_executor serial;
  if (!attempt(serial)) {
    for (int i = 0; i < 6; ++i)
      if (!blocks[i]->same(before[i])) fail("a bf16 call refused as unsupported wrote to its arguments");
    return;
  }
  check_wrote_only(blocks, before, out, "an accepted bf16 call wrote outside its output elements");
  std::vector<float> bits[6];
  for (int i = 0; i < 6; ++i) bits[i] = blocks[i]->bits();
  restore(blocks, before);
  if (!attempt(pool())) fail("the 2-thread bf16 run was refused where the serial one ran");
  for (int i = 0; i < 6; ++i)
    if (!blocks[i]->same(bits[i])) fail("serial and 2-thread bf16 runs differ");
  if constexpr (!has_bf16_engine<default_arch>) {
    for (int i = 0; i < 6; ++i)
      if (!blocks[i]->same(f32[i])) fail("bf16 compute without a 16-bit engine differs from f32");
    return;
  } else {
    // The shapes as the call saw them (a valid mutation may have emptied an axis).
    const call_case& c = s.c;
    const index_t B = s.o.e[0], H = s.o.e[1], n_q = s.o.e[2], n_kv = s.k.e[2], d = c.d, d_v = c.d_v;
    if (B * H * n_q == 0) return;
    const visibility vis{c.mask_kind, c.align == alignment::bottom_right ? n_kv - n_q : 0, c.window, c.sinks, c.chunk,
                         n_kv};
    // f32's value of an output element: the same offset in the f32 copy of its block.
    const auto f32_of = [&](int blk, const float* p) { return f32[blk][std::size_t(p - blocks[blk]->p)]; };
    constexpr double u = 1.0 / 256;  // bf16 unit roundoff (eps is float's)
    const bool has_lg = s.lg.data && !s.lg.empty();
    for (index_t bi = 0; bi < B; ++bi)
      for (index_t hi = 0; hi < H; ++hi) {
        const index_t hk = hi / c.group;
        for (index_t i = 0; i < n_q; ++i) {
          double A = 0, V = 0;
          bool any = false;
          for (index_t j = 0; j < n_kv; ++j) {
            if (!vis(i, j)) continue;
            any = true;
            double a = 0;
            for (index_t p = 0; p < d; ++p) {
              const index_t iq[4] = {bi, hi, i, p}, ik[4] = {bi, hk, j, p};
              a += std::abs(double(s.q.at(iq)) * double(s.k.at(ik)));
            }
            A = std::max(A, std::abs(double(c.scale)) * a);
            for (index_t x = 0; x < d_v; ++x) {
              const index_t iv[4] = {bi, hk, j, x};
              V = std::max(V, std::abs(double(s.v.at(iv))));
            }
          }
          const index_t il[3] = {bi, hi, i};
          if (!any) {  // fully masked: what f32 gives, on any values
            for (index_t x = 0; x < d_v; ++x) {
              const index_t io[4] = {bi, hi, i, x};
              if (s.o.at(io) != 0.0f) fail("bf16: a fully masked row's output is not 0");
            }
            if (s.lse.data && s.lse.at(il) != neg_inf) fail("bf16: a fully masked row's lse is not -inf");
            continue;
          }
          if (c.mode != 0 || !std::isfinite(A) || !std::isfinite(V)) continue;
          const double f32_tol = f32_output_tol(A, V);
          const double tol = (std::expm1(4 * u * A) + 2 * u) * V + 2 * f32_tol;
          for (index_t x = 0; x < d_v; ++x) {
            const index_t io[4] = {bi, hi, i, x};
            const float* p = &s.o.at(io);
            if (!(std::abs(double(*p) - double(f32_of(3, p))) <= tol))
              fail("bf16 compute is off the f32 result by more than the bf16 bound",
                   "b %ld h %ld row %ld col %ld: %.9g, f32 %.9g, tol %g (A %g, V %g)", long(bi), long(hi), long(i),
                   long(x), double(*p), double(f32_of(3, p)), tol, A, V);
          }
          if (s.lse.data) {
            const float* p = &s.lse.at(il);
            if (!(std::abs(double(*p) - double(f32_of(4, p))) <= 2 * u * A + f32_lse_tol(double(*p), A)))
              fail("bf16: an lse is off the f32 one by more than the bf16 bound", "b %ld h %ld row %ld: %.9g, f32 %.9g",
                   long(bi), long(hi), long(i), double(*p), double(f32_of(4, p)));
          }
          if (has_lg && i >= s.rows.first && i < s.rows.first + s.lg.e[2])
            for (index_t j = 0; j < n_kv; ++j) {
              const index_t ig[4] = {bi, hi, i - s.rows.first, j};
              const float* p = &s.lg.at(ig);
              const float w32 = f32_of(5, p);
              if (!vis(i, j)) {
                if (*p != neg_inf) fail("bf16: a masked key's logit is not -inf");
                continue;
              }
              if (!(std::abs(double(*p) - double(w32)) <= 2 * u * A + 4 * double(d + 2) * eps * A + 1e-6))
                fail("bf16: a logit is off the f32 one by more than the bf16 bound",
                     "b %ld h %ld row %ld key %ld: %.9g, f32 %.9g (A %g)", long(bi), long(hi), long(i), long(j),
                     double(*p), double(w32), A);
            }
        }
      }
  }
}

NO_COVERAGE void exercise(setup& s) {
  block* blocks[6] = {&s.bq, &s.bk, &s.bv, &s.bo, &s.bl, &s.bg};
  std::vector<float> before[6];
  for (int i = 0; i < 6; ++i) before[i] = blocks[i]->bits();
  serial_executor serial;
  const auto t0 = std::chrono::steady_clock::now();
  static const bool timing = std::getenv("FUZZ_TIMING") != nullptr;  // print the phases' times
  const auto lap = [&](const char* what) {
    if (timing)
      std::fprintf(stderr, "%s %.3f ms\n", what, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  };
  const bool accepted = run(s, serial);
  lap("serial");
  if (!accepted) {
    for (int i = 0; i < 6; ++i)
      if (!blocks[i]->same(before[i])) fail("a rejected call wrote to its arguments");
    if (s.want == expect::accept) fail("a valid call was rejected");
    if (run(s, pool())) fail("the 2-thread run accepted what the serial run rejected");
    return;
  }
  if (s.want == expect::reject) fail("an invalid call was accepted");
  // Nothing but the output elements changed (inputs, padding, other rows).
  std::vector<char> out[6];
  for (int i = 0; i < 6; ++i) out[i].assign(blocks[i]->n, 0);
  for (int i = 0; i < 6; ++i) {
    if (s.o.data && blocks[i]->p && s.o.data >= blocks[i]->p && s.o.data < blocks[i]->p + blocks[i]->n)
      mark(out[i], *blocks[i], s.o);
    if (s.lse.data && blocks[i]->p && s.lse.data >= blocks[i]->p && s.lse.data < blocks[i]->p + blocks[i]->n)
      mark(out[i], *blocks[i], s.lse);
    if (s.lg.data && blocks[i]->p && s.lg.data >= blocks[i]->p && s.lg.data < blocks[i]->p + blocks[i]->n)
      mark(out[i], *blocks[i], s.lg);
  }
  check_wrote_only(blocks, before, out, "an accepted call wrote outside its output elements");
  // The same call on two threads gives the same bits.
  std::vector<float> serial_bits[6];
  for (int i = 0; i < 6; ++i) serial_bits[i] = blocks[i]->bits();
  restore(blocks, before);
  lap("marked");
  if (!run(s, pool())) fail("the 2-thread run rejected what the serial run accepted");
  lap("pool");
  for (int i = 0; i < 6; ++i)
    if (!blocks[i]->same(serial_bits[i])) fail("serial and 2-thread runs differ");
  if (s.want == expect::accept) check_values(s);
  lap("values");
  if (s.c.bf16) {
    check_bf16(s, blocks, before, out, serial_bits);
    lap("bf16");
  }
}

// The seed corpus: a header per entry point, mask, value kind, option set and
// mutation, then bytes for the values.
std::vector<std::vector<std::uint8_t>> seeds() {
  std::vector<std::vector<std::uint8_t>> out;
  std::uint32_t x = 12345;
  const auto next = [&] { return std::uint8_t((x = x * 1103515245u + 12345u) >> 16); };
  const auto make = [&](std::uint8_t flags, std::uint8_t mask, std::uint8_t nq, std::uint8_t nkv, std::uint8_t d,
                        std::uint8_t mode, std::uint8_t mutation, std::uint8_t mparam, std::size_t n_values) {
    std::vector<std::uint8_t> s = {flags, mask, next(), next(), next(), nq, nkv, d, next(), next(),
                                   next(), next(), next(), next(), mode, mutation, mparam};
    for (std::size_t i = 0; i < n_values; ++i) s.push_back(next());
    out.push_back(std::move(s));
  };
  for (std::uint8_t entry = 0; entry < 2; ++entry)
    for (std::uint8_t mask = 0; mask < 5; ++mask)
      for (std::uint8_t mode : {0, 4, 6, 7}) {
        const std::uint8_t flags = std::uint8_t(entry | 2 | ((mask & 1) ? 4 : 0));
        const std::uint8_t m = std::uint8_t(mask | (mode == 4 ? 0x80 : 0));
        make(flags, m, std::uint8_t(5 + mask * 7), std::uint8_t(9 + mask * 6), std::uint8_t(mask * 3 + mode), mode, 0, 0, 400);
      }
  for (std::uint8_t entry = 0; entry < 2; ++entry) {  // long: several tiles, blocks or decode chunks
    make(std::uint8_t(entry | 0x18 | 6), 1, 70, 200, 5, 0, 0, 0, 600);
    make(std::uint8_t(entry | 0x18 | 2), 3, 30, 150, 9, 4, 0, 0, 600);
  }
  make(0x20 | 2, 1, 12, 12, 6, 0, 0, 0, 300);  // q = k = v on one buffer
  for (std::uint8_t mask = 0; mask < 5; ++mask)  // attention() with compute_precision::bf16 as well
    for (std::uint8_t mode : {0x20, 0x24, 0x26}) make(std::uint8_t(2 | 4), mask, 20, 33, 13, mode, 0, 0, 600);
  make(std::uint8_t(0x18 | 6), 1, 70, 200, 15, 0x20, 0, 0, 600);  // long, bf16
  for (std::uint8_t mu = 1; mu <= 19; ++mu) make(std::uint8_t(6 | (mu & 1)), std::uint8_t(mu % 5), 7, 11, 6, 0, std::uint8_t(127 + mu), next(), 64);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  longctx_fuzz::write_seeds_if_asked(*argc, *argv, [] {
    std::vector<longctx_fuzz::seed_file> files;
    for (const auto& s : seeds()) files.push_back({"seed" + std::to_string(files.size()), {s.begin(), s.end()}});
    return files;
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  reader r{data, size};
  setup s;
  s.c = decode_header(r);
  current = &s.c;
  values in{r};
  build(s, in);
  static const bool verbose = std::getenv("FUZZ_VERBOSE") != nullptr;  // print each case
  if (verbose) std::fprintf(stderr, "case: %s want %d\n", describe(s.c).c_str(), int(s.want));
  exercise(s);
  current = nullptr;
  return 0;
}
