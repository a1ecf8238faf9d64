// Scratch memory for kernels and policies: cache-line-aligned buffers that
// grow and are reused, one per thread and tag, so steady-state calls do not
// allocate.
//
// Alignment matters for speed, not correctness: malloc gives 16-byte blocks,
// so half of the 32-byte AVX2 loads from a std::vector split a cache line,
// and the split pattern (hence the speed, up to 20% here) changed from run to
// run with the heap layout.
#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <type_traits>

#include "../tensor/extents.hpp"

LONGCTX_NAMESPACE_BEGIN

inline constexpr std::size_t cache_line = 64;

// Growable, uninitialised, 64-byte-aligned storage for implicit-lifetime
// types (the caller writes before it reads). grow() keeps no contents.
template <class T>
class scratch_buffer {
  static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>,
                "scratch_buffer holds trivially copyable types only");

 public:
  T* grow(index_t count) {
    if (std::size_t(count) > size_) {
      data_.reset(static_cast<T*>(::operator new(std::size_t(count) * sizeof(T), std::align_val_t{cache_line})));
      size_ = std::size_t(count);
    }
    return data_.get();
  }

 private:
  struct deleter {
    void operator()(T* p) const noexcept { ::operator delete(p, std::align_val_t{cache_line}); }
  };
  std::unique_ptr<T, deleter> data_;
  std::size_t size_ = 0;
};

namespace detail {
// Tags keep per-thread buffers apart when one thread holds several at once:
// a task running on the calling thread uses task_tag while the caller's
// buffers (packed K^T, decode partials), shared by all tasks, use caller_tag.
struct task_tag {};
struct caller_tag {};

// count elements of this thread's buffer for Tag, at least; contents are
// unspecified.
template <class Tag, class T = float>
inline T* thread_scratch(index_t count) {
  thread_local scratch_buffer<T> buf;
  return buf.grow(count);
}
}  // namespace detail

LONGCTX_NAMESPACE_END
