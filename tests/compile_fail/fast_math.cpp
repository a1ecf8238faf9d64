// Must NOT compile with -ffast-math: the headers refuse -ffinite-math-only
// with one line that names the flag and the two ways out (config.hpp);
// LONGCTX_ALLOW_FINITE_MATH accepts it (tests/compile_fail/check.cmake
// passes -ffast-math; the consumer tests build without it).
#include <longctx/config.hpp>

int main() {}
