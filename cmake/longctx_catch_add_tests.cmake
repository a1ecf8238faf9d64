# Post-build step of longctx_catch_discover_tests() (see longctx_catch.cmake):
# lists the Catch2 test cases of TEST_EXECUTABLE and writes CTEST_FILE with one
# add_test() per case.
# Inputs: TEST_EXECUTABLE, TEST_EMULATOR (list, may be empty),
# TEST_WORKING_DIR, TEST_ENVIRONMENT (list of VAR=value), TEST_TIMEOUT, CTEST_FILE.

# A bracket argument that holds `text` verbatim (';', '[', '"', '\' included).
function(bracket out_var text)
  set(eq "=")
  while(text MATCHES "]${eq}]")
    string(APPEND eq "=")
  endwhile()
  set(${out_var} "[${eq}[${text}]${eq}]" PARENT_SCOPE)
endfunction()

execute_process(
  COMMAND ${TEST_EMULATOR} "${TEST_EXECUTABLE}" --list-test-names-only -v high
  OUTPUT_VARIABLE output
  ERROR_VARIABLE errors
  RESULT_VARIABLE result
  WORKING_DIRECTORY "${TEST_WORKING_DIR}")
# Catch returns the number of tests listed; only a crash or a failure to
# start gives a non-number.
if(NOT result MATCHES "^[0-9]+$")
  message(FATAL_ERROR "listing the tests of ${TEST_EXECUTABLE} failed (${result}):\n${output}\n${errors}")
endif()

set(runner "")
foreach(word IN LISTS TEST_EMULATOR ITEMS "${TEST_EXECUTABLE}")
  bracket(word "${word}")
  string(APPEND runner " ${word}")
endforeach()
bracket(dir "${TEST_WORKING_DIR}")
set(properties "WORKING_DIRECTORY ${dir}")
if(TEST_ENVIRONMENT)
  bracket(env "${TEST_ENVIRONMENT}")
  string(APPEND properties " ENVIRONMENT ${env}")
endif()
if(TEST_TIMEOUT)
  string(APPEND properties " TIMEOUT ${TEST_TIMEOUT}")
endif()

# Split on newlines only (CMake list splitting would break names on ';' and
# join lines across an unbalanced '['). Real names end in "\t@file:line".
set(script "")
set(count 0)
string(REPLACE "\r" "" output "${output}")
while(NOT output STREQUAL "")
  string(FIND "${output}" "\n" nl)
  if(nl EQUAL -1)
    set(line "${output}")
    set(output "")
  else()
    string(SUBSTRING "${output}" 0 ${nl} line)
    math(EXPR next "${nl} + 1")
    string(SUBSTRING "${output}" ${next} -1 output)
  endif()
  string(FIND "${line}" "\t@" at REVERSE)
  if(at EQUAL -1)
    continue()  # not a test name: whatever else the runner printed
  endif()
  string(SUBSTRING "${line}" 0 ${at} listed)
  # Catch quotes names that start with '#'; the quoted form is also a valid
  # filter, but the ctest name drops the quotes.
  set(name "${listed}")
  if(name MATCHES "^\"(.*)\"$")
    set(name "${CMAKE_MATCH_1}")
  endif()
  # In a Catch test spec ',' separates, '[' ']' delimit tags and '\' escapes.
  string(REPLACE "\\" "\\\\" filter "${listed}")
  string(REPLACE "," "\\," filter "${filter}")
  string(REPLACE "[" "\\[" filter "${filter}")
  string(REPLACE "]" "\\]" filter "${filter}")

  bracket(name "${name}")
  bracket(filter "${filter}")
  string(APPEND script "add_test(${name}${runner} ${filter} --warn NoTests)\n")
  string(APPEND script "set_tests_properties(${name} PROPERTIES ${properties})\n")
  math(EXPR count "${count} + 1")
endwhile()

if(count EQUAL 0)
  message(WARNING "${TEST_EXECUTABLE} lists no test cases")
endif()
file(WRITE "${CTEST_FILE}" "${script}")
