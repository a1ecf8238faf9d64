// Exact attention: tiled prefill (causal and not, d = 64 and 128, H = 8;
// causal d = 128 with K/V stored as f32, bf16, f16, int8) and split-KV decode
// (d = 128, H = 8, per storage type, hot and cold), 1 and 2 threads; per
// GEMM engine: the one compute_precision::bf16 selects, and AVX512_BF16 by
// name where the ranking passes it over (kernels/compute.hpp); and, in
// the same binary, the straightforward Eigen implementation (Q K^T GEMM, row
// softmax, P V GEMM) a user would otherwise write, as the in-run baseline.
// Ratios: bench/compare.py. Decode reports the K/V bytes it reads (B/s) and
// their fraction of the read bandwidth this binary measured (of_read_bw).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <longctx/attention.hpp>
#include <longctx/kernels.hpp>
#include <longctx/tensor/eigen.hpp>  // Eigen, with GCC 12's AVX-512 false positives silenced

#include "support/bench.hpp"

using namespace longctx;

namespace {

constexpr index_t H = 8;

// Useful FLOPs: 2 d per visible logit (Q K^T) + 2 d_v per visible weight (P V).
double attention_flops(index_t n_q, index_t n_kv, index_t d, bool is_causal) {
  const double visible = is_causal ? double(n_q) * double(n_kv) - double(n_q) * double(n_q - 1) / 2.0
                                   : double(n_q) * double(n_kv);
  return H * visible * 4.0 * double(d);
}

template <index_t D, bool Causal>
void BM_prefill(benchmark::State& st) {
  const index_t n = st.range(0);
  const int threads = int(st.range(1));
  auto q = bench::random_floats(std::size_t(H * n * D), 1), k = bench::random_floats(std::size_t(H * n * D), 2),
       v = bench::random_floats(std::size_t(H * n * D), 3);
  std::vector<float> o(std::size_t(H * n * D));
  thread_pool pool{std::size_t(threads)};
  const float scale = 1.0f / std::sqrt(float(D));
  for (auto _ : st) {
    if constexpr (Causal)
      attention(from_bhnd<D>(q.data(), 1, H, n, D), from_bhnd<D>(k.data(), 1, H, n, D),
                from_bhnd<D>(v.data(), 1, H, n, D), from_bhnd<D>(o.data(), 1, H, n, D), scale, causal{}, {}, pool);
    else
      attention(from_bhnd<D>(q.data(), 1, H, n, D), from_bhnd<D>(k.data(), 1, H, n, D),
                from_bhnd<D>(v.data(), 1, H, n, D), from_bhnd<D>(o.data(), 1, H, n, D), scale, no_mask{}, {}, pool);
    benchmark::DoNotOptimize(o.data());
  }
  bench::set_flops(st, attention_flops(n, n, D, Causal), threads);
  bench::label(st, Causal ? "causal" : "full");
}

// (1, H, n, d) random floats in [-1, 1) stored as T (rows with their
// prefixes: int8 keeps a scale per row), and the view of them.
template <class T>
stored_rows<T> random_stored(index_t n, index_t d, unsigned seed) {
  const auto f = bench::random_floats(std::size_t(H * n * d), seed);
  stored_rows<T> r(H * n, d);
  for (index_t i = 0; i < H * n; ++i) kv_storage_traits<T>::template store_row<default_arch>(f.data() + i * d, r.row(i), d);
  return r;
}
template <class T>
tensor4_view<const T> stored_view(const stored_rows<T>& r, index_t n) {
  using E = typename tensor4_view<const T>::extents_type;
  const index_t s = r.stride();
  return tensor4_view<const T>(r.row(0), E(1, H, n, r.n), {H * n * s, n * s, s, 1});
}

// Causal or full prefill, H heads of n tokens, K/V stored as KV, by
// `run(q, k, v, o, scale, mask, pool)`; "peak" is the fraction of the peak
// of `engine` measured in this binary (fp32 FMA, vdpbf16ps or AMX tiles).
template <index_t D, bool Causal, class KV, class Run>
void prefill_on(benchmark::State& st, const char* engine, const char* how, Run run) {
  const index_t n = st.range(0);
  const int threads = int(st.range(1));
  const auto q = bench::random_floats(std::size_t(H * n * D), 1);
  const auto k = random_stored<KV>(n, D, 2), v = random_stored<KV>(n, D, 3);
  std::vector<float> o(std::size_t(H * n * D));
  thread_pool pool{std::size_t(threads)};
  const float scale = 1.0f / std::sqrt(float(D));
  const auto qv = from_bhnd<D>(q.data(), 1, H, n, D);
  const auto out = from_bhnd<D>(o.data(), 1, H, n, D);
  for (auto _ : st) {
    if constexpr (Causal)
      run(qv, stored_view(k, n), stored_view(v, n), out, scale, causal{}, pool);
    else
      run(qv, stored_view(k, n), stored_view(v, n), out, scale, no_mask{}, pool);
    benchmark::DoNotOptimize(o.data());
  }
  bench::set_flops(st, attention_flops(n, n, D, Causal), threads, engine);
  bench::label(st, (std::string(Causal ? "causal " : "full ") + engine + how + " kv " +
                    kv_storage_traits<KV>::name)
                       .c_str());
}

// Causal prefill, d = 128, with K and V stored as KV (Q and O float): the
// conversion happens once per K/V tile, in the packing.
template <class KV>
void BM_prefill_kv(benchmark::State& st) {
  prefill_on<128, true, KV>(
      st, "f32", "",
      [](auto q, auto k, auto v, auto o, float scale, const auto& mask, thread_pool& pool) {
        attention<default_arch, KV>(q, k, v, o, scale, mask, {}, pool);
      });
}

// Prefill by the engine `compute` selects (kernels/compute.hpp). The bf16
// rows are those an inference engine with a bf16 cache runs; f32 inputs
// with bf16 compute pay one conversion of K and V per call (in the packing).
template <index_t D, bool Causal, compute_precision C, class KV>
void BM_prefill_compute(benchmark::State& st) {
  prefill_on<D, Causal, KV>(
      st, active_engine(C), "",
      [](auto q, auto k, auto v, auto o, float scale, const auto& mask, thread_pool& pool) {
        attention<default_arch, KV>(q, k, v, o, scale, mask, {}, pool, {}, C);
      });
}

#if LONGCTX_HAS_AVX512_BF16 && (LONGCTX_HAS_AMX || !LONGCTX_BF16_DOT_PAYS)
// The AVX512_BF16 engine by name, where compute_precision::bf16 selects
// another (AMX, or f32 where vdpbf16ps runs below the fp32 FMA:
// LONGCTX_BF16_DOT_PAYS): the measurement behind that ranking.
template <index_t D, bool Causal>
void BM_prefill_bf16_dot(benchmark::State& st) {
  prefill_on<D, Causal, bf16>(
      st, bf16_dot_engine::name, " (by name)",
      [](auto q, auto k, auto v, auto o, float scale, const auto& mask, thread_pool& pool) {
        prefill_attention_with<bf16_dot_engine, bf16>(q, k, v, o, scale, mask, lse_view{}, pool);
      });
}
#endif

// The Eigen version a user would write: per head S = Q K^T * scale, masked
// row softmax, O = P V; heads spread over the same pool.
template <index_t D, bool Causal>
void BM_prefill_eigen(benchmark::State& st) {
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const index_t n = st.range(0);
  const int threads = int(st.range(1));
  auto q = bench::random_floats(std::size_t(H * n * D), 1), k = bench::random_floats(std::size_t(H * n * D), 2),
       v = bench::random_floats(std::size_t(H * n * D), 3);
  std::vector<float> o(std::size_t(H * n * D));
  thread_pool pool{std::size_t(threads)};
  std::vector<Mat> s(std::size_t(H), Mat(n, n));
  const float scale = 1.0f / std::sqrt(float(D));
  for (auto _ : st) {
    pool.parallel_for(H, [&](index_t h) {
      Eigen::Map<const Mat> Q(q.data() + h * n * D, n, D), K(k.data() + h * n * D, n, D), V(v.data() + h * n * D, n, D);
      Eigen::Map<Mat> O(o.data() + h * n * D, n, D);
      Mat& S = s[std::size_t(h)];
      S.noalias() = Q * K.transpose();
      S *= scale;
      for (index_t i = 0; i < n; ++i) {
        const index_t visible = Causal ? i + 1 : n;
        auto row = S.row(i).head(visible);
        row = (row.array() - row.maxCoeff()).exp();
        row /= row.sum();
        if (Causal) S.row(i).tail(n - visible).setZero();
      }
      O.noalias() = S * V;
    });
    benchmark::DoNotOptimize(o.data());
  }
  bench::set_flops(st, attention_flops(n, n, D, Causal), threads);
  st.SetLabel(Causal ? "eigen causal" : "eigen full");
}

// Split-KV decode of one token over n_kv rows stored as KV. hot: one cache,
// read again every iteration (it may sit in a large LLC); cold: iterations
// cycle through distinct caches whose total is at least max(1 GiB, 3 x the
// LLC), so every read comes from DRAM.
template <class KV>
void BM_decode(benchmark::State& st) {
  constexpr index_t D = 128;
  const index_t n_kv = st.range(0);
  const int threads = int(st.range(1));
  const bool cold = st.range(2) != 0;
  const std::size_t bytes = 2 * std::size_t(H * n_kv * (D + kv_storage_traits<KV>::row_prefix)) * sizeof(KV);
  const std::size_t total = std::max<std::size_t>(std::size_t(1) << 30, 3 * bench::limits().llc_bytes);
  const std::size_t copies = cold ? std::max<std::size_t>(2, (total + bytes - 1) / bytes) : 1;
  const auto q = bench::random_floats(std::size_t(H * D), 1);
  const auto k0 = random_stored<KV>(n_kv, D, 2), v0 = random_stored<KV>(n_kv, D, 3);
  std::vector<stored_rows<KV>> ks(copies, k0), vs(copies, v0);  // distinct memory, same values
  std::vector<float> o(std::size_t(H * D));
  thread_pool pool{std::size_t(threads)};
  std::size_t i = 0;
  for (auto _ : st) {
    const std::size_t c = i++ % copies;
    decode<default_arch, KV>(from_bhnd<D>(q.data(), 1, H, 1, D), stored_view(ks[c], n_kv), stored_view(vs[c], n_kv),
                             from_bhnd<D>(o.data(), 1, H, 1, D),
                             1.0f / std::sqrt(float(D)), no_mask{}, {}, pool);
    benchmark::DoNotOptimize(o.data());
  }
  bench::set_bytes(st, double(bytes), threads);
  bench::set_flops(st, attention_flops(1, n_kv, D, false), threads);
  bench::label(st, (std::string("decode ") + kv_storage_traits<KV>::name + (cold ? " cold" : " hot")).c_str());
}

// The read-bandwidth yardstick inside the run: a plain vectorised sum over
// max(1 GiB, 3 x LLC) bytes (the figure the start-up measurement uses), so
// a decode's B/s can be compared with one taken minutes, not a session, apart.
void BM_read(benchmark::State& st) {
  const int threads = int(st.range(0));
  const std::size_t bytes = std::max<std::size_t>(std::size_t(1) << 30, 3 * bench::limits().llc_bytes);
  const std::vector<float> a(bytes / sizeof(float), 1.0f);
  thread_pool pool{std::size_t(threads)};
  constexpr index_t tasks = 256;
  const index_t per = index_t(a.size()) / tasks;
  std::vector<float> part(tasks);
  for (auto _ : st) {
    pool.parallel_for(tasks, [&](index_t t) { part[std::size_t(t)] = sum<default_arch>(a.data() + t * per, per); });
    benchmark::DoNotOptimize(part.data());
  }
  bench::set_bytes(st, double(tasks * per) * sizeof(float), threads);
  bench::label(st, "plain read");
}

void prefill_args(benchmark::internal::Benchmark* b) {
  for (int t : {1, 2})
    for (index_t n : {1024, 2048, 4096, 8192, 16384}) b->Args({n, t});
  b->ArgNames({"n", "threads"})->Unit(benchmark::kMillisecond)->UseRealTime();
}
void eigen_args(benchmark::internal::Benchmark* b) {  // S is n x n per head: cap n
  for (int t : {1, 2})
    for (index_t n : {1024, 2048, 4096}) b->Args({n, t});
  b->ArgNames({"n", "threads"})->Unit(benchmark::kMillisecond)->UseRealTime();
}
void decode_args(benchmark::internal::Benchmark* b) {
  for (int cold : {1, 0})
    for (int t : {1, 2})
      for (index_t n : {4096, 8192, 16384, 32768}) b->Args({n, t, cold});
  b->ArgNames({"n_kv", "threads", "cold"})->Unit(benchmark::kMillisecond)->UseRealTime();
}
void prefill_kv_args(benchmark::internal::Benchmark* b) {
  for (int t : {1, 2})
    for (index_t n : {1024, 4096}) b->Args({n, t});
  b->ArgNames({"n", "threads"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_prefill<128, true>)->Apply(prefill_args);
BENCHMARK(BM_prefill<128, false>)->Apply(prefill_args);
BENCHMARK(BM_prefill<64, true>)->Apply(prefill_args);
BENCHMARK(BM_prefill<64, false>)->Apply(prefill_args);
BENCHMARK(BM_prefill_eigen<128, true>)->Apply(eigen_args);
BENCHMARK(BM_prefill_eigen<64, true>)->Apply(eigen_args);
BENCHMARK(BM_prefill_eigen<128, false>)->Apply(eigen_args);
BENCHMARK(BM_prefill_kv<float>)->Apply(prefill_kv_args);
BENCHMARK(BM_prefill_kv<bf16>)->Apply(prefill_kv_args);
BENCHMARK(BM_prefill_kv<f16>)->Apply(prefill_kv_args);
BENCHMARK(BM_prefill_kv<q8>)->Apply(prefill_kv_args);
// Per engine: where the build selects one, the 16-bit engine, on bf16 K/V
// (the cache an engine keeps) and on f32 K/V (one conversion per call); the
// f32 engine on bf16 K/V is BM_prefill_kv<bf16>.
BENCHMARK(BM_prefill_compute<128, true, compute_precision::bf16, bf16>)->Apply(prefill_args);
BENCHMARK(BM_prefill_compute<128, false, compute_precision::bf16, bf16>)->Apply(prefill_args);
BENCHMARK(BM_prefill_compute<64, true, compute_precision::bf16, bf16>)->Apply(prefill_args);
BENCHMARK(BM_prefill_compute<64, false, compute_precision::bf16, bf16>)->Apply(prefill_args);
BENCHMARK(BM_prefill_compute<128, true, compute_precision::bf16, float>)->Apply(prefill_kv_args);
#if LONGCTX_HAS_AVX512_BF16 && (LONGCTX_HAS_AMX || !LONGCTX_BF16_DOT_PAYS)
BENCHMARK(BM_prefill_bf16_dot<128, true>)->Apply(prefill_args);
BENCHMARK(BM_prefill_bf16_dot<128, false>)->Apply(prefill_kv_args);
BENCHMARK(BM_prefill_bf16_dot<64, true>)->Apply(prefill_kv_args);
#endif
BENCHMARK(BM_read)->Arg(1)->Arg(2)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_decode<float>)->Apply(decode_args);
BENCHMARK(BM_decode<bf16>)->Apply(decode_args);
BENCHMARK(BM_decode<f16>)->Apply(decode_args);
BENCHMARK(BM_decode<q8>)->Apply(decode_args);
