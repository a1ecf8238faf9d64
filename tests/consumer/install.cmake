# ctest fixture: a clean `cmake --install` of the build tree into PREFIX,
# then a check that the files consumers rely on are there.
# Usage: cmake -DBUILD_DIR=.. -DPREFIX=.. -DCMAKE_DIR=.. -DPKGCONFIG_DIR=.. -DINCLUDE_DIR=.. -P install.cmake
file(REMOVE_RECURSE "${PREFIX}")
execute_process(
  COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}"
  COMMAND_ERROR_IS_FATAL ANY)

foreach(f
    "${INCLUDE_DIR}/longctx/longctx.hpp"
    "${CMAKE_DIR}/longctxConfig.cmake"
    "${CMAKE_DIR}/longctxConfigVersion.cmake"
    "${CMAKE_DIR}/longctxTargets.cmake"
    "${PKGCONFIG_DIR}/longctx.pc")
  if(NOT EXISTS "${PREFIX}/${f}")
    message(FATAL_ERROR "install is missing ${f}")
  endif()
endforeach()
