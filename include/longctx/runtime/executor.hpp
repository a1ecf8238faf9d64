// Executors: how kernels run independent tasks. A kernel splits its work into
// tasks whose results do not depend on which thread runs them or in which
// order, so output is bit-identical for any executor and thread count.
// Plug in an engine's own pool by giving it parallel_for(n, f) and concurrency().
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "../tensor/extents.hpp"

LONGCTX_NAMESPACE_BEGIN

/// How kernels run independent tasks: e.parallel_for(n, f) calls f(i) once
/// for every i in [0, n), possibly concurrently, and returns when all calls
/// have returned; e.concurrency() is the number of threads it may use (a
/// hint for task sizes, never a reason for different results). Every kernel
/// and policy takes one as its last, optional argument: serial_executor,
/// thread_pool, or your engine's own pool with these two members
/// (parallel_for must accept any callable, i.e. be a template). Results are
/// bit-identical whatever the executor and its thread count.
template <class E>
concept executor = requires(E& e, index_t n, void (*f)(index_t)) {
  e.parallel_for(n, f);
  { e.concurrency() } -> std::convertible_to<std::size_t>;
};

/// Runs every task on the calling thread, in order: the default executor
/// of every entry point and policy. Stateless; any number of threads may
/// use one at once.
struct serial_executor {
  /// Calls f(0), ..., f(n - 1) in order; an exception leaves at once.
  /// \param n the task count (nothing happens for n <= 0)
  /// \param f the task
  template <class F>
  void parallel_for(index_t n, F&& f) const {
    for (index_t i = 0; i < n; ++i) f(i);
  }
  /// \return 1
  static constexpr std::size_t concurrency() noexcept { return 1; }
};

/// A fixed pool of std::threads; the calling thread takes part, so
/// thread_pool(2) uses the caller plus one worker. Tasks are handed out by an
/// atomic counter (dynamic scheduling balances causal work). Workers sleep
/// on a condition variable between calls.
///
/// Thread safety: one parallel_for at a time per pool. It is not reentrant
/// (a task must not call parallel_for on the same pool) and two threads must
/// not call it on one pool concurrently: give each thread its own pool.
/// Neither copyable nor movable.
class thread_pool {
 public:
  /// Starts threads - 1 workers.
  /// \param threads the threads parallel_for uses, the caller included
  ///   (default: std::thread::hardware_concurrency(); 0 means 1)
  explicit thread_pool(std::size_t threads = std::thread::hardware_concurrency())
      : size_(threads == 0 ? 1 : threads) {
    for (std::size_t t = 1; t < size_; ++t) workers_.emplace_back([this] { worker_loop(); });
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  ~thread_pool() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    start_cv_.notify_all();
    for (auto& w : workers_) w.join();
  }

  /// \return the threads parallel_for uses, the caller included
  std::size_t concurrency() const noexcept { return size_; }

  /// Calls f(i) once for every i in [0, n) on the pool's threads and the
  /// caller, and returns when all have returned (on the caller alone when
  /// n == 1 or the pool has one thread). If a task throws, the tasks not yet
  /// started are skipped and the first exception is rethrown here once the
  /// running ones have finished; the pool stays usable.
  /// \param n the task count (nothing happens for n <= 0)
  /// \param f the task, called as f(index_t)
  template <class F>
  void parallel_for(index_t n, F&& f) {
    if (n <= 0) return;
    if (size_ == 1 || n == 1) {
      for (index_t i = 0; i < n; ++i) f(i);
      return;
    }
    std::function<void(index_t)> task = std::ref(f);
    {
      std::lock_guard lock(mu_);
      task_ = &task;
      n_ = n;
      next_.store(0, std::memory_order_relaxed);
      active_ = workers_.size();
      error_ = nullptr;
      ++generation_;
    }
    start_cv_.notify_all();
    run_tasks();
    std::unique_lock lock(mu_);
    done_cv_.wait(lock, [&] { return active_ == 0; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void run_tasks() {
    for (index_t i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < n_;) {
      try {
        (*task_)(i);
      } catch (...) {
        std::lock_guard lock(mu_);
        if (!error_) error_ = std::current_exception();
        next_.store(n_, std::memory_order_relaxed);  // skip the rest
      }
    }
  }
  void worker_loop() {
    std::size_t seen = 0;
    for (;;) {
      {
        std::unique_lock lock(mu_);
        start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      run_tasks();
      std::lock_guard lock(mu_);
      if (--active_ == 0) done_cv_.notify_one();
    }
  }

  std::size_t size_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  std::function<void(index_t)>* task_ = nullptr;
  index_t n_ = 0;
  std::atomic<index_t> next_{0};
  std::size_t active_ = 0, generation_ = 0;
  std::exception_ptr error_;
  bool stop_ = false;
};

LONGCTX_NAMESPACE_END
