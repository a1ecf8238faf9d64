// KV cache storage, shared by the dense policy and every bounded cache: per
// KV head (lane = b * h_kv + hk) rows of K (d) and V (d_v), each row's
// absolute position, and `row_stats` floats per row that an eviction rule
// owns (H2O's accumulated attention). It knows nothing of eviction: rules
// choose slots, the storage moves rows. Views: keys() (b, h_kv, size, d),
// values() (b, h_kv, size, d_v), rows in slot order, in the storage type KV
// (float, bf16, f16, q8 with each row's scale before it): rows are
// converted once, when appended (round to nearest even), and snapshots keep
// the stored bits. q8 keys may also carry per-channel scales (key_scales).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "../error.hpp"
#include "../kernels/kv_storage.hpp"
#include "../kernels/rope.hpp"
#include "../simd/convert.hpp"
#include "../tensor/view.hpp"
#include "protocol.hpp"

LONGCTX_NAMESPACE_BEGIN

/// Storage strategy. slots (default): the new row goes where the victim was,
/// O(d) per step; rows are in temporal order only through positions().
/// compacted: rows stay physically in temporal order, so an eviction moves
/// every younger row: O(budget d) per step. bench_tova, tova at budget 4096,
/// H = h_kv = 8, d = 128, 2 threads: the compacted step took 2.7x the slots
/// step (main-thread CPU 4.1 ms vs 1.5 ms; its memmove is as large as the
/// attention's own K/V read), so slots is the default. Both keep the same
/// rows; outputs agree to rounding (the keys are summed in another order).
LONGCTX_UNTAGGED_BEGIN
enum class kv_layout { slots, compacted };
LONGCTX_UNTAGGED_END

/// Positions the attention sees. absolute (paper, default): keys keep the
/// RoPE rotation of their original position, the query that of time t.
/// cache_relative (StreamingLLM): the row of temporal rank r is attended as if
/// at position r and the newest query at rank size - 1; cached keys are
/// re-rotated from their original (absolute-rotated) copy by a single exact
/// rotation whenever their rank changes (kernels/rope.hpp, half-split pairs,
/// GPT-NeoX / LLaMA). Needs even d and keeps a second copy of K. The caller
/// always rotates q and k by their absolute positions.
LONGCTX_UNTAGGED_BEGIN
enum class position_mode { absolute, cache_relative };
LONGCTX_UNTAGGED_END

/// How an int8 (q8) cache scales its keys. per_token (default): each row
/// its own absmax / 127, like the values. per_channel: in addition, each KV
/// head divides key channel c by a power of two s_c >= 1 before the per-row
/// quantisation and the query is multiplied by s_c (exact both ways, so the
/// logits are unchanged but for the rounding of the smaller range). s_c is
/// calibrated once, on the first append (prefill the prompt in one call):
/// with a_c the largest |k_c| of that append and m the lower median of the
/// a_c, s_c = 2^j for the largest j with m 2^j <= a_c if a_c >= 8 m, else 1
/// (under cache_relative the two channels of a RoPE pair share the larger
/// a_c, so the rotation commutes with the scaling). A key channel whose
/// magnitude is consistently far above the others (LLM keys have a few) then
/// no longer sets every row's step. A per-row form of the smoothing of QServe
/// (arXiv 2405.04532), not KIVI's per-channel groups: rows stay independent,
/// so eviction moves them as before. README (K/V storage) has the numbers.
LONGCTX_UNTAGGED_BEGIN
enum class key_scales { per_token, per_channel };
LONGCTX_UNTAGGED_END

/// How a kv_cache is made (the owning policy fills it in from its parameters).
struct kv_cache_options {
  index_t row_stats = 0;  ///< floats per row owned by the eviction rule
  kv_layout layout = kv_layout::slots;  ///< where a new row goes
  position_mode positions = position_mode::absolute;  ///< the positions attention sees
  double rope_theta = 10000.0;  ///< cache_relative only
  index_t reserve = 16;         ///< rows per lane allocated up front
  key_scales keys = key_scales::per_token;  ///< per_channel: q8 storage only
};

