// Non-owning strided views: a pointer, extents (static or dynamic) and one
// stride per axis. Trivially copyable, passed by value; `T` may be const.
// Aliases: vector_view (n), matrix_view (rows, cols), tensor4_view (b, h, n, d).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <limits>
#include <ostream>
#include <type_traits>

#include "extents.hpp"

LONGCTX_TYPES_BEGIN

/// A non-owning strided view: a pointer, extents (static or dynamic per
/// axis) and one stride per axis, in elements, after std::mdspan with a
/// layout_stride mapping (extent(r), stride(r), rank(), operator()).
/// Trivially copyable and passed by value; `T` may be const. Keep the
/// memory alive while the view is used. `T` -> `const T` and static ->
/// dynamic extents convert implicitly, dynamic -> static explicitly
/// (checked: invalid_argument on a mismatch).
///
/// Making a view checks only its sizes (extents: none negative); the API
/// boundary (attention(), every policy's forward()) checks each view it is
/// given: a contiguous last
/// axis (unit_inner_stride()), data behind every element (addressable(),
/// non-null unless empty) and, for outputs, no overlap with any input.
/// Element access and row()/head() assert bounds in debug builds only;
/// rows()/tokens() always check and throw.
/// \tparam T the element type (float, bf16, f16, q8, possibly const)
/// \tparam Extents an extents type (extents, dextents)
template <class T, class Extents>
class strided_view {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using extents_type = Extents;
  using index_type = typename Extents::index_type;
  using rank_type = std::size_t;
  using strides_type = std::array<index_type, Extents::rank()>;

  LONGCTX_INLINE static constexpr rank_type rank() noexcept { return Extents::rank(); }
  LONGCTX_INLINE static constexpr std::size_t static_extent(rank_type r) noexcept {
    return Extents::static_extent(r);
  }

  /// An empty view: null data, dynamic extents 0.
  constexpr strided_view() noexcept = default;

  /// Contiguous, row-major (last axis fastest).
  /// \param data the first element
  /// \param ext the extents; the strides follow from them
  LONGCTX_INLINE constexpr strided_view(T* data, const Extents& ext) noexcept : data_(data), ext_(ext) {
    index_type s = 1;
    for (rank_type r = rank(); r-- > 0;) {
      strides_[r] = s;
      s *= ext_.extent(r);
    }
  }

  /// Any strides (in elements; zero and negative allowed).
  /// \param data the element at index (0, ..., 0)
  /// \param ext the extents
  /// \param strides one per axis
  LONGCTX_INLINE constexpr strided_view(T* data, const Extents& ext, const strides_type& strides) noexcept
      : data_(data), ext_(ext), strides_(strides) {}

  // T -> const T and static -> dynamic extents are implicit; the reverse of
  // the latter is explicit and checked (see extents).
  template <class U, class OtherExtents>
    requires(std::is_convertible_v<U (*)[], T (*)[]> &&
             std::is_constructible_v<Extents, const OtherExtents&>)
  LONGCTX_INLINE constexpr explicit(!std::is_convertible_v<const OtherExtents&, Extents>)
      strided_view(const strided_view<U, OtherExtents>& other)
      : data_(other.data()), ext_(other.extents()) {
    for (rank_type r = 0; r < rank(); ++r) strides_[r] = other.stride(r);
  }

