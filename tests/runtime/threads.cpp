// The threading contract (README, Safety: threads): a policy object is
// immutable and serves many states on many threads at once; a state is used
// by one thread at a time, and its forward may run on any executor (the
// library's thread_pool or the user's own). Each case runs the same streams
// on two threads, each with its own state (and pool), and requires the bits
// of the serial run. In the test suite it checks results; in the fuzz
// presets the same file is built with ThreadSanitizer (tests/fuzz/
// CMakeLists.txt), which reports any data race the runs provoke.
#include <catch2/catch.hpp>

#include <cstddef>
#include <thread>
#include <vector>

#include <longctx/models/rmt.hpp>
#include <longctx/models/rmt_backbone.hpp>
#include <longctx/policies/dense.hpp>
#include <longctx/policies/flash.hpp>
#include <longctx/policies/infini.hpp>
#include <longctx/policies/tova.hpp>
#include <longctx/runtime/executor.hpp>

#include "../support/support.hpp"

using namespace longctx;

namespace {

// A user's pool: not longctx's, only the executor concept. Tasks are split
// into two contiguous halves, one on a fresh std::thread.
struct user_pool {
  template <class F>
  void parallel_for(index_t n, F&& f) const {
    const index_t half = n / 2;
    std::thread worker([&] {
      for (index_t i = half; i < n; ++i) f(i);
    });
    for (index_t i = 0; i < half; ++i) f(i);
    worker.join();
  }
  static constexpr std::size_t concurrency() noexcept { return 2; }
};

// A stream of n tokens of dims a, in calls of 1, 5, then the rest.
struct stream {
  attention_dims a;
  index_t n;
  std::vector<float> q, k, v;
  stream(attention_dims a_, index_t n_, std::uint64_t seed) : a(a_), n(n_) {
    test::rng_t g(seed);
    q = test::random_floats(g, std::size_t(a.b * a.h * n * a.d));
    k = test::random_floats(g, std::size_t(a.b * a.h_kv * n * a.d));
    v = test::random_floats(g, std::size_t(a.b * a.h_kv * n * a.d_v));
  }
  // Runs the whole stream through p on a fresh state with executor e.
  template <class P, class E>
  std::vector<float> run(const P& p, E&& e) const {
    auto st = p.make_state(a);
    std::vector<float> out(std::size_t(a.b * a.h * n * a.d_v));
    index_t t = 0;
    for (index_t len : {index_t(1), index_t(5), n - 6}) {
      const sequence_input in{slice(q, a.h, a.d, t, len), slice(k, a.h_kv, a.d, t, len),
                              slice(v, a.h_kv, a.d_v, t, len)};
      tensor4_view<float> o = slice_out(out, t, len);
      using In = typename P::input_type;
      if constexpr (std::is_same_v<In, sequence_input>)
        p.forward(st, in, o, e);
      else
        p.forward(st, In{in.q, in.k, in.v}, o, e);
      t += len;
    }
    return out;
  }
  tensor4_view<const float> slice(const std::vector<float>& x, index_t h, index_t d, index_t t, index_t len) const {
    return tensor4_view<const float>(x.data() + t * d, tensor4_view<const float>::extents_type(a.b, h, len, d),
                                     {h * n * d, n * d, d, 1});
  }
  tensor4_view<float> slice_out(std::vector<float>& x, index_t t, index_t len) const {
    return tensor4_view<float>(x.data() + t * a.d_v, tensor4_view<float>::extents_type(a.b, a.h, len, a.d_v),
                               {a.h * n * a.d_v, n * a.d_v, a.d_v, 1});
  }
};

// Two threads share the policy p, each with its own state, stream and
// executor (made by make_exec on its thread); both must reproduce their
// serial runs bit for bit.
template <class P, class MakeExec>
void two_threads(const P& p, MakeExec make_exec) {
  const stream s0({1, 4, 2, 24, 20}, 70, test::seed_for(950, 0)), s1({2, 2, 1, 16, 16}, 53, test::seed_for(950, 1));
  const std::vector<float> want0 = s0.run(p, serial_executor{}), want1 = s1.run(p, serial_executor{});
  std::vector<float> got0, got1;
  std::thread t0([&] { got0 = s0.run(p, make_exec()); });
  std::thread t1([&] { got1 = s1.run(p, make_exec()); });
  t0.join();
  t1.join();
  REQUIRE(got0 == want0);
  REQUIRE(got1 == want1);
}

template <class P>
void every_executor(const P& p) {
  SECTION("serial executors") { two_threads(p, [] { return serial_executor{}; }); }
  SECTION("a thread_pool each") {
    two_threads(p, [] { return thread_pool(2); });
  }
  SECTION("a user pool each") { two_threads(p, [] { return user_pool{}; }); }
}

}  // namespace

TEST_CASE("threads: one TOVA policy, two states on two threads", "[runtime][threads]") {
  every_executor(tova{.budget = 17});
}
TEST_CASE("threads: one int8 TOVA policy with per-channel keys, two states on two threads", "[runtime][threads]") {
  every_executor(bounded_cache<tova_rule, q8>{.budget = 17, .positions = position_mode::cache_relative,
                                              .keys = key_scales::per_channel});
}
TEST_CASE("threads: one H2O policy, two states on two threads", "[runtime][threads]") {
  every_executor(h2o_cache{.budget = 15, .rule = {.recent = 4}});
}
TEST_CASE("threads: one dense policy, two states on two threads", "[runtime][threads]") { every_executor(dense{}); }
TEST_CASE("threads: one Infini-attention policy, two states on two threads", "[runtime][threads]") {
  every_executor(infini{.segment = 9, .update = update_rule::delta});
}
TEST_CASE("threads: one FLASH policy, two states on two threads", "[runtime][threads]") {
  every_executor(flash{.chunk = 8});
}