/// What eviction rules see of a cache, whatever its storage type: shape,
/// per-row positions and rule statistics, slot order. Lanes are the KV heads
/// (lane = b h_kv + hk), slots the row indices inside a lane; every lane
/// holds size() rows.
class kv_rows {
 public:
  const attention_dims& dims() const noexcept { return dims_; }
  const kv_cache_options& options() const noexcept { return opt_; }
  index_t size() const noexcept { return size_; }           // rows held per lane
  index_t capacity() const noexcept { return cap_; }        // rows allocated per lane
  index_t next_position() const noexcept { return next_; }  // tokens appended so far
  index_t lanes() const noexcept { return dims_.b * dims_.h_kv; }
  bool relative() const noexcept { return opt_.positions == position_mode::cache_relative; }
  bool channel_scaled() const noexcept { return opt_.keys == key_scales::per_channel; }
  /// Per lane, slot-indexed.
  /// \param lane b h_kv + hk
  /// \return the absolute position of each of the lane's size() slots
  const index_t* positions(index_t lane) const noexcept { return pos_.data() + lane * cap_; }
  float* stats(index_t lane) noexcept { return stats_.data() + lane * cap_ * opt_.row_stats; }
  const float* stats(index_t lane) const noexcept { return stats_.data() + lane * cap_ * opt_.row_stats; }

  // Slots of a lane sorted by position (temporal order).
  std::vector<index_t> temporal_order(index_t lane) const {
    std::vector<index_t> s(static_cast<std::size_t>(size_));
    for (index_t j = 0; j < size_; ++j) s[std::size_t(j)] = j;
    sort_by_position(lane, s.data(), size_);
    return s;
  }
  /// \param lane b h_kv + hk
  /// \return the lane's absolute positions in temporal order
  std::vector<index_t> held_positions(index_t lane) const {
    std::vector<index_t> r;
    for (index_t s : temporal_order(lane)) r.push_back(positions(lane)[s]);
    return r;
  }
  void sort_by_position(index_t lane, index_t* slots, index_t n) const {
    const index_t* p = positions(lane);
    std::sort(slots, slots + n, [&](index_t a, index_t b) { return p[a] < p[b]; });
  }

 protected:
  kv_rows() = default;
  kv_rows(const attention_dims& dims, const kv_cache_options& opt) : dims_(resolved(dims)), opt_(opt) {}

  attention_dims dims_{};
  kv_cache_options opt_{};
  index_t cap_ = 0, size_ = 0, next_ = 0;
  std::vector<float> stats_;  // (lanes, cap, row_stats)
  std::vector<index_t> pos_;  // (lanes, cap)
  std::vector<index_t> rot_;  // (lanes, cap) cache_relative: position key_row is rotated to
};

/// The storage of the dense and bounded caches: per lane up to capacity()
/// rows of K (d) and V (d_v) in the storage type `KV`, each with its absolute
/// position and the rule's statistics. It knows nothing of eviction: rules
/// choose slots, the storage moves rows. Read it through
/// bounded_cache_state::cache(): keys() (b, h_kv, size, d) and values() (b,
/// h_kv, size, d_v), rows in slot order (held_positions() gives temporal
/// order), positions(lane) and key_channel_scales(lane).
template <kv_storage KV = float>
class kv_cache : public kv_rows {
 public:
  using storage_type = KV;
  // Elements stored before each row (q8: its scale); rows are rk() = d + P
  // and rv() = d_v + P elements apart, views point past the prefix.
  static constexpr index_t P = kv_storage_traits<KV>::row_prefix;

