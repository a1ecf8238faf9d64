// libFuzzer harness: snapshots are untrusted bytes. The first input byte
// picks a policy (its low bits: every bounded-cache rule in f32, bf16 and
// int8 storage, dense, Infini in f32 and int8, FLASH) and whether the rest
// is resealed (top bit: a valid CRC-32C written over the mutated bytes, so
// the fuzzer reaches the field checks behind the checksum); the rest is
// handed to restore() on a fresh state. Properties, not only crashes:
//   - restore either throws longctx::invalid_argument and leaves the state
//     bit for bit as it was, or accepts;
//   - an accepted snapshot re-snapshots to the same bytes;
//   - the restored state then runs a few decode steps on finite input with
//     finite output (FLASH: when its restored values are in the value
//     contract's range, in_value_range), within its budget, without throwing.
// Any other exception, a sanitizer report or a broken property aborts.
//
//   clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -Iinclude \
//       -I/usr/include/eigen3 tests/fuzz/restore.cpp -o restore
//   ./restore -max_total_time=600 tests/fuzz/corpus/restore
// tools/fuzz restore 600 wraps this (corpus: tests/fuzz/corpus/restore, grown by
// the runs); -write_seeds=DIR writes valid snapshots of every policy to DIR.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <longctx/policies/dense.hpp>
#include <longctx/policies/flash.hpp>
#include <longctx/policies/infini.hpp>
#include <longctx/policies/tova.hpp>

#include "harness.hpp"
#include "policy_list.hpp"

using namespace longctx;

namespace {

const attention_dims dims{1, 4, 2, 8, 8};
constexpr index_t steps = 3;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz property broken: %s\n", what);
  std::abort();
}

// Deterministic finite input for the decode steps after a restore.
struct tokens {
  std::vector<float> q, k, v, o;
  tokens() : q(4 * 8), k(2 * 8), v(2 * 8), o(4 * 8) {
    for (std::size_t i = 0; i < q.size(); ++i) q[i] = std::sin(float(i) * 0.7f);
    for (std::size_t i = 0; i < k.size(); ++i) k[i] = std::cos(float(i) * 1.3f), v[i] = std::sin(float(i) * 2.1f);
  }
  sequence_input seq() const {
    return {from_bhnd<dynamic_extent, const float>(q.data(), 1, 4, 1, 8),
            from_bhnd<dynamic_extent, const float>(k.data(), 1, 2, 1, 8),
            from_bhnd<dynamic_extent, const float>(v.data(), 1, 2, 1, 8)};
  }
  tensor4_view<float> out() { return from_bhnd(o.data(), 1, 4, 1, 8); }
};

// One decode step of p on t's token (every policy's input type).
template <class P>
void step(const P& p, typename P::state_type& st, tokens& t) {
  using In = typename P::input_type;
  const sequence_input s = t.seq();
  if constexpr (std::is_same_v<In, sequence_input>)
    p.forward(st, s, t.out());
  else
    p.forward(st, In{s.q, s.k, s.v}, t.out());
}

// Whether a restored state's values are inside the value contract for the
// decode steps' inputs (|x| <= 1), so its outputs must be finite. Softmax
// outputs are averages of V: always. FLASH's parts and Infini's memory
// retrieval are unnormalised sums (a float matrix product's overflow rules,
// README, Safety): FLASH's restored floats (S, then the unfinished chunk's
// rows, the payload's tail before the CRC) and Infini's M and segment rows
// must stay below 1e6, where (scale q.k)^2 C |v|, q_lin S and sigma(q) M / max(sigma(q) z,
// epsilon) cannot reach FLT_MAX.
// The last n elements of T of an accepted snapshot's payload (just before
// its 4-byte CRC), copied out (the bytes need not be aligned for T).
template <class T>
std::vector<T> payload_tail(std::span<const std::byte> bytes, std::size_t n) {
  std::vector<T> out(n);
  if (n > 0) std::memcpy(static_cast<void*>(out.data()), bytes.data() + bytes.size() - 4 - sizeof(T) * n, sizeof(T) * n);
  return out;
}

