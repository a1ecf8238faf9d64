# Checks that each public header of one layer compiles as the only include of
# a file (syntax only, no ISA flags): no header relies on another one having
# been included before it, none leaks a warning into the consumer's code
# (-Wall -Wextra -Wpedantic -Wshadow -Werror, the header found through -I as
# with add_subdirectory, not -isystem), and every header outside the
# Eigen layer compiles without Eigen on the include path.
# Usage: cmake -DCXX=.. -DINCLUDE_DIR=.. -DEIGEN_INCLUDE_DIR=.. -DLAYER=<dir|top> -P headers.cmake
if(LAYER STREQUAL "top")
  file(GLOB headers RELATIVE "${INCLUDE_DIR}" "${INCLUDE_DIR}/longctx/*.hpp")
else()
  file(GLOB_RECURSE headers RELATIVE "${INCLUDE_DIR}" "${INCLUDE_DIR}/longctx/${LAYER}/*.hpp")
endif()
# ISA backends are included by simd.hpp only when the flags provide the ISA.
list(FILTER headers EXCLUDE REGEX "^longctx/simd/backend_")

# The headers that may need Eigen: the model drivers, the Eigen interop and
# the double-precision oracles (reference/flash.hpp checks the GAU layer).
set(eigen_layer "^longctx/(models|models\\.hpp|tensor/eigen\\.hpp|reference)")

set(source "${CMAKE_CURRENT_BINARY_DIR}/longctx_header_check_${LAYER}.cpp")
set(failed "")
foreach(header IN LISTS headers)
  file(WRITE "${source}" "#include <${header}>\n")
  if(header MATCHES "${eigen_layer}")
    set(eigen -isystem "${EIGEN_INCLUDE_DIR}")
    set(label "")
  else()
    set(eigen "")
    set(label " (without Eigen)")
  endif()
  execute_process(
    # Scalar chosen knowingly: the no-flags notice (simd/arch.hpp) is a
    # warning under clang, and this checks the headers, not the flags.
    COMMAND "${CXX}" -std=c++20 -fsyntax-only -Wall -Wextra -Wpedantic -Wshadow -Werror -DLONGCTX_FORCE_ARCH=scalar
      "-I${INCLUDE_DIR}" ${eigen} "${source}"
    RESULT_VARIABLE rc
    OUTPUT_VARIABLE out
    ERROR_VARIABLE out)
  if(rc EQUAL 0)
    message(STATUS "ok      ${header}${label}")
  else()
    message(STATUS "FAILED  ${header}${label}\n${out}")
    list(APPEND failed "${header}")
  endif()
endforeach()
file(REMOVE "${source}")

list(LENGTH headers n)
if(failed)
  list(JOIN failed "\n  " failed)
  message(FATAL_ERROR "headers that do not compile on their own without warnings:\n  ${failed}")
endif()
message(STATUS "${n} headers compile on their own without warnings")