  /// \return the element at index (0, ..., 0) (null for a default view)
  LONGCTX_INLINE constexpr T* data() const noexcept { return data_; }
  /// \return the extents
  LONGCTX_INLINE constexpr const Extents& extents() const noexcept { return ext_; }
  /// \param r the axis, in [0, rank())
  /// \return the size of axis `r`
  LONGCTX_INLINE constexpr index_type extent(rank_type r) const noexcept { return ext_.extent(r); }
  /// \param r the axis, in [0, rank())
  /// \return the stride of axis `r`, in elements
  LONGCTX_INLINE constexpr index_type stride(rank_type r) const noexcept { return strides_[r]; }
  /// \return every axis's stride
  LONGCTX_INLINE constexpr const strides_type& strides() const noexcept { return strides_; }
  /// The element count; saturates at the largest index_type when the product
  /// overflows (a view the API-boundary checks reject: addressable()).
  /// \return the product of the extents
  LONGCTX_INLINE constexpr index_type size() const noexcept {
    index_type n = 1;
    for (rank_type r = 0; r < rank(); ++r)
      if (__builtin_mul_overflow(n, ext_.extent(r), &n)) return std::numeric_limits<index_type>::max();
    return n;
  }
  /// Whether the element count and every offset the view reaches (the sum
  /// of (extent - 1) |stride|) fit index_type, so no index arithmetic on it
  /// overflows. An empty view reaches nothing. O(rank).
  /// \return false also for a negative extent
  LONGCTX_INLINE constexpr bool addressable() const noexcept {
    index_type n = 1, reach = 0;
    for (rank_type r = 0; r < rank(); ++r)
      if (ext_.extent(r) < 0) return false;
    for (rank_type r = 0; r < rank(); ++r)
      if (ext_.extent(r) == 0) return true;
    for (rank_type r = 0; r < rank(); ++r) {
      index_type t = 0;
      if (strides_[r] == std::numeric_limits<index_type>::min()) return false;  // |stride| would overflow
      const index_type st = strides_[r] < 0 ? -strides_[r] : strides_[r];
      if (__builtin_mul_overflow(n, ext_.extent(r), &n) ||
          __builtin_mul_overflow(ext_.extent(r) - 1, st, &t) || __builtin_add_overflow(reach, t, &reach))
        return false;
    }
    return true;
  }
  /// \return whether some extent is 0
  LONGCTX_INLINE constexpr bool empty() const noexcept { return size() == 0; }
  /// Whether the last axis is contiguous (kernels require it; checked at the
  /// API boundary, see require_unit_inner_stride). An axis of 0 or 1
  /// elements counts as contiguous whatever its stride.
  /// \return stride(rank() - 1) == 1, or a last extent <= 1
  LONGCTX_INLINE constexpr bool unit_inner_stride() const noexcept {
    return rank() == 0 || extent(rank() - 1) <= 1 || strides_[rank() - 1] == 1;
  }

  /// Element access: data()[sum of idx[r] stride(r)]. Bounds are asserted
  /// in debug builds only.
  /// \param idx one index per axis
  /// \return the element
  template <class... I>
    requires(sizeof...(I) == Extents::rank() && (std::is_convertible_v<I, index_type> && ...))
  LONGCTX_INLINE constexpr T& operator()(I... idx) const noexcept {
    const std::array<index_type, sizeof...(I)> ix{static_cast<index_type>(idx)...};
    index_type off = 0;
    for (rank_type r = 0; r < rank(); ++r) {
      LONGCTX_ASSERT(ix[r] >= 0 && ix[r] < ext_.extent(r));
      off += ix[r] * strides_[r];
    }
    return data_[off];
  }

  // ---- Slicing (no copies). -------------------------------------------------

  /// Rows [first, first + count) of a matrix, sharing its memory.
  /// \param first the first row
  /// \param count the number of rows
  /// \return a (count, cols) view with this view's strides
  /// \throws invalid_argument when the range is outside [0, extent(0))
  LONGCTX_INLINE constexpr strided_view rows(index_type first, index_type count) const
    requires(rank() == 2)
  {
    check_range("rows", first, count, extent(0));
    return with_axis(0, first, count);
  }
  /// Tokens [first, first + count) of a (b, h, n, d) tensor, sharing its
  /// memory: how a stream is cut into forward() calls.
  /// \param first the first token
  /// \param count the number of tokens
  /// \return a (b, h, count, d) view with this view's strides
  /// \throws invalid_argument when the range is outside [0, extent(2))
  LONGCTX_INLINE constexpr strided_view tokens(index_type first, index_type count) const
    requires(rank() == 4)
  {
    check_range("tokens", first, count, extent(2));
    return with_axis(2, first, count);
  }
  /// Row `i` of a matrix (bounds asserted in debug builds only).
  /// \param i the row
  /// \return a vector view of its extent(1) elements
  LONGCTX_INLINE constexpr auto row(index_type i) const
    requires(rank() == 2)
  {
    LONGCTX_ASSERT(i >= 0 && i < extent(0));
    using E = longctx::extents<index_type, Extents::static_extent(1)>;
    return strided_view<T, E>(data_ + i * strides_[0], E(extent(1)), {strides_[1]});
  }
  /// The (n, d) matrix of batch `b`, head `h` of a (b, h, n, d) tensor
  /// (bounds asserted in debug builds only).
  /// \param b the batch index
  /// \param h the head index
  /// \return a matrix view with the tensor's static head dim, if any
  LONGCTX_INLINE constexpr auto head(index_type b, index_type h) const
    requires(rank() == 4)
  {
    LONGCTX_ASSERT(b >= 0 && b < extent(0) && h >= 0 && h < extent(1));
    using E = longctx::extents<index_type, dynamic_extent, Extents::static_extent(3)>;
    return strided_view<T, E>(data_ + b * strides_[0] + h * strides_[1], E(extent(2), extent(3)),
                              {strides_[2], strides_[3]});
  }

