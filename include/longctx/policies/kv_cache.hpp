// Bounded KV cache: at most `budget` rows of K (b, h_kv, ., d) and V
// (b, h_kv, ., d_v) per KV head, with every row's absolute position, and the
// eviction rule that picks which row goes (tova, window, sinks, h2o, full).
// Contract: rows appended at the end; eviction keeps a row set defined by the
// policy; snapshot()/restore() round-trip exactly and reject foreign bytes.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "../error.hpp"
#include "../kernels/topk.hpp"
#include "../tensor/view.hpp"

LONGCTX_NAMESPACE_BEGIN

// Which row leaves when the cache holds budget + 1 rows.
enum class eviction {
  tova,    // lowest current-query attention (TOVA, arXiv 2401.06104)
  window,  // oldest
  sinks,   // oldest except the first `sinks` positions (StreamingLLM)
  h2o,     // lowest accumulated attention outside the `recent` window (H2O)
  full,    // never: unbounded, the reference the others are compared with
};

// Storage strategy. slots (default): the new row goes where the victim was,
// O(d) per step; rows are in temporal order only through positions().
// compacted: rows stay physically in temporal order, so an eviction moves
// every younger row: O(budget d) per step. bench_tova, tova at budget 4096,
// H = h_kv = 8, d = 128, 2 threads: the compacted step took 2.7x the slots
// step (main-thread CPU 4.1 ms vs 1.5 ms; its memmove is as large as the
// attention's own K/V read), so slots is the default.
enum class kv_layout { slots, compacted };

// TOVA may drop the token it has just decoded (paper, default); `kept`
// always keeps it and drops the lowest-scored older row instead.
enum class current_token { evictable, kept };

// H2O ranks by the sum of past attention (paper) or by that sum divided by
// the number of queries that saw the row (older rows saw more queries).
enum class h2o_normalisation { none, query_count };

// Positions the attention sees. absolute (paper, default): keys keep the
// RoPE rotation of their original position, the query that of time t.
// cache_relative (StreamingLLM): the row of temporal rank r is attended as if
// at position r and the newest query at rank size - 1; cached keys are
// re-rotated from their original (absolute-rotated) copy by a single exact
// rotation whenever their rank changes. RoPE: half-split pairs (x_i,
// x_{i + d/2}) with frequency theta^(-2i/d) (GPT-NeoX / LLaMA); needs even d
// and keeps a second copy of K.
enum class position_mode { absolute, cache_relative };

namespace detail {
// out = R(delta) in for RoPE; angles in double so a rotation is exact to
// float rounding whatever the position; delta 0 copies bit for bit.
inline void rope_rotate(const float* in, float* out, index_t d, double delta, double theta) noexcept {
  const index_t half = d / 2;
  for (index_t i = 0; i < half; ++i) {
    if (delta == 0) {
      out[i] = in[i], out[i + half] = in[i + half];
      continue;
    }
    const double a = delta * std::pow(theta, -2.0 * double(i) / double(d));
    const double c = std::cos(a), sn = std::sin(a), x = in[i], y = in[i + half];
    out[i] = float(x * c - y * sn);
    out[i + half] = float(y * c + x * sn);
  }
}
}  // namespace detail

struct kv_cache_dims {
  index_t batch = 1, heads = 1, kv_heads = 1, head_dim = 0, value_dim = 0;  // value_dim 0: head_dim
};

struct kv_cache_config {
  index_t budget = 0;
  eviction policy = eviction::tova;
  current_token current = current_token::evictable;
  index_t sinks = 4;    // eviction::sinks: attention sinks kept (StreamingLLM uses 4)
  index_t recent = -1;  // eviction::h2o: recent window; -1: budget / 2 (H2O's even split)
  h2o_normalisation h2o_norm = h2o_normalisation::none;
  kv_layout layout = kv_layout::slots;
  position_mode positions = position_mode::absolute;
  float rope_theta = 10000.0f;  // position_mode::cache_relative only

  bool operator==(const kv_cache_config&) const = default;
  bool bounded() const noexcept { return policy != eviction::full; }
  index_t h2o_recent() const noexcept { return recent < 0 ? budget / 2 : recent; }
  index_t sink_count() const noexcept { return std::min(sinks, budget); }
};

