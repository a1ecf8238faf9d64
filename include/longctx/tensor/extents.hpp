// Shape vocabulary after std::mdspan (C++23, not in libstdc++ 12): extents with
// a mix of static and dynamic sizes, so a later switch to std:: is mechanical.
#pragma once

#include <array>
#include <cstddef>
#include <limits>
#include <type_traits>

#include "../error.hpp"

LONGCTX_TYPES_BEGIN

/// The index and size type of every view and shape: signed (std::ptrdiff_t).
using index_t = std::ptrdiff_t;
/// An extent known only at run time (as std::dynamic_extent).
inline constexpr std::size_t dynamic_extent = std::numeric_limits<std::size_t>::max();

/// The sizes of a view's axes, each static (a template argument) or
/// dynamic (dynamic_extent, stored), after std::extents: rank(),
/// rank_dynamic(), static_extent(r), extent(r). Constructed from the
/// dynamic sizes only or from all of them; a negative size or a mismatched
/// static one throws invalid_argument. Static -> dynamic converts
/// implicitly, dynamic -> static explicitly and checked.
template <class IndexType, std::size_t... Exts>
class extents {
 public:
  using index_type = IndexType;
  using rank_type = std::size_t;

  LONGCTX_INLINE static constexpr rank_type rank() noexcept { return sizeof...(Exts); }
  LONGCTX_INLINE static constexpr rank_type rank_dynamic() noexcept {
    return ((Exts == dynamic_extent ? 1 : 0) + ... + 0);
  }
  LONGCTX_INLINE static constexpr std::size_t static_extent(rank_type r) noexcept { return statics_[r]; }

  constexpr extents() noexcept = default;

  // Either the dynamic extents only, or all extents (static ones must match).
  template <class... Sizes>
    requires(sizeof...(Sizes) > 0 &&
             (sizeof...(Sizes) == rank_dynamic() || sizeof...(Sizes) == rank()) &&
             (std::is_convertible_v<Sizes, index_type> && ...))
  LONGCTX_INLINE constexpr explicit extents(Sizes... sizes) {
    const std::array<index_type, sizeof...(Sizes)> in{static_cast<index_type>(sizes)...};
    for (std::size_t k = 0; k < in.size(); ++k)
      require(in[k] >= 0, "extents", "sizes", "size ", k, " is negative (", in[k], ")");
    if constexpr (sizeof...(Sizes) == rank_dynamic() && rank_dynamic() != rank()) {
      for (rank_type r = 0, k = 0; r < rank(); ++r)
        if (statics_[r] == dynamic_extent) ext_[r] = in[k++];
    } else {
      for (rank_type r = 0; r < rank(); ++r) {
        if (statics_[r] == dynamic_extent) {
          ext_[r] = in[r];
        } else {
          require(static_cast<std::size_t>(in[r]) == statics_[r], "extents", "sizes", "extent ", r,
                  " is ", in[r], " but the static extent is ", statics_[r]);
        }
      }
    }
  }

  // Static -> dynamic is implicit; dynamic -> static is explicit and checked.
  template <class OtherIndex, std::size_t... Other>
    requires(sizeof...(Other) == sizeof...(Exts) &&
             ((Exts == dynamic_extent || Other == dynamic_extent || Exts == Other) && ...))
  LONGCTX_INLINE constexpr explicit(((Exts != dynamic_extent && Other == dynamic_extent) || ...))
      extents(const extents<OtherIndex, Other...>& other) {
    for (rank_type r = 0; r < rank(); ++r) {
      const auto v = static_cast<index_type>(other.extent(r));
      if (statics_[r] == dynamic_extent) {
        ext_[r] = v;
      } else {
        require(static_cast<std::size_t>(v) == statics_[r], "extents", "other", "extent ", r,
                " is ", v, " but the static extent is ", statics_[r]);
      }
    }
  }

  LONGCTX_INLINE constexpr index_type extent(rank_type r) const noexcept { return ext_[r]; }

  LONGCTX_INLINE friend constexpr bool operator==(const extents& a, const extents& b) noexcept {
    for (rank_type r = 0; r < rank(); ++r)
      if (a.extent(r) != b.extent(r)) return false;
    return true;
  }

 private:
  static constexpr std::array<std::size_t, sizeof...(Exts)> statics_{Exts...};
  // Every extent, the static ones included (their values fixed here): one
  // load per extent(), no index arithmetic for the dynamic ones.
  std::array<index_type, sizeof...(Exts)> ext_{static_cast<index_type>(Exts == dynamic_extent ? 0 : Exts)...};
};

namespace extents_detail {
template <class IndexType, class Seq>
struct dextents_impl;
template <class IndexType, std::size_t... I>
struct dextents_impl<IndexType, std::index_sequence<I...>> {
  using type = extents<IndexType, ((void)I, dynamic_extent)...>;
};
}  // namespace extents_detail

/// extents of `Rank` dynamic axes, as std::dextents.
template <class IndexType, std::size_t Rank>
using dextents = typename extents_detail::dextents_impl<IndexType, std::make_index_sequence<Rank>>::type;

LONGCTX_TYPES_END