 private:
  LONGCTX_INLINE static void check_range(const char* what, index_type first, index_type count, index_type n) {
    require(first >= 0 && count >= 0 && first + count <= n, what, "first/count", "range [", first,
            ", ", first + count, ") is outside [0, ", n, ")");
  }
  LONGCTX_INLINE constexpr strided_view with_axis(rank_type axis, index_type first, index_type count) const {
    std::array<index_type, rank()> e{};
    for (rank_type r = 0; r < rank(); ++r) e[r] = extent(r);
    e[axis] = count;
    // An empty view may have null data (b = 0): never offset a null pointer.
    return strided_view(data_ ? data_ + first * strides_[axis] : data_, make_extents(e), strides_);
  }
  template <std::size_t... I>
  LONGCTX_INLINE static constexpr Extents make_extents_impl(const std::array<index_type, rank()>& e,
                                             std::index_sequence<I...>) {
    return Extents(e[I]...);
  }
  LONGCTX_INLINE static constexpr Extents make_extents(const std::array<index_type, rank()>& e) {
    return make_extents_impl(e, std::make_index_sequence<rank()>{});
  }

  T* data_ = nullptr;
  Extents ext_{};
  strides_type strides_{};
};

/// An (n) vector, `N` static or dynamic.
template <class T, std::size_t N = dynamic_extent>
using vector_view = strided_view<T, extents<index_t, N>>;
/// A (rows, cols) matrix with a dynamic row count and a static or dynamic
/// column count (`matrix_view<const float, 128>`).
template <class T, std::size_t Cols = dynamic_extent>
using matrix_view = strided_view<T, extents<index_t, dynamic_extent, Cols>>;
/// The attention tensor: logical axes always (b, h, n, d), whatever the
/// memory layout (from_bhnd(), from_bnhd(), or any strides), the head dim
/// `D` static or dynamic.
template <class T, std::size_t D = dynamic_extent>
using tensor4_view =
    strided_view<T, extents<index_t, dynamic_extent, dynamic_extent, dynamic_extent, D>>;

// ---- Construction from user memory. ----------------------------------------

/// A (rows, cols) row-major matrix view of user memory.
/// \param data the first element
/// \param rows the row count
/// \param cols the column count (must equal `Cols` when that is static)
/// \param ld the row stride in elements; negative (the default): cols
/// \return the view; nothing is copied
/// \throws invalid_argument when 0 <= ld < cols, a size is negative or
///   cols differs from a static `Cols`
template <std::size_t Cols = dynamic_extent, class T>
LONGCTX_INLINE constexpr matrix_view<T, Cols> make_matrix(T* data, index_t rows, index_t cols, index_t ld = -1) {
  using E = typename matrix_view<T, Cols>::extents_type;
  require(ld < 0 || ld >= cols, "make_matrix", "ld", "row stride ", ld, " < cols ", cols);
  return matrix_view<T, Cols>(data, E(rows, cols), {ld < 0 ? cols : ld, 1});
}

/// A contiguous (n) vector view of user memory.
/// \param data the first element
/// \param n the element count
/// \return the view
/// \throws invalid_argument when n is negative or differs from a static `N`
template <std::size_t N = dynamic_extent, class T>
LONGCTX_INLINE constexpr vector_view<T, N> make_vector(T* data, index_t n) {
  return vector_view<T, N>(data, typename vector_view<T, N>::extents_type(n));
}

/// A (b, h, n, d) view of contiguous memory laid out (batch, head, seq,
/// dim), the usual "BHSD" layout: strides (h n d, n d, d, 1).
/// \param data the first element
/// \param b batch
/// \param h heads
/// \param n tokens
/// \param d head dim (must equal `D` when that is static)
/// \return the view; nothing is copied
/// \throws invalid_argument when a size is negative or d differs from `D`
template <std::size_t D = dynamic_extent, class T>
LONGCTX_INLINE constexpr tensor4_view<T, D> from_bhnd(T* data, index_t b, index_t h, index_t n, index_t d) {
  using E = typename tensor4_view<T, D>::extents_type;
  return tensor4_view<T, D>(data, E(b, h, n, d), {h * n * d, n * d, d, 1});
}

