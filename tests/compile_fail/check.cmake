# Compiles SOURCE and passes only if the compiler rejects it with a message
# matching EXPECT (a policy that breaks the protocol fails with one line).
# FLAGS: extra compiler flags, a ;-list (optional).
# Usage: cmake -DCXX=.. -DINCLUDE_DIR=.. -DSOURCE=.. -DEXPECT=.. [-DFLAGS=..] -P check.cmake
execute_process(
  COMMAND "${CXX}" -std=c++20 -fsyntax-only ${FLAGS} "-I${INCLUDE_DIR}" "${SOURCE}"
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE out)
if(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but must not")
endif()
if(NOT out MATCHES "${EXPECT}")
  message(FATAL_ERROR "${SOURCE} failed without the expected message '${EXPECT}':\n${out}")
endif()
string(REGEX MATCH "[^\n]*${EXPECT}[^\n]*" line "${out}")
message(STATUS "rejected as expected: ${line}")