inline const char* eviction_name(eviction e) noexcept {
  switch (e) {
    case eviction::tova: return "tova";
    case eviction::window: return "window";
    case eviction::sinks: return "sinks";
    case eviction::h2o: return "h2o";
    case eviction::full: return "full";
  }
  return "?";
}

inline void require_kv_cache_config(const kv_cache_config& c, const char* where) {
  const int p = static_cast<int>(c.policy);
  require(p >= 0 && p <= 4, where, "policy", "unknown eviction policy ", p);
  require(c.layout == kv_layout::slots || c.layout == kv_layout::compacted, where, "layout", "unknown layout");
  require(c.current == current_token::evictable || c.current == current_token::kept, where, "current",
          "unknown current_token value");
  require(c.h2o_norm == h2o_normalisation::none || c.h2o_norm == h2o_normalisation::query_count, where,
          "h2o_norm", "unknown h2o_normalisation value");
  require(c.positions == position_mode::absolute || c.positions == position_mode::cache_relative, where,
          "positions", "unknown position_mode value");
  require(c.positions == position_mode::absolute || (std::isfinite(c.rope_theta) && c.rope_theta > 0), where,
          "rope_theta", "must be finite and > 0, got ", c.rope_theta);
  if (!c.bounded()) return;
  require(c.budget >= 0, where, "budget", "must be >= 0, got ", c.budget);
  const bool keep = c.current == current_token::kept;
  require(!(keep && c.budget == 0), where, "current",
          "current_token::kept needs budget >= 1 (budget 0 keeps no row at all)");
  if (c.policy == eviction::sinks) {
    require(c.sinks >= 0, where, "sinks", "must be >= 0, got ", c.sinks);
    require(!(keep && c.sinks >= c.budget), where, "current", "current_token::kept with sinks ", c.sinks,
            " >= budget ", c.budget, " leaves no evictable row");
  }
  if (c.policy == eviction::h2o)
    require(c.recent >= -1 && c.h2o_recent() <= c.budget, where, "recent",
            "H2O recent window must be in [0, budget = ", c.budget, "] (or -1 for budget / 2), got ", c.recent);
}

class kv_cache {
 public:
  kv_cache(kv_cache_dims dims, kv_cache_config config) : dims_(dims), cfg_(config) {
    if (dims_.value_dim == 0) dims_.value_dim = dims_.head_dim;
    require(dims_.batch >= 1 && dims_.heads >= 1 && dims_.kv_heads >= 1, "kv_cache", "dims",
            "batch, heads, kv_heads must be >= 1, got (", dims_.batch, ", ", dims_.heads, ", ", dims_.kv_heads,
            ")");
    require(dims_.heads % dims_.kv_heads == 0, "kv_cache", "dims", "heads ", dims_.heads,
            " not a multiple of kv_heads ", dims_.kv_heads);
    require(dims_.head_dim >= 1 && dims_.value_dim >= 1, "kv_cache", "dims", "head_dim ", dims_.head_dim,
            " and value_dim ", dims_.value_dim, " must be >= 1");
    require_kv_cache_config(cfg_, "kv_cache");
    require(!relative() || dims_.head_dim % 2 == 0, "kv_cache", "dims",
            "position_mode::cache_relative (RoPE) needs an even head_dim, got ", dims_.head_dim);
    reserve(cfg_.bounded() ? cfg_.budget + 1 : 16);
  }

  const kv_cache_dims& dims() const noexcept { return dims_; }
  const kv_cache_config& config() const noexcept { return cfg_; }
  index_t size() const noexcept { return size_; }          // rows held per KV head
  index_t capacity() const noexcept { return cap_; }       // rows allocated per KV head
  index_t next_position() const noexcept { return next_; }  // tokens seen so far
  index_t lanes() const noexcept { return dims_.batch * dims_.kv_heads; }  // lane = b * h_kv + hk
  // Bytes held by K, V and the per-row metadata.
  std::size_t memory_bytes() const noexcept {
    const std::size_t extra = relative() ? sizeof(float) * std::size_t(dims_.head_dim) + sizeof(index_t) : 0;
    return std::size_t(lanes() * cap_) *
           (sizeof(float) * std::size_t(dims_.head_dim + dims_.value_dim + 2) + sizeof(index_t) + extra);
  }