template <class P>
bool in_value_range(const P& p, const typename P::state_type& st, std::span<const std::byte> bytes) {
  if constexpr (requires { st.memory(0, 0).ld_m; }) {  // Infini
    const attention_dims a = st.dims();
    for (index_t b = 0; b < a.b; ++b)
      for (index_t m = 0; m < p.memory_heads(a); ++m) {
        const auto mem = st.memory(b, m);
        for (index_t r = 0; r < mem.d_k; ++r)
          for (index_t c = 0; c < mem.d_v; ++c)
            if (!(std::abs(mem.m[r * mem.ld_m + c]) <= 1e6f)) return false;
      }
    // Rows of the unfinished segment (K, K_mem, V per KV lane, each row with
    // its storage prefix: the payload's tail before the CRC) fold into M
    // when the segment completes: their values are bounded too.
    using KV = typename P::storage_type;
    using traits = kv_storage_traits<KV>;
    constexpr index_t pre = traits::row_prefix;
    const index_t pos = st.position_in_segment(), widths[3] = {a.d, a.d, a.d_v};
    const std::vector<KV> tail =
        payload_tail<KV>(bytes, std::size_t(a.b * a.h_kv * pos * (2 * (a.d + pre) + a.d_v + pre)));
    const KV* row = tail.data();
    for (index_t bk = 0; bk < a.b * a.h_kv; ++bk)
      for (index_t w : widths)
        for (index_t r = 0; r < pos; ++r, row += pre + w)
          for (index_t c = 0; c < w; ++c)
            if (!(std::abs(traits::to_float(row[pre + c]) * traits::row_scale(row + pre)) <= 1e6f)) return false;
  }
  if constexpr (std::is_same_v<P, flash>) {
    const attention_dims a = st.dims();
    const index_t lanes = a.b * a.h_kv, pos = st.position_in_chunk();
    for (float x : payload_tail<float>(bytes, std::size_t(lanes * (a.d * a.d_v + pos * (2 * a.d + a.d_v)))))
      if (!(std::abs(x) <= 1e6f)) return false;
  }
  return true;
}

template <class P>
void exercise(const P& p, std::span<const std::byte> bytes) {
  auto st = p.make_state(dims);
  const snapshot_bytes before = st.snapshot();
  try {
    st.restore(bytes);
  } catch (const longctx::invalid_argument&) {
    if (st.snapshot() != before) fail("a rejected restore changed the state");
    return;
  }
  if (st.snapshot() != snapshot_bytes(bytes.begin(), bytes.end())) fail("an accepted snapshot does not round-trip");
  // Judged on the state as restored: the steps move its segment or chunk.
  const bool bounded = in_value_range(p, st, bytes);
  tokens t;
  for (index_t i = 0; i < steps; ++i) {
    try {  // a restored state may refuse more input (a consumed non-causal FLASH state)
      step(p, st, t);
    } catch (const longctx::invalid_argument&) {
      if (st.snapshot() != snapshot_bytes(bytes.begin(), bytes.end()) || i > 0)
        fail("a restored state refused a later call, or a refused call changed it");
      return;
    }
    for (float x : t.o)
      if (!std::isfinite(x) && bounded) fail("a restored state gave a non-finite output on finite input");
  }
  if constexpr (requires { st.size(); p.budget; })
    if (p.budget >= 0 && st.size() > p.budget) fail("a restored cache exceeded its budget");
}

// The policies, by index (policy_list.hpp); visit(i, f) calls f(policy).
template <class F>
bool visit(unsigned i, F&& f) {
  return longctx_fuzz::visit_shared(i, std::forward<F>(f));
}
constexpr unsigned policies = longctx_fuzz::shared_policies;

// Valid snapshots of each policy after a few tokens: the seed corpus.
template <class P>
snapshot_bytes sample(const P& p, index_t n) {
  auto st = p.make_state(dims);
  tokens t;
  for (index_t i = 0; i < n; ++i) {
    t.k[std::size_t(i) % t.k.size()] += 0.25f;
    step(p, st, t);
  }
  return st.snapshot();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  longctx_fuzz::write_seeds_if_asked(*argc, *argv, [] {  // valid snapshots of every policy, resealed
    std::vector<longctx_fuzz::seed_file> files;
    for (unsigned pi = 0; pi < policies; ++pi)
      for (index_t n : {0, 2, 7})
        visit(pi, [&](const auto& p) {
          const snapshot_bytes s = sample(p, n);
          longctx_fuzz::seed_file f{"p" + std::to_string(pi) + "_n" + std::to_string(n), {}};
          f.bytes.push_back(static_cast<unsigned char>(pi | 0x80));  // the tag byte: resealed
          for (std::byte x : s) f.bytes.push_back(static_cast<unsigned char>(x));
          files.push_back(std::move(f));
        });
    return files;
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  std::vector<std::byte> bytes(reinterpret_cast<const std::byte*>(data) + 1, reinterpret_cast<const std::byte*>(data) + size);
  if ((data[0] & 0x80) && bytes.size() >= 4) {
    const std::uint32_t crc = detail::crc32c(std::span<const std::byte>(bytes).first(bytes.size() - 4));
    std::memcpy(bytes.data() + bytes.size() - 4, &crc, 4);
  }
  visit((data[0] & 0x7f) % policies, [&](const auto& p) { exercise(p, bytes); });
  return 0;
}
