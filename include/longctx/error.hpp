// Errors at the API boundary: an exception derived from std::invalid_argument
// whose message names the function, the argument and the shapes involved.
// Layer 0. Kernels never throw; policies and entry points check once, O(1).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "config.hpp"

namespace longctx {
/// Thrown for bad shapes, strides, parameters or corrupt snapshots: the one
/// exception the library's checks throw. Its what() names the function,
/// the argument, the reason and the shapes, e.g.
/// `longctx::attention: argument 'k': head dim 9 != q head dim 8: q (1, 4, 5, 8), ...`.
/// Derived from std::invalid_argument. Outside the ISA-tagged namespace (its
/// code does not depend on the flags), so a catch in a translation unit
/// built with other -m flags still matches.
class invalid_argument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};
/// Thrown when the machine cannot run what was asked, although the
/// arguments are valid: an engine compiled in whose instructions the CPU
/// lacks, or an OS that refuses the AMX tile-data permission. what() names
/// the function, the cause and the way out.
class unsupported : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
}  // namespace longctx

LONGCTX_NAMESPACE_BEGIN

namespace detail {

// Streams one part; a callable part is called first, so a costly description
// (e.g. every argument's shape) is built only when a check fails.
template <class Part>
void stream_part(std::ostream& os, Part&& part) {
  if constexpr (std::is_invocable_v<Part&>)
    os << part();
  else
    os << std::forward<Part>(part);
}

template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream os;
  (stream_part(os, std::forward<Parts>(parts)), ...);
  return os.str();
}

}  // namespace detail

/// The API-boundary check: throws invalid_argument unless `ok`.
/// The rest is streamed into the message, e.g. require(q.extent(1) ==
/// k.extent(1), "attention", "k", "head dim ", k.extent(1), " != q head dim ",
/// q.extent(1)). Arguments are evaluated before the call even when ok is
/// true: pass costly parts as callables (a lambda returning the text), never
/// as built strings.
/// \param ok the condition; nothing happens when it holds
/// \param where the public function (the message begins `longctx::` where)
/// \param argument the offending parameter
/// \param parts streamed after them; a callable part is called first
/// \throws invalid_argument when `ok` is false
template <class... Parts>
void require(bool ok, const char* where, const char* argument, Parts&&... parts) {
  if (!ok) [[unlikely]] {
    throw invalid_argument(detail::concat("longctx::", where, ": argument '", argument, "': ",
                                          std::forward<Parts>(parts)...));
  }
}

LONGCTX_NAMESPACE_END
