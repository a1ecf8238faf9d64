// A small example backbone for the RMT driver, built from library pieces; not
// a model zoo. x (n, width) -> y (n, width): sinusoidal positions added at the
// input, pre-norm blocks (multi-head attention through attention() with the
// caller's mask, GELU MLP with Eigen), final LayerNorm. Deterministic random
// weights. A per-segment KV cache makes row-by-row calls equal one whole call.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "../attention.hpp"
#include "../runtime/executor.hpp"
#include "../kernels/rmt_mask.hpp"
#include "rmt.hpp"
#include "../tensor/eigen.hpp"

LONGCTX_NAMESPACE_BEGIN

/// The example backbone's sizes: width (d_model) 64, heads 4 (width %
/// heads == 0), layers 2, hidden 0 (the MLP width; 0 means 4 width), and
/// the seed of its deterministic weights.
struct rmt_backbone_config {
  index_t width = 64;   // d_model
  index_t heads = 4;    // width % heads == 0
  index_t layers = 2;
  index_t hidden = 0;   // MLP width; 0: 4 * width
  std::uint64_t seed = 1;
};

/// A small example backbone for rmt, built from library pieces; not a model
/// zoo. x (n, width) -> y (n, width): sinusoidal positions added at the
/// input, pre-norm blocks (multi-head attention through attention() with
/// the caller's mask, a GELU MLP with Eigen), a final LayerNorm, weights
/// drawn deterministically from the seed (the same on every platform). Its
/// per-segment KV cache makes row-by-row calls equal one whole call (to
/// rounding). Satisfies rmt_backbone.
///
/// Cost of n new rows over c cached ones: O(layers n (4 width^2 + 2 width
/// hidden)) for the projections and MLP plus O(layers width n (c + n)) for
/// the attention; the cache holds 2 layers width rows floats.
///
/// Thread safety: forward() only reads the weights, and its FLOP counter
/// is atomic, so states on several threads may share one backbone when it
/// has no pool; with a pool, one call at a time (a thread_pool runs one
/// parallel_for at a time).
template <arch_tag Arch = default_arch>
class rmt_reference_backbone {
 public:
  using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  struct layer {
    matrix wqkv;           // (width, 3 width): columns [q | k | v], heads contiguous in each
    matrix wo;             // (width, width)
    matrix w1;             // (width, hidden)
    Eigen::RowVectorXf b1; // (hidden)
    matrix w2;             // (hidden, width)
    Eigen::RowVectorXf b2; // (width)
  };

  // Keys and values of every row fed since the last clear(), per layer: the
  // layer's view of each row's hidden state, which is what a Transformer-XL
  // cache carries (rmt::xl; the rmt_xl_backbone operations below).
  struct cache_type {
    std::vector<std::vector<float>> k, v;  // per layer: (capacity, width)
    index_t rows = 0;
    index_t width = 0;
    void clear() noexcept { rows = 0; }
    /// \return rows cached
    index_t cached_rows() const noexcept { return rows; }
    /// \return bytes one cached row takes over all layers (its K and V)
    std::size_t row_bytes() const noexcept { return 2 * k.size() * std::size_t(width) * sizeof(float); }
    /// Keeps the listed rows (increasing, each < cached_rows()), in order,
    /// at the front of every layer; drops the others.
    /// \param keep the rows to keep
    void retain(std::span<const index_t> keep) noexcept {
      const std::size_t w = std::size_t(width);
      for (std::size_t l = 0; l < k.size(); ++l)
        for (std::size_t t = 0; t < keep.size(); ++t) {  // keep[t] >= t: moves go towards the front
          const std::size_t from = std::size_t(keep[t]) * w, to = t * w;
          if (from == to) continue;
          std::memmove(k[l].data() + to, k[l].data() + from, w * sizeof(float));
          std::memmove(v[l].data() + to, v[l].data() + from, w * sizeof(float));
        }
      rows = index_t(keep.size());
    }
    /// Writes the cached rows (count, then each layer's K and V rows).
    /// \param out the snapshot being written
    void save(snapshot_writer& out) const {
      out.put(std::int64_t(rows));
      for (std::size_t l = 0; l < k.size(); ++l) {
        out.put_array(k[l].data(), std::size_t(rows * width));
        out.put_array(v[l].data(), std::size_t(rows * width));
      }
    }
    /// Reads what save() wrote, all or nothing: the count checked against
    /// the bytes left before anything is allocated, every value finite.
    /// \param in the snapshot being read
    /// \throws invalid_argument naming the field when the bytes are wrong
    void load(snapshot_reader& in) {
      const auto n = in.get<std::int64_t>("xl rows");
      in.check(n >= 0 && row_bytes() > 0 && std::uint64_t(n) <= in.remaining() / row_bytes(), "xl rows",
               [&] { return detail::concat(n, " rows of ", row_bytes(), " bytes, ", in.remaining(), " left"); });
      std::vector<std::vector<float>> nk(k.size()), nv(v.size());
      const std::size_t count = std::size_t(n) * std::size_t(width);
      for (std::size_t l = 0; l < k.size(); ++l) {
        nk[l].resize(count);
        nv[l].resize(count);
        in.get_array(nk[l].data(), count, "xl keys");
        in.get_array(nv[l].data(), count, "xl values");
        const auto finite = [](const std::vector<float>& x) {
          return std::all_of(x.begin(), x.end(), [](float y) { return std::isfinite(y); });
        };
        in.check(finite(nk[l]) && finite(nv[l]), "xl keys", "a non-finite cached key or value");
      }
      k.swap(nk);
      v.swap(nv);
      rows = index_t(n);
    }
  };