  // (b, h_kv, size, d) and (b, h_kv, size, d_v): the rows held, slot order.
  tensor4_view<const float> keys() const noexcept { return view(k_.data(), dims_.head_dim); }
  tensor4_view<const float> values() const noexcept { return view(v_.data(), dims_.value_dim); }
  // Per lane, slot-indexed: absolute position, H2O accumulated attention and
  // the number of queries that saw the row.
  const index_t* positions(index_t lane) const noexcept { return pos_.data() + lane * cap_; }
  float* accumulated(index_t lane) noexcept { return acc_.data() + lane * cap_; }
  const float* accumulated(index_t lane) const noexcept { return acc_.data() + lane * cap_; }
  float* query_counts(index_t lane) noexcept { return cnt_.data() + lane * cap_; }
  const float* query_counts(index_t lane) const noexcept { return cnt_.data() + lane * cap_; }
  bool relative() const noexcept { return cfg_.positions == position_mode::cache_relative; }
  // The key as appended (rotated at its absolute position); key_row() is the
  // attended copy (re-rotated to its rank under cache_relative).
  const float* original_key_row(index_t lane, index_t slot) const noexcept {
    return relative() ? kabs_.data() + (lane * cap_ + slot) * dims_.head_dim : key_row(lane, slot);
  }
  const float* key_row(index_t lane, index_t slot) const noexcept { return k_.data() + (lane * cap_ + slot) * dims_.head_dim; }
  const float* value_row(index_t lane, index_t slot) const noexcept { return v_.data() + (lane * cap_ + slot) * dims_.value_dim; }

  // Slots of a lane sorted by position (temporal order).
  std::vector<index_t> temporal_order(index_t lane) const {
    std::vector<index_t> s(static_cast<std::size_t>(size_));
    for (index_t j = 0; j < size_; ++j) s[std::size_t(j)] = j;
    const index_t* p = positions(lane);
    std::sort(s.begin(), s.end(), [&](index_t a, index_t b) { return p[a] < p[b]; });
    return s;
  }
  // Positions held by a lane in temporal order.
  std::vector<index_t> held_positions(index_t lane) const {
    std::vector<index_t> r;
    for (index_t s : temporal_order(lane)) r.push_back(positions(lane)[s]);
    return r;
  }

  // Grows storage to at least `rows` per lane (re-lays out; amortised doubling).
  void reserve(index_t rows) {
    if (rows <= cap_) return;
    const index_t cap = std::max(rows, cfg_.bounded() ? rows : 2 * cap_);
    relayout(cap);
  }
  // Returns the storage to budget + 1 rows (after a prefill grew it).
  void shrink_to_fit() {
    const index_t want = std::max(size_, cfg_.bounded() ? cfg_.budget + 1 : size_);
    if (want < cap_) relayout(want);
  }

  // Appends n rows: k (b, h_kv, n, d), v (b, h_kv, n, d_v); positions
  // next_position() .. + n - 1; H2O statistics start at 0.
  void append(tensor4_view<const float> k, tensor4_view<const float> v) {
    const index_t n = k.extent(2);
    require(k.extent(0) == dims_.batch && k.extent(1) == dims_.kv_heads && k.extent(3) == dims_.head_dim,
            "kv_cache::append", "k", "must be (", dims_.batch, ", ", dims_.kv_heads, ", n, ", dims_.head_dim,
            "), got ", shape_of(k));
    require(v.extent(0) == dims_.batch && v.extent(1) == dims_.kv_heads && v.extent(2) == n &&
                v.extent(3) == dims_.value_dim,
            "kv_cache::append", "v", "must be (", dims_.batch, ", ", dims_.kv_heads, ", ", n, ", ",
            dims_.value_dim, "), got ", shape_of(v));
    require_unit_inner_stride(k, "kv_cache::append", "k");
    require_unit_inner_stride(v, "kv_cache::append", "v");
    reserve(size_ + n);
    const index_t d = dims_.head_dim, dv = dims_.value_dim;
    for (index_t bi = 0; bi < dims_.batch; ++bi)
      for (index_t hk = 0; hk < dims_.kv_heads; ++hk) {
        const index_t lane = bi * dims_.kv_heads + hk;
        for (index_t i = 0; i < n; ++i) {
          const index_t s = lane * cap_ + size_ + i;
          std::memcpy(k_.data() + s * d, &k(bi, hk, i, 0), sizeof(float) * std::size_t(d));
          std::memcpy(v_.data() + s * dv, &v(bi, hk, i, 0), sizeof(float) * std::size_t(dv));
          pos_[std::size_t(s)] = next_ + i;
          acc_[std::size_t(s)] = 0.0f;
          cnt_[std::size_t(s)] = 0.0f;
          if (relative()) {  // rank size_ + i among the rows after this append
            std::memcpy(kabs_.data() + s * d, k_.data() + s * d, sizeof(float) * std::size_t(d));
            rot_[std::size_t(s)] = size_ + i;
            rerotate(lane, size_ + i);
          }
        }
      }
    size_ += n;
    next_ += n;
  }

