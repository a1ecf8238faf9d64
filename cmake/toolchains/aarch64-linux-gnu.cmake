# Cross-compile for 64-bit Arm Linux with Debian's g++-aarch64-linux-gnu and
# run the results under qemu-user-static (NEON backend tests on an x86 host):
#   cmake --preset aarch64   (or -DCMAKE_TOOLCHAIN_FILE=<this file>)
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# No binfmt handler is assumed, so name the emulator; -L points the dynamic
# loader at the cross sysroot's libc/libstdc++.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static -L /usr/aarch64-linux-gnu)

# Libraries and headers come from the cross sysroot; programs run on the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
# Eigen3 and Catch2 are header-only, so the host's packages (and their CMake
# configs under /usr/share and /usr/lib/cmake) are valid for the target too.
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