/// A (b, h, n, d) view of contiguous memory laid out (batch, seq, head,
/// dim) ("BSHD", what a fused QKV projection produces): the view still has
/// logical axes (b, h, n, d), only the strides differ: (n h d, d, h d, 1).
/// Note the argument order, which follows the memory: b, n, h, d.
/// \param data the first element
/// \param b batch
/// \param n tokens
/// \param h heads
/// \param d head dim (must equal `D` when that is static)
/// \return the view; nothing is copied
/// \throws invalid_argument when a size is negative or d differs from `D`
template <std::size_t D = dynamic_extent, class T>
LONGCTX_INLINE constexpr tensor4_view<T, D> from_bnhd(T* data, index_t b, index_t n, index_t h, index_t d) {
  using E = typename tensor4_view<T, D>::extents_type;
  return tensor4_view<T, D>(data, E(b, h, n, d), {n * h * d, d, h * d, 1});
}

// A view's extents for messages, streamed as "(2, 8, 1024, 128)". A value
// (no string is built unless it is printed), so argument checks cost nothing
// on the success path.
template <std::size_t Rank>
struct shape_of_t {
  std::array<index_t, Rank> extents;
  LONGCTX_INLINE friend std::ostream& operator<<(std::ostream& os, const shape_of_t& s) {
    os << '(';
    for (std::size_t r = 0; r < Rank; ++r) os << (r ? ", " : "") << s.extents[r];
    return os << ')';
  }
};
template <class View>
LONGCTX_INLINE shape_of_t<View::rank()> shape_of(const View& v) noexcept {
  shape_of_t<View::rank()> s{};
  for (std::size_t r = 0; r < View::rank(); ++r) s.extents[r] = v.extent(r);
  return s;
}

// ---- API-boundary checks shared by kernels and policies. -------------------

template <class View>
LONGCTX_INLINE void require_unit_inner_stride(const View& v, const char* where, const char* argument) {
  // The usual way to get here is as_view() of Eigen's default, column-major
  // matrix (tensor/eigen.hpp), so the message says how to fix that.
  require(v.unit_inner_stride(), where, argument, "the last axis must be contiguous (stride 1), got stride ",
          v.stride(View::rank() - 1), " in shape ", shape_of(v),
          "; a column-major matrix (Eigen's default) gives such a view: store it row-major "
          "(Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>) or copy it into one");
}

template <class View>
LONGCTX_INLINE void require_data(const View& v, const char* where, const char* argument) {
  require(v.addressable(), where, argument, "extents ", shape_of(v),
          " overflow the index type (element count or largest offset)");
  require(v.data() != nullptr || v.empty(), where, argument, "null data with ", v.size(),
          " elements");
}

// The bytes [first, last) a view's elements span; empty views span none.
// For views that passed require_data (addressable).
template <class View>
LONGCTX_INLINE std::pair<std::uintptr_t, std::uintptr_t> byte_span(const View& v) noexcept {
  if (v.empty() || v.data() == nullptr) return {0, 0};
  index_t lo = 0, hi = 0;
  for (std::size_t r = 0; r < View::rank(); ++r) {
    const index_t reach = (v.extent(r) - 1) * v.stride(r);
    (reach < 0 ? lo : hi) += reach;
  }
  using E = std::remove_cv_t<typename View::element_type>;
  const auto base = reinterpret_cast<std::uintptr_t>(v.data());
  return {base + std::uintptr_t(lo) * sizeof(E), base + std::uintptr_t(hi + 1) * sizeof(E)};
}

// An output may not share memory with an input (the kernels read inputs
// after writing outputs, so aliasing would give silently wrong results):
// its byte span must not intersect theirs. Conservative for interleaved
// strided views, which are rejected too.
// require_disjoint(where, "o", o, "q", q, "k", k, ...).
template <class Out>
LONGCTX_INLINE void require_disjoint(const char*, const char*, const Out&) noexcept {}
template <class Out, class In, class... Rest>
LONGCTX_INLINE void require_disjoint(const char* where, const char* out_name, const Out& out, const char* in_name,
                                     const In& in, const Rest&... rest) {
  const auto [a0, a1] = byte_span(out);
  const auto [b0, b1] = byte_span(in);
  require(a0 == a1 || b0 == b1 || a1 <= b0 || b1 <= a0, where, out_name, "shares memory with '", in_name,
          "': an output may not alias an input");
  require_disjoint(where, out_name, out, rest...);
}

// Every view a kernel reads or writes, named: a contiguous last axis and
// data behind its elements. require_views(where, "q", q, "k", k, ...).
LONGCTX_INLINE void require_views(const char*) noexcept {}
template <class View, class... Rest>
LONGCTX_INLINE void require_views(const char* where, const char* argument, const View& v, const Rest&... rest) {
  require_unit_inner_stride(v, where, argument);
  require_data(v, where, argument);
  require_views(where, rest...);
}

LONGCTX_TYPES_END