  // The slot the policy evicts from `lane` when it holds budget + 1 rows;
  // -1: no eviction. `scores`: the lane's aggregated attention of the newest
  // query (read by tova only). Uses the cache's own workspace (not const).
  template <arch_tag Arch = default_arch>
  index_t victim(index_t lane, const float* scores) noexcept {
    if (!cfg_.bounded() || size_ <= cfg_.budget) return -1;
    const index_t* pos = positions(lane);
    const bool slots = cfg_.layout == kv_layout::slots;
    const index_t newest = next_ - 1, n = size_;
    const bool keep = cfg_.current == current_token::kept;
    switch (cfg_.policy) {
      case eviction::tova:
        // The newest row is always the last slot: appended there just now.
        return argmin<Arch>(scores, keep ? n - 1 : n, slots ? pos : nullptr);
      case eviction::window:
      case eviction::sinks: {
        // Sinks are positions [0, sink_count): present since the first steps
        // and never evicted; the victim is the oldest other row.
        const index_t first = cfg_.policy == eviction::sinks ? cfg_.sink_count() : 0;
        if (!slots) {
          index_t s = 0;
          while (s < n - 1 && pos[s] < first) ++s;
          return s;
        }
        index_t best = -1;
        for (index_t s = 0; s < n; ++s)
          if (pos[s] >= first && (best < 0 || pos[s] < pos[best])) best = s;
        return best;
      }
      case eviction::h2o: {
        // Candidates: outside the `recent` newest positions (and not the
        // current token if kept), gathered so the argmin stays vectorised.
        const index_t limit = newest - cfg_.h2o_recent();  // candidates: pos <= limit
        const float* acc = accumulated(lane);
        const float* cnt = cnt_.data() + lane * cap_;
        const bool norm = cfg_.h2o_norm == h2o_normalisation::query_count;
        float* cs = ws_score_.data();
        index_t* cslot = ws_index_.data();
        index_t* cpos = cslot + cap_;
        index_t m = 0;
        for (index_t s = 0; s < n; ++s) {
          if (pos[s] > limit || (keep && pos[s] == newest)) continue;
          cs[m] = norm ? acc[s] / std::max(cnt[s], 1.0f) : acc[s];
          cslot[m] = s;
          cpos[m] = pos[s];
          ++m;
        }
        return m == 0 ? -1 : cslot[argmin<Arch>(cs, m, cpos)];
      }
      case eviction::full: return -1;
    }
    return -1;
  }