  /// Draws the weights.
  /// \param c the sizes and seed
  /// \param pool runs the larger products (at least about 2^20
  ///   multiply-adds) on its threads; null: the calling thread only. It
  ///   must outlive the backbone. Results do not depend on it.
  /// \throws invalid_argument when width, heads, layers or hidden are bad
  explicit rmt_reference_backbone(rmt_backbone_config c, thread_pool* pool = nullptr) : cfg_(c), pool_(pool) {
    if (cfg_.hidden == 0) cfg_.hidden = 4 * cfg_.width;
    require(cfg_.width > 0 && cfg_.heads > 0 && cfg_.width % cfg_.heads == 0, "rmt_reference_backbone", "config",
            "width ", cfg_.width, " must be a positive multiple of heads ", cfg_.heads);
    require(cfg_.layers > 0 && cfg_.hidden > 0, "rmt_reference_backbone", "config", "layers ", cfg_.layers,
            " and hidden ", cfg_.hidden, " must be > 0");
    // splitmix64 -> uniform in [-a, a] with a = sqrt(3 / fan_in) (unit-variance
    // activations): the same weights on every platform, unlike std:: distributions.
    std::uint64_t s = cfg_.seed;
    auto uniform = [&](index_t fan_in) {
      std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      z ^= z >> 31;
      const double u = double(z >> 11) * 0x1.0p-53;  // [0, 1)
      return float((2 * u - 1) * std::sqrt(3.0 / double(fan_in)));
    };
    auto fill = [&](matrix& m, index_t rows, index_t cols) {
      m.resize(rows, cols);
      for (index_t i = 0; i < rows; ++i)
        for (index_t j = 0; j < cols; ++j) m(i, j) = uniform(rows);
    };
    const index_t w = cfg_.width, hd = cfg_.hidden;
    layers_.resize(std::size_t(cfg_.layers));
    for (auto& l : layers_) {
      fill(l.wqkv, w, 3 * w);
      fill(l.wo, w, w);
      fill(l.w1, w, hd);
      l.b1 = Eigen::RowVectorXf::NullaryExpr(hd, [&] { return 0.1f * uniform(1); });
      fill(l.w2, hd, w);
      l.b2 = Eigen::RowVectorXf::NullaryExpr(w, [&] { return 0.1f * uniform(1); });
    }
  }

  /// \return d_model
  index_t width() const noexcept { return cfg_.width; }
  /// \return the sizes (hidden resolved) and seed
  const rmt_backbone_config& config() const noexcept { return cfg_; }
  /// \return the weights, one entry per layer
  const std::vector<layer>& layers() const noexcept { return layers_; }
  /// \return an empty cache with one K and one V buffer per layer
  cache_type make_cache() const {
    return {std::vector<std::vector<float>>(layers_.size()), std::vector<std::vector<float>>(layers_.size()), 0,
            cfg_.width};
  }

