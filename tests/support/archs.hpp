// The backends the unit tests instantiate: test::tested_archs, every
// compiled backend (longctx::compiled_archs) unless the build names fewer
// with -DLONGCTX_TEST_ARCHS=<list> (CMake cache LONGCTX_TEST_ARCHS: "all",
// or a list of scalar, avx2, avx512, neon and "default", the backend every
// entry point uses). CI uses it so that a configuration does not re-test a
// backend that another configuration built with the same flags already
// tests (tools/test-all); a name that this build does not compile is a
// compile error, never a silently empty test list.
#pragma once

#include <string_view>
#include <tuple>
#include <type_traits>

#include <longctx/simd/arch.hpp>

namespace longctx::test {

namespace archs_detail {
#if defined(LONGCTX_TEST_ARCHS)
inline constexpr std::string_view arch_list = LONGCTX_TEST_ARCHS;
#else
inline constexpr std::string_view arch_list = "all";
#endif

// Whether the comma-separated `list` holds `name` (no spaces: CMake joins it).
constexpr bool listed(std::string_view list, std::string_view name) {
  while (!list.empty()) {
    const auto comma = list.find(',');
    if (list.substr(0, comma) == name) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

template <class A>
constexpr bool tested() {
  return arch_list == "all" || listed(arch_list, A::name) ||
         (std::is_same_v<A, default_arch> && listed(arch_list, "default"));
}

template <class... A>
constexpr bool compiled(std::string_view name, std::tuple<A...>*) {
  return name == "default" || ((name == A::name) || ...);
}

// Every name in the list is a compiled backend (or "default").
constexpr bool all_compiled(std::string_view list) {
  if (list == "all") return true;
  while (true) {
    const auto comma = list.find(',');
    if (!compiled(list.substr(0, comma), static_cast<compiled_archs*>(nullptr))) return false;
    if (comma == std::string_view::npos) return true;
    list.remove_prefix(comma + 1);
  }
}
static_assert(all_compiled(arch_list),
              "LONGCTX_TEST_ARCHS names a backend this build does not compile (see the backends main.cpp prints)");

template <class Tuple>
struct filter;
template <class... A>
struct filter<std::tuple<A...>> {
  using type = decltype(std::tuple_cat(std::conditional_t<tested<A>(), std::tuple<A>, std::tuple<>>{}...));
};
}  // namespace archs_detail

/// The backends TEMPLATE_LIST_TEST_CASEs run on, scalar first.
using tested_archs = typename archs_detail::filter<compiled_archs>::type;
static_assert(std::tuple_size_v<tested_archs> > 0, "LONGCTX_TEST_ARCHS selects no backend");

}  // namespace longctx::test