  // Removes slot victims[lane] from every lane (all lanes hold the same
  // number of rows, so all evict together).
  void evict(const index_t* victims) noexcept {
    const index_t last = size_ - 1;
    for (index_t lane = 0; lane < lanes(); ++lane) {
      const index_t s = victims[lane];
      LONGCTX_ASSERT(s >= 0 && s < size_);
      const index_t gone = pos_[std::size_t(lane * cap_ + s)];
      if (cfg_.layout == kv_layout::slots) {
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

  // Slots of `lane` to keep when shrinking to `k` rows in one go (prefill):
  // the same rows repeated victim() calls would keep for fixed scores.
  // Writes k slots to keep[0, k) sorted by position; keep holds size() slots.
  void select_keep(index_t lane, index_t k, const float* scores, index_t* keep) const {
    const index_t n = size_, newest = next_ - 1;
    const index_t* pos = positions(lane);
    k = std::clamp<index_t>(k, 0, n);
    if (!cfg_.bounded() || k == n) {
      for (index_t j = 0; j < n; ++j) keep[j] = j;
      sort_by_position(lane, keep, n);
      return;
    }
    // Protected rows are always kept; the rest is ranked by a priority.
    std::vector<float> prio(static_cast<std::size_t>(n));
    std::vector<char> prot(std::size_t(n), 0);
    const bool keep_cur = cfg_.current == current_token::kept;
    for (index_t s = 0; s < n; ++s) {
      switch (cfg_.policy) {
        case eviction::tova:
          prio[std::size_t(s)] = scores[s];
          prot[std::size_t(s)] = keep_cur && pos[s] == newest;
          break;
        case eviction::window:
        case eviction::sinks: {
          const index_t first = cfg_.policy == eviction::sinks ? cfg_.sink_count() : 0;
          prio[std::size_t(s)] = 0.0f;  // ranked by position alone (ties)
          prot[std::size_t(s)] = pos[s] < first;
          break;
        }
        case eviction::h2o: {
          const float* acc = accumulated(lane);
          const float* cnt = cnt_.data() + lane * cap_;
          prio[std::size_t(s)] =
              cfg_.h2o_norm == h2o_normalisation::query_count ? acc[s] / std::max(cnt[s], 1.0f) : acc[s];
          prot[std::size_t(s)] = pos[s] > newest - cfg_.h2o_recent() || (keep_cur && pos[s] == newest);
          break;
        }
        case eviction::full: break;
      }
    }
    std::vector<index_t> cand, cand_pos;
    std::vector<float> cand_prio;
    index_t kept = 0;
    for (index_t s = 0; s < n; ++s) {
      if (prot[std::size_t(s)] && kept < k) {
        keep[kept++] = s;
      } else {
        cand.push_back(s);
        cand_pos.push_back(pos[s]);
        cand_prio.push_back(prio[std::size_t(s)]);
      }
    }
    std::vector<index_t> sel(cand.size());
    const index_t m = top_k(cand_prio.data(), index_t(cand.size()), k - kept, sel.data(), cand_pos.data());
    for (index_t i = 0; i < m; ++i) keep[kept++] = cand[std::size_t(sel[std::size_t(i)])];
    sort_by_position(lane, keep, kept);
  }

  // Shrinks every lane to the k slots keeps[lane * k + i] (sorted by position).
  void retain(const index_t* keeps, index_t k) {
    std::vector<char> kept(static_cast<std::size_t>(size_));
    for (index_t lane = 0; lane < lanes(); ++lane) {
      const index_t* ks = keeps + lane * k;
      if (cfg_.layout == kv_layout::compacted) {
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

  // ---- Snapshot / restore. ------------------------------------------------
  // Layout (little-endian host order): magic "LCTXKVC1", u32 version, then
  // int64 dims (5), config (7), size, next_position, then per lane the size
  // rows in slot order: K, V, positions, accumulated, query counts.
  static constexpr std::uint32_t snapshot_version = 1;

  std::vector<unsigned char> snapshot() const {
    std::vector<unsigned char> out;
    put_bytes(out, magic, 8);
    put(out, snapshot_version);
    for (std::int64_t x : header_fields()) put(out, x);
    put(out, std::int64_t(size_));
    put(out, std::int64_t(next_));
    for (index_t lane = 0; lane < lanes(); ++lane) {
      put_bytes(out, k_.data() + lane * cap_ * dims_.head_dim, std::size_t(size_ * dims_.head_dim) * 4);
      put_bytes(out, v_.data() + lane * cap_ * dims_.value_dim, std::size_t(size_ * dims_.value_dim) * 4);
      for (index_t s = 0; s < size_; ++s) put(out, std::int64_t(pos_[std::size_t(lane * cap_ + s)]));
      put_bytes(out, acc_.data() + lane * cap_, std::size_t(size_) * 4);
      put_bytes(out, cnt_.data() + lane * cap_, std::size_t(size_) * 4);
      if (relative()) {
        put_bytes(out, kabs_.data() + lane * cap_ * dims_.head_dim, std::size_t(size_ * dims_.head_dim) * 4);
        for (index_t s = 0; s < size_; ++s) put(out, std::int64_t(rot_[std::size_t(lane * cap_ + s)]));
      }
    }
    return out;
  }

  // Replaces the contents with a snapshot of a cache with the same dims and
  // config; throws (leaving this cache unchanged) on anything else.
  void restore(std::span<const unsigned char> in) {
    const char* where = "kv_cache::restore";
    std::size_t at = 0;
    const auto need = [&](std::size_t bytes) {
      require(at <= in.size() && in.size() - at >= bytes, where, "snapshot", "truncated: ", in.size(),
              " bytes, needed at least ", at + bytes);
    };
    need(8 + 4);
    require(std::memcmp(in.data(), magic, 8) == 0, where, "snapshot", "not a kv_cache snapshot (bad magic)");
    at = 8;
    const auto version = get<std::uint32_t>(in, at);
    require(version == snapshot_version, where, "snapshot", "version ", version, " != supported ",
            snapshot_version);
    const auto mine = header_fields();
    need(sizeof(std::int64_t) * (mine.size() + 2));
    for (std::size_t i = 0; i < mine.size(); ++i) {
      const auto x = get<std::int64_t>(in, at);
      require(x == mine[i], where, "snapshot", "dims/config field ", i, " is ", x, ", this cache has ", mine[i],
              " (snapshot of a differently configured cache)");
    }
    const auto size = get<std::int64_t>(in, at), next = get<std::int64_t>(in, at);
    require(size >= 0 && next >= size && (!cfg_.bounded() || size <= cfg_.budget), where, "snapshot",
            "inconsistent size ", size, " / position ", next);
    const std::size_t per_lane = std::size_t(size) * (4 * std::size_t(dims_.head_dim + dims_.value_dim) + 8 + 4 + 4 +
                                                      (relative() ? 4 * std::size_t(dims_.head_dim) + 8 : 0));
    need(per_lane * std::size_t(lanes()));
    require(in.size() == at + per_lane * std::size_t(lanes()), where, "snapshot", "has ",
            in.size() - at - per_lane * std::size_t(lanes()), " trailing bytes");
    reserve(index_t(size));
    for (index_t lane = 0; lane < lanes(); ++lane) {
      get_bytes(in, at, k_.data() + lane * cap_ * dims_.head_dim, std::size_t(size * dims_.head_dim) * 4);
      get_bytes(in, at, v_.data() + lane * cap_ * dims_.value_dim, std::size_t(size * dims_.value_dim) * 4);
      for (index_t s = 0; s < size; ++s) pos_[std::size_t(lane * cap_ + s)] = index_t(get<std::int64_t>(in, at));
      get_bytes(in, at, acc_.data() + lane * cap_, std::size_t(size) * 4);
      get_bytes(in, at, cnt_.data() + lane * cap_, std::size_t(size) * 4);
      if (relative()) {
        get_bytes(in, at, kabs_.data() + lane * cap_ * dims_.head_dim, std::size_t(size * dims_.head_dim) * 4);
        for (index_t s = 0; s < size; ++s) rot_[std::size_t(lane * cap_ + s)] = index_t(get<std::int64_t>(in, at));
      }
    }
    size_ = index_t(size);
    next_ = index_t(next);
  }

 private:
  static constexpr char magic[9] = "LCTXKVC1";

  std::vector<std::int64_t> header_fields() const {
    return {dims_.batch,
            dims_.heads,
            dims_.kv_heads,
            dims_.head_dim,
            dims_.value_dim,
            cfg_.budget,
            std::int64_t(cfg_.policy),
            std::int64_t(cfg_.current),
            cfg_.sinks,
            cfg_.recent,
            std::int64_t(cfg_.h2o_norm),
            std::int64_t(cfg_.layout),
            std::int64_t(cfg_.positions),
            std::int64_t(std::bit_cast<std::int32_t>(cfg_.rope_theta))};
  }
  template <class T>
  static void put(std::vector<unsigned char>& out, T x) {
    put_bytes(out, &x, sizeof x);
  }
  static void put_bytes(std::vector<unsigned char>& out, const void* p, std::size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    out.insert(out.end(), b, b + n);
  }
  template <class T>
  static T get(std::span<const unsigned char> in, std::size_t& at) {
    T x;
    std::memcpy(&x, in.data() + at, sizeof x);
    at += sizeof x;
    return x;
  }
  static void get_bytes(std::span<const unsigned char> in, std::size_t& at, void* p, std::size_t n) {
    if (n) std::memcpy(p, in.data() + at, n);
    at += n;
  }

  tensor4_view<const float> view(const float* base, index_t dim) const noexcept {
    using E = tensor4_view<const float>::extents_type;
    return tensor4_view<const float>(base, E(dims_.batch, dims_.kv_heads, size_, dim),
                                     {dims_.kv_heads * cap_ * dim, cap_ * dim, dim, 1});
  }
  void move_row(index_t lane, index_t from, index_t to) noexcept {
    const index_t d = dims_.head_dim, dv = dims_.value_dim, f = lane * cap_ + from, t = lane * cap_ + to;
    std::memcpy(k_.data() + t * d, k_.data() + f * d, sizeof(float) * std::size_t(d));
    std::memcpy(v_.data() + t * dv, v_.data() + f * dv, sizeof(float) * std::size_t(dv));
    pos_[std::size_t(t)] = pos_[std::size_t(f)];
    acc_[std::size_t(t)] = acc_[std::size_t(f)];
    cnt_[std::size_t(t)] = cnt_[std::size_t(f)];
    if (relative()) {
      std::memcpy(kabs_.data() + t * d, kabs_.data() + f * d, sizeof(float) * std::size_t(d));
      rot_[std::size_t(t)] = rot_[std::size_t(f)];
    }
  }
  // key_row(slot) = R(rank - position) original key: one rotation, exact.
  void rerotate(index_t lane, index_t slot) noexcept {
    const index_t d = dims_.head_dim, at = lane * cap_ + slot;
    detail::rope_rotate(kabs_.data() + at * d, k_.data() + at * d, d,
                        double(rot_[std::size_t(at)] - pos_[std::size_t(at)]), cfg_.rope_theta);
  }
  void sort_by_position(index_t lane, index_t* slots, index_t n) const {
    const index_t* p = positions(lane);
    std::sort(slots, slots + n, [&](index_t a, index_t b) { return p[a] < p[b]; });
  }
  void relayout(index_t cap) {
    const index_t d = dims_.head_dim, dv = dims_.value_dim, L = lanes();
    std::vector<float> k(std::size_t(L * cap * d)), v(std::size_t(L * cap * dv)), acc(std::size_t(L * cap)),
        cnt(std::size_t(L * cap));
    std::vector<index_t> pos(std::size_t(L * cap));
    std::vector<float> kabs(relative() ? std::size_t(L * cap * d) : 0);
    std::vector<index_t> rot(relative() ? std::size_t(L * cap) : 0);
    for (index_t lane = 0; lane < L; ++lane) {
      std::copy_n(k_.data() + lane * cap_ * d, size_ * d, k.data() + lane * cap * d);
      std::copy_n(v_.data() + lane * cap_ * dv, size_ * dv, v.data() + lane * cap * dv);
      std::copy_n(pos_.data() + lane * cap_, size_, pos.data() + lane * cap);
      std::copy_n(acc_.data() + lane * cap_, size_, acc.data() + lane * cap);
      std::copy_n(cnt_.data() + lane * cap_, size_, cnt.data() + lane * cap);
      if (relative()) {
        std::copy_n(kabs_.data() + lane * cap_ * d, size_ * d, kabs.data() + lane * cap * d);
        std::copy_n(rot_.data() + lane * cap_, size_, rot.data() + lane * cap);
      }
    }
    kabs_.swap(kabs);
    rot_.swap(rot);
    k_.swap(k);
    v_.swap(v);
    pos_.swap(pos);
    acc_.swap(acc);
    cnt_.swap(cnt);
    cap_ = cap;
    ws_score_.assign(std::size_t(cap), 0.0f);
    ws_index_.assign(std::size_t(2 * cap), 0);
  }

  kv_cache_dims dims_;
  kv_cache_config cfg_;
  index_t cap_ = 0, size_ = 0, next_ = 0;
  std::vector<float> k_, v_, acc_, cnt_;  // (lanes, cap, d), (lanes, cap, d_v), (lanes, cap) x 2
  std::vector<index_t> pos_;              // (lanes, cap)
  std::vector<float> kabs_;               // (lanes, cap, d) cache_relative: keys as appended
  std::vector<index_t> rot_;              // (lanes, cap) cache_relative: position key_row is rotated to
  std::vector<float> ws_score_;  // (cap) h2o victim workspace
  std::vector<index_t> ws_index_;  // (2 cap)
};

LONGCTX_NAMESPACE_END