  // FLOPs counted by forward() so far: 2 per multiply-add of every projection
  // and MLP, plus 4 width per visible (query, key) pair (Q K^T and P V over all
  // heads). The example compares this with full attention's count.
  // Threads that share one backbone (two states, two threads) add to it
  // safely (a relaxed atomic: a total, no ordering).
  /// \return the FLOPs forward() has counted since construction or reset_flops()
  double flops() const noexcept { return flops_.v.load(std::memory_order_relaxed); }
  /// Sets the FLOP count to 0.
  void reset_flops() noexcept { flops_.v.store(0, std::memory_order_relaxed); }
  double linear_flops(index_t rows) const noexcept {
    const double w = double(cfg_.width), hd = double(cfg_.hidden);
    return double(cfg_.layers) * double(rows) * 2.0 * (4.0 * w * w + 2.0 * w * hd);
  }
  double attention_flops(double visible_pairs) const noexcept {
    return double(cfg_.layers) * visible_pairs * 4.0 * double(cfg_.width);
  }

  // Appends the n rows of x (n, width) at positions pos (n) to the cache and
  // writes their outputs to y (n, width). Queries are the new rows, keys every
  // cached row; `mask` is bound with (n, cached rows) like attention().
  /// Runs every layer on the new rows, their keys and values appended to
  /// the cache (the rmt_backbone contract).
  /// \param cache from make_cache(); cleared by the driver per segment
  /// \param x (n, width) new rows, contiguous last axis
  /// \param pos (n) position ids of the new rows
  /// \param mask a mask descriptor, bound with (n, cached rows + n)
  /// \param y (n, width) the last layer's output for the new rows
  /// \throws invalid_argument on a shape or stride error, a cache of another
  ///   backbone, or a mask that does not fit
  template <mask_descriptor Mask>
  void forward(cache_type& cache, matrix_view<const float> x, std::span<const index_t> pos, const Mask& mask,
               matrix_view<float> y) {
    const index_t n = x.extent(0), w = cfg_.width;
    require(x.extent(1) == w && y.extent(0) == n && y.extent(1) == w, "rmt_reference_backbone::forward", "x/y",
            "must both be (n, ", w, "), got x ", shape_of(x), ", y ", shape_of(y));
    require(index_t(pos.size()) == n, "rmt_reference_backbone::forward", "pos", pos.size(),
            " positions for ", n, " rows");
    require(cache.k.size() == layers_.size() && cache.width == w, "rmt_reference_backbone::forward", "cache",
            "was not made by this backbone");
    require_unit_inner_stride(x, "rmt_reference_backbone::forward", "x");
    require_unit_inner_stride(y, "rmt_reference_backbone::forward", "y");
    if (n == 0) return;
    const index_t n_kv = cache.rows + n, heads = cfg_.heads, dh = w / heads;
    const auto bound = mask.bind(n, n_kv);  // validates the layout before any work
    double pairs = 0;
    for (index_t i = 0; i < n; ++i) {
      if constexpr (requires { bound.row(i); }) {  // one interval (+ a sink prefix before it)
        const key_interval r = bound.row(i);
        pairs += double(std::max<index_t>(0, r.hi - r.lo) + std::min(r.prefix, r.lo));
      } else {
        const key_interval r = bound.keys_for_rows(i, i + 1);
        for (index_t j = r.lo; j < r.hi; ++j) pairs += bound.visible(i, j) ? 1 : 0;
      }
    }
    flops_.v.fetch_add(linear_flops(n) + attention_flops(pairs), std::memory_order_relaxed);

    matrix h(n, w);
    for (index_t i = 0; i < n; ++i)
      for (index_t c = 0; c < w; ++c) h(i, c) = x(i, c) + position_embedding(pos[std::size_t(i)], c);
    matrix a(n, w), qkv(n, 3 * w), o(n, w), t(n, cfg_.hidden);
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const layer& L = layers_[l];
      layer_norm(h, a);
      gemm_rows(a, L.wqkv, qkv);
      auto& kc = cache.k[l];
      auto& vc = cache.v[l];
      if (index_t(kc.size()) < n_kv * w) {
        const std::size_t cap = std::max<std::size_t>(std::size_t(n_kv * w), 2 * kc.size());
        kc.resize(cap);
        vc.resize(cap);
      }
      for (index_t i = 0; i < n; ++i)
        for (index_t c = 0; c < w; ++c) {
          kc[std::size_t((cache.rows + i) * w + c)] = qkv(i, w + c);
          vc[std::size_t((cache.rows + i) * w + c)] = qkv(i, 2 * w + c);
        }
      using E = tensor4_view<const float>::extents_type;
      const tensor4_view<const float> qv(qkv.data(), E(1, heads, n, dh), {n * 3 * w, dh, 3 * w, 1});  // (1, h, n, dh)
      const tensor4_view<const float> kv(kc.data(), E(1, heads, n_kv, dh), {n_kv * w, dh, w, 1});     // (1, h, n_kv, dh)
      const tensor4_view<const float> vv(vc.data(), E(1, heads, n_kv, dh), {n_kv * w, dh, w, 1});     // (1, h, n_kv, dh)
      const tensor4_view<float> ov(o.data(), E(1, heads, n, dh), {n * w, dh, w, 1});                  // (1, h, n, dh)
      const float scale = 1.0f / std::sqrt(float(dh));
      if (use_pool(double(n) * double(n_kv) * double(w))) attention<Arch>(qv, kv, vv, ov, scale, mask, {}, *pool_);
      else attention<Arch>(qv, kv, vv, ov, scale, mask, {}, serial_executor{});
      gemm_rows(o, L.wo, a);
      h += a;
      layer_norm(h, a);
      gemm_rows(a, L.w1, t);
      t.rowwise() += L.b1;
      t = t.unaryExpr([](float v) { return gelu(v); });
      gemm_rows(t, L.w2, a);
      a.rowwise() += L.b2;
      h += a;
    }
    cache.rows = n_kv;
    layer_norm(h, a);
    for (index_t i = 0; i < n; ++i)
      for (index_t c = 0; c < w; ++c) y(i, c) = a(i, c);
  }

  // Sinusoidal embedding (Vaswani et al.): sin for even, cos for odd columns.
  float position_embedding(index_t p, index_t c) const noexcept {
    const double freq = std::pow(10000.0, -double(c - c % 2) / double(cfg_.width));
    return float(c % 2 == 0 ? std::sin(double(p) * freq) : std::cos(double(p) * freq));
  }
  static float gelu(float v) noexcept {  // tanh approximation
    return 0.5f * v * (1.0f + std::tanh(0.7978845608f * (v + 0.044715f * v * v * v)));
  }
  static constexpr float layer_norm_eps = 1e-5f;

 private:
  // LayerNorm without affine parameters (identity at initialisation).
  static void layer_norm(const matrix& in, matrix& out) {
    const index_t w = in.cols();
    for (index_t i = 0; i < in.rows(); ++i) {
      const float mean = in.row(i).mean();
      const float var = (in.row(i).array() - mean).square().sum() / float(w);
      out.row(i) = (in.row(i).array() - mean) * (1.0f / std::sqrt(var + layer_norm_eps));
    }
  }
  // C = A B by blocks of 64 rows over the pool; the partition does not depend
  // on the thread count, so results do not either.
  void gemm_rows(const matrix& A, const matrix& B, matrix& C) {
    constexpr index_t block = 64;
    const index_t n = A.rows(), blocks = (n + block - 1) / block;
    auto task = [&](index_t b) {
      const index_t r0 = b * block, r = std::min(block, n - r0);
      C.middleRows(r0, r).noalias() = A.middleRows(r0, r) * B;
    };
    if (blocks > 1 && use_pool(double(n) * double(A.cols()) * double(B.cols()))) pool_->parallel_for(blocks, task);
    else
      for (index_t b = 0; b < blocks; ++b) task(b);
  }

  // Waking the pool costs microseconds (much more on a loaded machine): run
  // products below ~2^20 multiply-adds (about 0.1 ms) on the calling thread.
  // bench_rmt's BM_rmt_segments (64-row segments) is what this protects.
  bool use_pool(double multiply_adds) const noexcept { return pool_ && multiply_adds >= double(1 << 20); }

  rmt_backbone_config cfg_;
  thread_pool* pool_;
  std::vector<layer> layers_;
  struct flop_counter {  // copyable: a copy starts from the value
    std::atomic<double> v{0};
    flop_counter() = default;
    flop_counter(const flop_counter& o) noexcept : v(o.v.load(std::memory_order_relaxed)) {}
    flop_counter& operator=(const flop_counter& o) noexcept {
      v.store(o.v.load(std::memory_order_relaxed), std::memory_order_relaxed);
      return *this;
    }
  } flops_;
};

static_assert(layer_driver<rmt, rmt_state<rmt_reference_backbone<>>>, "rmt must satisfy layer_driver");

LONGCTX_NAMESPACE_END
