# Compile flags for longctx's own tests, benchmarks and examples.
# Never applied to the longctx library target: a header-only library must not
# impose -m flags or warnings on its consumers.

# NEON is baseline on aarch64, and x86 -m flags mean nothing there.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
  set(LONGCTX_TARGET_IS_AARCH64 TRUE)
else()
  set(LONGCTX_TARGET_IS_AARCH64 FALSE)
endif()

function(longctx_isa_flags out_var)
  set(flags "")
  if(NOT LONGCTX_TARGET_IS_AARCH64)
    if(LONGCTX_ISA STREQUAL "native")
      set(flags -march=native)
    elseif(LONGCTX_ISA STREQUAL "avx2")
      set(flags -mavx2 -mfma -mf16c)
    elseif(LONGCTX_ISA STREQUAL "avx512")
      set(flags -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma -mf16c)
    elseif(LONGCTX_ISA STREQUAL "amx")
      # AVX-512 plus both 16-bit engines (kernels/compute.hpp): compiles the
      # AMX engine on any x86-64 machine.
      set(flags -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma -mf16c -mavx512bf16 -mamx-tile -mamx-bf16)
    endif()
  endif()
  set(${out_var} ${flags} PARENT_SCOPE)
endfunction()

function(longctx_configure_target target)
  # -std=c++20, not gnu++20: what consumers without GNU extensions will see.
  set_target_properties(${target} PROPERTIES CXX_EXTENSIONS OFF)

  longctx_isa_flags(isa)
  target_compile_options(${target} PRIVATE ${isa})
  # The amx flags must give the AMX engine (LONGCTX_HAS_AMX): a static
  # assertion in tests/kernels/engines.cpp (clang spells the AMX macros
  # differently from GCC, and the engine once went uncompiled unnoticed).
  if(LONGCTX_ISA STREQUAL "amx" AND NOT LONGCTX_TARGET_IS_AARCH64 AND CMAKE_SYSTEM_NAME STREQUAL "Linux")
    target_compile_definitions(${target} PRIVATE LONGCTX_EXPECT_AMX=1)
  endif()

  # Eigen, Catch2 and benchmark come in through imported targets, whose
  # include directories CMake passes as -isystem, so these warnings only
  # report our own code.
  # GCC 12's AVX-512 false positives (PR 105593) are silenced inside the
  # headers (config.hpp, LONGCTX_DIAGNOSTICS_BEGIN), as for any consumer.
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)

  if(LONGCTX_SANITIZE)
    # float-divide-by-zero is not part of "undefined"; a NaN/Inf leaking out
    # of a kernel by 0/0 is exactly the bug we want to catch. Nor, in GCC, is
    # float-cast-overflow (clang's "undefined" has it): the scalar exp cast
    # a NaN to int, which only the clang fuzzers saw.
    set(san -fsanitize=${LONGCTX_SANITIZE},float-divide-by-zero,float-cast-overflow
            -fno-sanitize-recover=all -fno-omit-frame-pointer)
    # Checks left out (the asan preset leaves out pointer-overflow: most of
    # UBSan's compile time; tests/policies/protocol.cpp at -O1 took 243 s
    # with ASan + UBSan, 178 s without that one check, 165 s with ASan alone).
    if(LONGCTX_SANITIZE_EXCLUDE)
      list(APPEND san -fno-sanitize=${LONGCTX_SANITIZE_EXCLUDE})
    endif()
    target_compile_options(${target} PRIVATE ${san})
    target_link_options(${target} PRIVATE ${san})
    # GCC 12's -Wmaybe-uninitialized misfires on instrumented code (std::regex
    # inside catch.hpp at -O1); optimised configurations keep the warning.
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      target_compile_options(${target} PRIVATE -Wno-maybe-uninitialized)
    endif()
  endif()
endfunction()
