// Eigen interop, the only place the tensor layer touches Eigen: views over
// Eigen dense objects (Matrix, Map, Ref, blocks) and Eigen::Map over views.
// Both directions are zero-copy; row- and column-major Eigen objects work.
#pragma once

#include <type_traits>

#include "../config.hpp"

// Eigen's AVX-512 packet code meets the same GCC 12 false positive as ours
// (config.hpp, LONGCTX_DIAGNOSTICS_BEGIN): included here, its template
// bodies carry the silenced state wherever they are instantiated. An Eigen
// the user includes first keeps the user's own settings.
LONGCTX_DIAGNOSTICS_BEGIN
#include <Eigen/Core>
LONGCTX_DIAGNOSTICS_END

#include "view.hpp"

LONGCTX_NAMESPACE_BEGIN

namespace detail {
template <class E>
concept eigen_dense = std::is_base_of_v<Eigen::DenseBase<std::remove_cvref_t<E>>,
                                        std::remove_cvref_t<E>> &&
                      requires(E& e) {
                        e.data();
                        e.outerStride();
                        e.innerStride();
                      };

template <int Cols>
inline constexpr std::size_t to_extent = Cols == Eigen::Dynamic ? dynamic_extent
                                                                : static_cast<std::size_t>(Cols);
}  // namespace detail

// A (rows, cols) view of an Eigen dense object with direct access. Const
// objects give views of const elements. Keep the Eigen object alive.
/// A (rows, cols) matrix_view of an Eigen dense object with direct access
/// (Matrix, Map, Ref, blocks; not expressions), zero-copy, with the
/// object's strides: a column-major object gives a view whose last axis is
/// not contiguous, which the entry points reject. A fixed column count
/// becomes a static extent. O(1).
/// \param e the Eigen object; keep it alive (and unresized) while the view is used
/// \return a view of its elements, const for a const object
template <class E>
  requires detail::eigen_dense<E>
auto as_view(E& e) {
  using Plain = std::remove_cvref_t<E>;
  using Elem = std::remove_pointer_t<decltype(e.data())>;
  using View = matrix_view<Elem, detail::to_extent<Plain::ColsAtCompileTime>>;
  const index_t outer = e.outerStride(), inner = e.innerStride();
  const index_t rs = Plain::IsRowMajor ? outer : inner;
  const index_t cs = Plain::IsRowMajor ? inner : outer;
  return View(e.data(), typename View::extents_type(e.rows(), e.cols()), {rs, cs});
}

// An Eigen::Map (row-major, any strides) over a matrix view.
/// An Eigen::Map over a matrix view, zero-copy: row-major with the view's
/// strides (column-major for a single static column, the same memory
/// order), const for a view of const elements. O(1).
/// \param v the view; its memory must outlive the map
/// \return an Eigen::Map with dynamic outer and inner strides
template <class T, std::size_t Cols>
auto as_eigen(matrix_view<T, Cols> v) {
  using Scalar = std::remove_const_t<T>;
  constexpr int C = Cols == dynamic_extent ? Eigen::Dynamic : static_cast<int>(Cols);
  // A row-major 1-column Matrix is not allowed by Eigen; use column-major there
  // (identical memory order for a single column).
  constexpr int order = C == 1 ? Eigen::ColMajor : Eigen::RowMajor;
  using Mat = Eigen::Matrix<Scalar, Eigen::Dynamic, C, order>;
  using MapT = Eigen::Map<std::conditional_t<std::is_const_v<T>, const Mat, Mat>, Eigen::Unaligned,
                          Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
  const index_t outer = order == Eigen::RowMajor ? v.stride(0) : v.stride(1);
  const index_t inner = order == Eigen::RowMajor ? v.stride(1) : v.stride(0);
  return MapT(v.data(), v.extent(0), v.extent(1), Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(outer, inner));
}

LONGCTX_NAMESPACE_END