  kv_cache() = default;
  // dims and options are checked by the policy that makes the cache.
  kv_cache(const attention_dims& dims, const kv_cache_options& opt) : kv_rows(dims, opt) {
    reserve(std::max<index_t>(opt_.reserve, 1));
    if (relative()) rot_buf_.resize(std::size_t(2 * dims_.d));
    if (channel_scaled()) {
      chan_.assign(std::size_t(lanes() * dims_.d), 1.0f);
      key_buf_.resize(std::size_t(dims_.d));
    }
  }

  /// key_scales::per_channel: lane's d channel scales s_c (all 1 until the
  /// first append); its stored keys are k / s and the attended query q * s.
  /// \param lane b h_kv + hk
  /// \return the lane's d scales, or null under per_token
  const float* key_channel_scales(index_t lane) const noexcept {
    return channel_scaled() ? chan_.data() + lane * dims_.d : nullptr;
  }

  /// \return the bytes allocated for rows (with their prefixes), positions,
  ///   statistics, original keys (cache_relative) and channel scales
  std::size_t footprint() const noexcept {
    const std::size_t per_row = sizeof(KV) * std::size_t(rk() + rv()) + sizeof(float) * std::size_t(opt_.row_stats) +
                                sizeof(index_t) +
                                (relative() ? sizeof(KV) * std::size_t(rk()) + sizeof(index_t) : 0);
    return std::size_t(lanes()) * std::size_t(cap_) * per_row + sizeof(float) * chan_.size();
  }

  /// \return the attended keys (b, h_kv, size, d) in slot order (under
  ///   cache_relative re-rotated to their ranks)
  tensor4_view<const KV> keys() const noexcept { return view(k_.data(), dims_.d); }
  /// \return the values (b, h_kv, size, d_v) in slot order
  tensor4_view<const KV> values() const noexcept { return view(v_.data(), dims_.d_v); }
  index_t rk() const noexcept { return dims_.d + P; }
  index_t rv() const noexcept { return dims_.d_v + P; }
  // The key as appended (rotated at its absolute position); key_row() is the
  // attended copy (re-rotated to its rank under cache_relative).
  const KV* original_key_row(index_t lane, index_t slot) const noexcept {
    return relative() ? kabs_.data() + (lane * cap_ + slot) * rk() + P : key_row(lane, slot);
  }
  const KV* key_row(index_t lane, index_t slot) const noexcept { return k_.data() + (lane * cap_ + slot) * rk() + P; }
  const KV* value_row(index_t lane, index_t slot) const noexcept {
    return v_.data() + (lane * cap_ + slot) * rv() + P;
  }


  // Grows storage to at least `rows` per lane (amortised doubling).
  void reserve(index_t rows) {
    if (rows <= cap_) return;
    relayout(std::max(rows, 2 * cap_));
  }
  // Shrinks storage to max(size, rows) per lane (after a prefill grew it).
  void shrink_to(index_t rows) {
    const index_t want = std::max(size_, rows);
    if (want < cap_) relayout(want);
  }

  // Appends n rows: k (b, h_kv, n, d), v (b, h_kv, n, d_v), checked by the
  // caller; positions next_position() .. + n - 1; statistics start at 0.
  void append(tensor4_view<const float> k, tensor4_view<const float> v) {
    const index_t n = k.extent(2), d = dims_.d, dv = dims_.d_v, rs = opt_.row_stats;
    reserve(size_ + n);
    if (channel_scaled() && next_ == 0 && n > 0) calibrate(k);
    for (index_t bi = 0; bi < dims_.b; ++bi)
      for (index_t hk = 0; hk < dims_.h_kv; ++hk) {
        const index_t lane = bi * dims_.h_kv + hk;
        for (index_t i = 0; i < n; ++i) {
          const index_t s = lane * cap_ + size_ + i;
          const float* key = &k(bi, hk, i, 0);
          if (channel_scaled()) {  // k / s_c: exact (powers of two)
            const float* sc = key_channel_scales(lane);
            for (index_t c = 0; c < d; ++c) key_buf_[std::size_t(c)] = key[c] / sc[c];
            key = key_buf_.data();
          }
          kv_storage_traits<KV>::template store_row<default_arch>(key, k_.data() + s * rk() + P, d);
          kv_storage_traits<KV>::template store_row<default_arch>(&v(bi, hk, i, 0), v_.data() + s * rv() + P, dv);
          pos_[std::size_t(s)] = next_ + i;
          std::fill_n(stats_.data() + s * rs, rs, 0.0f);
          if (relative()) {  // rank size_ + i among the rows after this append
            std::memcpy(kabs_.data() + s * rk(), k_.data() + s * rk(), sizeof(KV) * std::size_t(rk()));
            rot_[std::size_t(s)] = size_ + i;
            rerotate(lane, size_ + i);
          }
        }
      }
    size_ += n;
    next_ += n;
  }

