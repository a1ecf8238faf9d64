# Checks that each public header of one layer compiles as the only include of
# a file (g++ -fsyntax-only, no ISA flags): no header relies on another one
# having been included before it.
# Usage: cmake -DCXX=.. -DINCLUDE_DIR=.. -DEIGEN_INCLUDE_DIR=.. -DLAYER=<dir|top> -P headers.cmake
if(LAYER STREQUAL "top")
  file(GLOB headers RELATIVE "${INCLUDE_DIR}" "${INCLUDE_DIR}/longctx/*.hpp")
else()
  file(GLOB_RECURSE headers RELATIVE "${INCLUDE_DIR}" "${INCLUDE_DIR}/longctx/${LAYER}/*.hpp")
endif()
# ISA backends are included by simd.hpp only when the flags provide the ISA.
list(FILTER headers EXCLUDE REGEX "^longctx/simd/backend_")

set(source "${CMAKE_CURRENT_BINARY_DIR}/longctx_header_check_${LAYER}.cpp")
set(failed "")
foreach(header IN LISTS headers)
  file(WRITE "${source}" "#include <${header}>\n")
  execute_process(
    COMMAND "${CXX}" -std=c++20 -fsyntax-only "-I${INCLUDE_DIR}" -isystem "${EIGEN_INCLUDE_DIR}"
      "${source}"
    RESULT_VARIABLE rc
    OUTPUT_VARIABLE out
    ERROR_VARIABLE out)
  if(rc EQUAL 0)
    message(STATUS "ok      ${header}")
  else()
    message(STATUS "FAILED  ${header}\n${out}")
    list(APPEND failed "${header}")
  endif()
endforeach()
file(REMOVE "${source}")

list(LENGTH headers n)
if(failed)
  list(JOIN failed "\n  " failed)
  message(FATAL_ERROR "headers that do not compile on their own:\n  ${failed}")
endif()
message(STATUS "${n} headers compile on their own")
