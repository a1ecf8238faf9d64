// Executors: every index runs exactly once, the pool is reusable, exceptions
// reach the caller, and degenerate sizes work.
#include <catch2/catch.hpp>

#include <atomic>
#include <stdexcept>
#include <vector>

#include <longctx/runtime/executor.hpp>

using namespace longctx;

TEST_CASE("serial_executor and thread_pool run each index exactly once", "[kernels]") {
  STATIC_REQUIRE(executor<serial_executor>);
  STATIC_REQUIRE(executor<thread_pool>);
  for (std::size_t threads : {1, 2, 3, 8}) {
    thread_pool pool(threads);
    CHECK(pool.concurrency() == threads);
    for (index_t n : {0, 1, 2, 7, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
      pool.parallel_for(n, [&](index_t i) { hits[std::size_t(i)].fetch_add(1); });
      for (auto& h : hits) REQUIRE(h.load() == 1);
    }
  }
  std::vector<int> seen;
  serial_executor{}.parallel_for(4, [&](index_t i) { seen.push_back(int(i)); });
  CHECK(seen == std::vector<int>{0, 1, 2, 3});
}

TEST_CASE("thread_pool rethrows a task's exception and stays usable", "[kernels]") {
  thread_pool pool(3);
  CHECK_THROWS_WITH(pool.parallel_for(100,
                                      [](index_t i) {
                                        if (i == 37) throw std::runtime_error("task 37");
                                      }),
                    "task 37");
  std::atomic<index_t> sum{0};
  pool.parallel_for(10, [&](index_t i) { sum += i; });
  CHECK(sum.load() == 45);
}
