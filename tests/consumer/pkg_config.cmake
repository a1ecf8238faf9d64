# Compiles main.cpp the way a Makefile user would:
#   c++ -std=c++20 $(pkg-config --cflags longctx) main.cpp $(pkg-config --libs longctx)
# against the .pc file installed in PREFIX, then runs it.
set(ENV{PKG_CONFIG_PATH} "${PREFIX}/${PKGCONFIG_DIR}")

function(pkg_config out_var)
  execute_process(COMMAND "${PKG_CONFIG}" ${ARGN} longctx
    OUTPUT_VARIABLE out OUTPUT_STRIP_TRAILING_WHITESPACE
    COMMAND_ERROR_IS_FATAL ANY)
  set(${out_var} "${out}" PARENT_SCOPE)
endfunction()

pkg_config(modversion --modversion)
if(NOT modversion STREQUAL VERSION)
  message(FATAL_ERROR "pkg-config --modversion longctx: '${modversion}', expected '${VERSION}'")
endif()

pkg_config(cflags --cflags)
pkg_config(libs --libs)
message(STATUS "cflags: ${cflags}")
message(STATUS "libs:   ${libs}")
string(FIND "${cflags}" "-I${PREFIX}/" pos)
if(pos EQUAL -1)
  message(FATAL_ERROR "pkg-config --cflags does not point into the install prefix ${PREFIX}")
endif()

separate_arguments(cflags UNIX_COMMAND "${cflags}")
separate_arguments(libs UNIX_COMMAND "${libs}")
get_filename_component(out_dir "${OUT}" DIRECTORY)
file(MAKE_DIRECTORY "${out_dir}")
execute_process(
  COMMAND "${CXX}" -std=c++20 ${cflags} "${MAIN}" -o "${OUT}" ${libs}
  COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND "${OUT}" COMMAND_ERROR_IS_FATAL ANY)