  // Removes slot victims[lane] from every lane (all lanes hold the same
  // number of rows, so all evict together).
  void evict(const index_t* victims) noexcept {
    const index_t last = size_ - 1;
    for (index_t lane = 0; lane < lanes(); ++lane) {
      const index_t s = victims[lane];
      LONGCTX_ASSERT(s >= 0 && s < size_);
      const index_t gone = pos_[std::size_t(lane * cap_ + s)];
      if (opt_.layout == kv_layout::slots) {
        if (s != last) move_row(lane, last, s);
      } else {
        for (index_t t = s; t < last; ++t) move_row(lane, t + 1, t);
      }
      if (relative())  // every younger row moves down one rank
        for (index_t t = 0; t < last; ++t)
          if (pos_[std::size_t(lane * cap_ + t)] > gone) {
            --rot_[std::size_t(lane * cap_ + t)];
            rerotate(lane, t);
          }
    }
    --size_;
  }

  // Shrinks every lane to the k slots keeps[lane * k + i] (sorted by position).
  void retain(const index_t* keeps, index_t k) {
    std::vector<char> kept(static_cast<std::size_t>(size_));
    for (index_t lane = 0; lane < lanes(); ++lane) {
      const index_t* ks = keeps + lane * k;
      if (opt_.layout == kv_layout::compacted) {
        for (index_t i = 0; i < k; ++i)  // ks ascending in slot too: forward copies are safe
          if (ks[i] != i) move_row(lane, ks[i], i);
        continue;
      }
      // slots: survivors stay; those above k fill the holes below k.
      std::fill(kept.begin(), kept.end(), 0);
      for (index_t i = 0; i < k; ++i) kept[std::size_t(ks[i])] = 1;
      index_t hole = 0;
      for (index_t i = 0; i < k; ++i) {
        if (ks[i] < k) continue;
        while (kept[std::size_t(hole)]) ++hole;
        move_row(lane, ks[i], hole);
        kept[std::size_t(hole)] = 1;
      }
    }
    size_ = k;
    if (relative())
      for (index_t lane = 0; lane < lanes(); ++lane) {
        const auto order = temporal_order(lane);
        for (index_t r = 0; r < k; ++r) {
          const index_t s = order[std::size_t(r)];
          if (rot_[std::size_t(lane * cap_ + s)] == r) continue;
          rot_[std::size_t(lane * cap_ + s)] = r;
          rerotate(lane, s);
        }
      }
  }

