// Example 01: exact multi-head attention with longctx.
//
// Q, K, V come from a fused projection in (batch, seq, head, dim) layout; the
// views read them in place. 8 query heads share 2 KV heads (GQA). We run a
// causal prefill over the prompt on a thread pool, then decode one more token
// against the cache, and check a row against a plain double-precision loop.
//
//   example_01_dense_attention [--quick]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include <longctx/longctx.hpp>

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::printf("backend: %s (fixed at compile time by -march/-m flags or LONGCTX_FORCE_ARCH)\n",
              longctx::default_arch::name);
  using longctx::index_t;
  const index_t b = 1, h = 8, h_kv = 2, d = 128, n = quick ? 512 : 4096;
  const float scale = 1.0f / std::sqrt(float(d));

  // Synthetic activations, (b, n, heads, d) as a fused QKV projection writes them.
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto randn = [&](std::size_t count) {
    std::vector<float> x(count);
    for (auto& v : x) v = normal(rng);
    return x;
  };
  // The cache has room for one more token (the decode step below).
  std::vector<float> q = randn(std::size_t(b * n * h * d)), k = randn(std::size_t(b * (n + 1) * h_kv * d)),
                     v = randn(std::size_t(b * (n + 1) * h_kv * d)), o(std::size_t(b * n * h * d));

  // Views with logical axes (b, h, n, d) over (b, n, h, d) memory: no copies.
  auto qv = longctx::from_bnhd<128>(q.data(), b, n, h, d);            // (b, h, n, d)
  auto kv_all = longctx::from_bnhd<128>(k.data(), b, n + 1, h_kv, d);  // (b, h_kv, n + 1, d)
  auto vv_all = longctx::from_bnhd<128>(v.data(), b, n + 1, h_kv, d);
  auto ov = longctx::from_bnhd<128>(o.data(), b, n, h, d);            // (b, h, n, d)

  longctx::thread_pool pool;  // std::thread::hardware_concurrency() threads
  auto t0 = std::chrono::steady_clock::now();
  longctx::attention(qv, kv_all.tokens(0, n), vv_all.tokens(0, n), ov, scale, longctx::causal{}, {}, pool);
  const double prefill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double flops = 4.0 * h * d * (double(n) * (n + 1) / 2);  // causal: visible products only
  std::printf("prefill  n=%ld h=%ld h_kv=%ld d=%ld (%zu threads): %.1f ms, %.1f GFLOP/s\n", long(n), long(h),
              long(h_kv), long(d), pool.concurrency(), prefill_s * 1e3, flops / prefill_s / 1e9);

  // Check one row against the formula in double.
  const index_t row = n / 3, head = 5, kvh = head / (h / h_kv);
  std::vector<double> logits(std::size_t(row + 1));
  double m = -INFINITY, sum = 0, max_err = 0;
  for (index_t j = 0; j <= row; ++j) {
    double s = 0;
    for (index_t p = 0; p < d; ++p) s += double(qv(0, head, row, p)) * kv_all(0, kvh, j, p);
    logits[std::size_t(j)] = s * scale;
    m = std::max(m, logits[std::size_t(j)]);
  }
  for (double& l : logits) sum += (l = std::exp(l - m));
  for (index_t c = 0; c < d; ++c) {
    double ref = 0;
    for (index_t j = 0; j <= row; ++j) ref += logits[std::size_t(j)] / sum * vv_all(0, kvh, j, c);
    max_err = std::max(max_err, std::abs(ref - ov(0, head, row, c)));
  }
  std::printf("row %ld head %ld against double: max abs error %.2e\n", long(row), long(head), max_err);

  // Decode the next token: one query row per head over the n + 1 cached keys,
  // split over key chunks and merged through the log-sum-exp.
  std::vector<float> q1 = randn(std::size_t(b * h * d)), o1(std::size_t(b * h * d)), lse(std::size_t(b * h));
  t0 = std::chrono::steady_clock::now();
  longctx::decode(longctx::from_bnhd<128>(q1.data(), b, 1, h, d), kv_all, vv_all,
                  longctx::from_bnhd<128>(o1.data(), b, 1, h, d), scale, longctx::causal{},
                  longctx::lse_view(lse.data(), longctx::dextents<index_t, 3>(b, h, 1)), pool);
  const double decode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double bytes = 2.0 * double(b * h_kv * (n + 1) * d) * sizeof(float);
  std::printf("decode   n_kv=%ld: %.3f ms, %.1f GB/s of K/V streamed, lse[head 0] = %.4f\n", long(n + 1),
              decode_s * 1e3, bytes / decode_s / 1e9, lse[0]);
  return max_err < 1e-4 ? 0 : 1;
}
