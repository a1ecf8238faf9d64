# longctx_catch_discover_tests(target ENVIRONMENT <var=value>... TIMEOUT <s>)
#
# One ctest per Catch2 (v2) test case, like catch_discover_tests() from
# Catch2's Catch.cmake, which this replaces because that one
#   - takes every stdout line of `--list-test-names-only` as a test name, so a
#     runner that prints a banner first gets bogus tests, and
#   - splits names on ';' and merges lines across an unbalanced '[' (CMake
#     list rules), so such names become tests that match nothing.
# Here the listing is asked for with `-v high`, which suffixes every real name
# with "\t@file:line", the output is split on newlines only, and the ctest
# file is written with bracket arguments, so a name reaches Catch verbatim.
#
# Discovery runs after each link (through CMAKE_CROSSCOMPILING_EMULATOR when
# cross-compiling). Each test runs with --warn NoTests: Catch2 v2 exits 0 when
# a filter matches nothing, which would let a broken name pass unrun.

set(LONGCTX_CATCH_ADD_TESTS_SCRIPT "${CMAKE_CURRENT_LIST_DIR}/longctx_catch_add_tests.cmake")

function(longctx_catch_discover_tests target)
  cmake_parse_arguments(arg "" "TIMEOUT" "ENVIRONMENT" ${ARGN})
  set(tests_file "${CMAKE_CURRENT_BINARY_DIR}/${target}_tests.cmake")
  set(include_file "${CMAKE_CURRENT_BINARY_DIR}/${target}_include.cmake")
  get_property(emulator TARGET ${target} PROPERTY CROSSCOMPILING_EMULATOR)

  add_custom_command(TARGET ${target} POST_BUILD
    BYPRODUCTS "${tests_file}"
    COMMAND "${CMAKE_COMMAND}"
      "-DTEST_EXECUTABLE=$<TARGET_FILE:${target}>"
      "-DTEST_EMULATOR=${emulator}"
      "-DTEST_WORKING_DIR=${CMAKE_CURRENT_BINARY_DIR}"
      "-DTEST_ENVIRONMENT=${arg_ENVIRONMENT}"
      "-DTEST_TIMEOUT=${arg_TIMEOUT}"
      "-DCTEST_FILE=${tests_file}"
      -P "${LONGCTX_CATCH_ADD_TESTS_SCRIPT}"
    VERBATIM)

  file(WRITE "${include_file}"
    "if(EXISTS \"${tests_file}\")\n"
    "  include(\"${tests_file}\")\n"
    "else()\n"
    "  add_test(${target}_NOT_BUILT ${target}_NOT_BUILT)\n"
    "endif()\n")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${include_file}")
endfunction()