  // ---- Snapshot payload (the envelope is the policy's, snapshot.hpp). -----
  // size, next position, then per lane the size rows in slot order: K, V,
  // positions, statistics (and under cache_relative the original keys; the
  // attended copies are recomputed, bit for bit, from them); under
  // per_channel key scales the lanes' channel scales first.
  void write(snapshot_writer& w) const {
    w.put(std::int64_t(size_));
    w.put(std::int64_t(next_));
    w.put_array(chan_.data(), chan_.size());
    for (index_t lane = 0; lane < lanes(); ++lane) {
      w.put_array(k_.data() + lane * cap_ * rk(), std::size_t(size_ * rk()));
      w.put_array(v_.data() + lane * cap_ * rv(), std::size_t(size_ * rv()));
      for (index_t s = 0; s < size_; ++s) w.put(std::int64_t(positions(lane)[s]));
      w.put_array(stats(lane), std::size_t(size_ * opt_.row_stats));
      if (relative()) w.put_array(kabs_.data() + lane * cap_ * rk(), std::size_t(size_ * rk()));
    }
  }
  // Reads what write() wrote into a cache made with the same dims and
  // options, checking every count against the bytes left and the payload's
  // invariants (positions distinct, below the next position; at most
  // max_rows rows; finite statistics). The caller replaces its cache with
  // the result only on success.
  static kv_cache read(snapshot_reader& r, const attention_dims& dims, const kv_cache_options& opt,
                       index_t max_rows) {
    const std::int64_t size = r.get<std::int64_t>("size"), next = r.get<std::int64_t>("next position");
    r.check(size >= 0 && size <= max_rows && next >= size && next < std::numeric_limits<std::int64_t>::max() / 2,
            "size", [&] { return detail::concat("size ", size, ", next position ", next, ", at most ", max_rows, " rows"); });
    const index_t rk = dims.d + P, rv = value_dim(dims) + P, lanes = dims.b * dims.h_kv;
    const std::size_t per_row = sizeof(KV) * std::size_t(rk + rv) + sizeof(float) * std::size_t(opt.row_stats) +
                                sizeof(std::int64_t) +
                                (opt.positions == position_mode::cache_relative ? sizeof(KV) * std::size_t(rk) : 0);
    // (b = 0: no lanes, no row bytes; the size is still bounded by max_rows.)
    r.check(lanes == 0 || std::uint64_t(size) <= r.remaining() / per_row / std::uint64_t(lanes), "rows", [&] { return detail::concat(size, " rows per lane do not fit the ", r.remaining(), " bytes left"); });
    // The configured reserve, as make_state allocates it: a restored full
    // cache sized to exactly its rows doubled on the next step (2 x budget).
    kv_cache c(dims, kv_cache_options{opt.row_stats, opt.layout, opt.positions, opt.rope_theta,
                                      std::max<index_t>({index_t(size), opt.reserve, 1}), opt.keys});
    r.get_array(c.chan_.data(), c.chan_.size(), "key channel scales");
    for (index_t lane = 0; lane < lanes && c.channel_scaled(); ++lane) {
      const float* sc = c.key_channel_scales(lane);
      for (index_t i = 0; i < dims.d; ++i) {
        const float x = sc[i];
        int e = 0;
        r.check(std::isfinite(x) && x >= 1.0f && x <= max_channel_scale && std::frexp(x, &e) == 0.5f, "key channel scales",
                [&] { return detail::concat("key channel scale ", x, " is not a power of two in [1, 2^32]"); });
        r.check(next > 0 || x == 1.0f, "key channel scales", "scales set before any row was appended");
        r.check(!c.relative() || x == sc[i < dims.d / 2 ? i + dims.d / 2 : i - dims.d / 2], "key channel scales",
                "the two channels of a RoPE pair have different scales");
      }
    }
    // Rows as store_row writes them (q8: scale and range, kv_storage.hpp).
    const auto rows = [&](KV* x, index_t count, index_t stride, index_t n, const char* field) {
      r.get_array(x, std::size_t(count * stride), field);
      for (index_t i = 0; i < count; ++i)
        r.check(kv_storage_traits<KV>::row_valid(x + i * stride + P, n), field,
                [&] { return detail::concat("row ", i, " is not a valid ", kv_storage_traits<KV>::name, " row"); });
    };
    for (index_t lane = 0; lane < lanes; ++lane) {
      rows(c.k_.data() + lane * c.cap_ * rk, size, rk, dims.d, "keys");
      rows(c.v_.data() + lane * c.cap_ * rv, size, rv, rv - P, "values");
      index_t* p = c.pos_.data() + lane * c.cap_;
      for (index_t s = 0; s < size; ++s) {
        const std::int64_t x = r.get<std::int64_t>("positions");
        r.check(x >= 0 && x < next, "positions",
                [&] { return detail::concat("position ", x, " outside [0, next position ", next, ")"); });
        p[s] = index_t(x);
      }
      std::vector<index_t> sorted(p, p + size);
      std::sort(sorted.begin(), sorted.end());
      r.check(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end(), "positions",
              "a position is held twice in one lane");
      if (opt.layout == kv_layout::compacted)
        r.check(std::is_sorted(p, p + size), "positions", "a compacted cache holds rows in temporal order");
      float* st = c.stats(lane);
      r.get_array(st, std::size_t(size * opt.row_stats), "statistics");
      for (index_t i = 0; i < size * opt.row_stats; ++i)
        r.check(std::isfinite(st[i]), "statistics", "a row statistic is not finite");
      if (c.relative()) rows(c.kabs_.data() + lane * c.cap_ * rk, size, rk, dims.d, "original keys");
    }
    c.size_ = index_t(size);
    c.next_ = index_t(next);
    if (c.relative()) {  // ranks from temporal order; the attended copies must be the originals' rotations
      std::vector<KV> stored(static_cast<std::size_t>(rk));
      for (index_t lane = 0; lane < lanes; ++lane) {
        const auto order = c.temporal_order(lane);
        for (index_t t = 0; t < c.size_; ++t) {
          const index_t slot = order[std::size_t(t)];
          KV* row = c.k_.data() + (lane * c.cap_ + slot) * rk;
          std::memcpy(static_cast<void*>(stored.data()), row, sizeof(KV) * std::size_t(rk));
          c.rot_[std::size_t(lane * c.cap_ + slot)] = t;
          c.rerotate(lane, slot);
          r.check(std::memcmp(stored.data(), row, sizeof(KV) * std::size_t(rk)) == 0, "keys",
                  "an attended key is not the rotation of its original key to its rank");
        }
      }
    }
    return c;
  }

 private:
  static constexpr float max_channel_scale = 4294967296.0f;  // 2^32
  static constexpr float channel_threshold = 8.0f;           // a_c >= 8 m: scaled

  // key_scales::per_channel, first append (n rows per lane): s_c as
  // documented at key_scales. Non-finite values are left out of a_c (their
  // rows read as NaN whatever the scale).
  void calibrate(tensor4_view<const float> k) {
    const index_t n = k.extent(2), d = dims_.d, half = d / 2;
    std::vector<float> a(static_cast<std::size_t>(d)), sorted;
    for (index_t bi = 0; bi < dims_.b; ++bi)
      for (index_t hk = 0; hk < dims_.h_kv; ++hk) {
        std::fill(a.begin(), a.end(), 0.0f);
        for (index_t i = 0; i < n; ++i)
          for (index_t c = 0; c < d; ++c) {
            const float x = std::abs(k(bi, hk, i, c));
            if (std::isfinite(x)) a[std::size_t(c)] = std::max(a[std::size_t(c)], x);
          }
        if (relative())
          for (index_t c = 0; c < half; ++c)
            a[std::size_t(c)] = a[std::size_t(c + half)] = std::max(a[std::size_t(c)], a[std::size_t(c + half)]);
        sorted = a;
        const auto mid = sorted.begin() + (d - 1) / 2;
        std::nth_element(sorted.begin(), mid, sorted.end());
        const float m = *mid;
        float* sc = chan_.data() + (bi * dims_.h_kv + hk) * d;
        for (index_t c = 0; c < d; ++c) {
          float s = 1.0f;
          if (m > 0 && a[std::size_t(c)] >= channel_threshold * m)  // m 2^j is exact: no rounding decides j
            while (s < max_channel_scale && m * (2 * s) <= a[std::size_t(c)]) s *= 2;
          sc[c] = s;
        }
      }
  }

  tensor4_view<const KV> view(const KV* base, index_t dim) const noexcept {
    using E = typename tensor4_view<const KV>::extents_type;
    const index_t r = dim + P;
    // b = 0: no lanes, empty buffers with null data, never offset.
    return tensor4_view<const KV>(base ? base + P : base, E(dims_.b, dims_.h_kv, size_, dim), {dims_.h_kv * cap_ * r, cap_ * r, r, 1});
  }
  void move_row(index_t lane, index_t from, index_t to) noexcept {
    const index_t d = rk(), dv = rv(), rs = opt_.row_stats, f = lane * cap_ + from, t = lane * cap_ + to;
    std::memcpy(k_.data() + t * d, k_.data() + f * d, sizeof(KV) * std::size_t(d));
    std::memcpy(v_.data() + t * dv, v_.data() + f * dv, sizeof(KV) * std::size_t(dv));
    pos_[std::size_t(t)] = pos_[std::size_t(f)];
    if (rs) std::memcpy(stats_.data() + t * rs, stats_.data() + f * rs, sizeof(float) * std::size_t(rs));
    if (relative()) {
      std::memcpy(kabs_.data() + t * d, kabs_.data() + f * d, sizeof(KV) * std::size_t(d));
      rot_[std::size_t(t)] = rot_[std::size_t(f)];
    }
  }
  // key_row(slot) = R(rank - position) original key: one rotation, exact
  // (then rounded to the storage type, from the stored original: no drift).
  void rerotate(index_t lane, index_t slot) noexcept {
    const index_t d = dims_.d, at = lane * cap_ + slot;
    const double delta = double(rot_[std::size_t(at)] - pos_[std::size_t(at)]);
    float* buf = rot_buf_.data();  // 2 d floats, sized with the cache (float storage: two plain copies)
    kv_storage_traits<KV>::template load_row<default_arch>(kabs_.data() + at * rk() + P, buf, d);
    rope_rotate_row(buf, buf + d, d, delta, opt_.rope_theta);
    kv_storage_traits<KV>::template store_row<default_arch>(buf + d, k_.data() + at * rk() + P, d);
  }
  void relayout(index_t cap) {
    const index_t d = rk(), dv = rv(), rs = opt_.row_stats, L = lanes();
    std::vector<KV> k(std::size_t(L * cap * d)), v(std::size_t(L * cap * dv));
    std::vector<float> st(std::size_t(L * cap * rs));
    std::vector<index_t> pos(std::size_t(L * cap));
    std::vector<KV> kabs(relative() ? std::size_t(L * cap * d) : 0);
    std::vector<index_t> rot(relative() ? std::size_t(L * cap) : 0);
    for (index_t lane = 0; lane < L; ++lane) {
      std::copy_n(k_.data() + lane * cap_ * d, size_ * d, k.data() + lane * cap * d);
      std::copy_n(v_.data() + lane * cap_ * dv, size_ * dv, v.data() + lane * cap * dv);
      std::copy_n(pos_.data() + lane * cap_, size_, pos.data() + lane * cap);
      std::copy_n(stats_.data() + lane * cap_ * rs, size_ * rs, st.data() + lane * cap * rs);
      if (relative()) {
        std::copy_n(kabs_.data() + lane * cap_ * d, size_ * d, kabs.data() + lane * cap * d);
        std::copy_n(rot_.data() + lane * cap_, size_, rot.data() + lane * cap);
      }
    }
    k_.swap(k), v_.swap(v), stats_.swap(st), pos_.swap(pos), kabs_.swap(kabs), rot_.swap(rot);
    cap_ = cap;
  }

  std::vector<KV> k_, v_;  // (lanes, cap, d), (lanes, cap, d_v)
  std::vector<KV> kabs_;   // (lanes, cap, d) cache_relative: keys as appended
  std::vector<float> rot_buf_;  // cache_relative: one key row in float, rotated
  std::vector<float> chan_;     // per_channel: (lanes, d) key channel scales
  std::vector<float> key_buf_;  // per_channel: one key row divided by them
};

LONGCTX_NAMESPACE_END
