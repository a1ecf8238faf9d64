// Catch2 runner: prints the compiled backends and the test scale first, so a
// log says what was tested.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <tuple>

#include "support.hpp"

namespace {
template <class... A>
void print_archs(std::tuple<A...>*) {
  ((std::printf(" %s", A::name)), ...);
}
}  // namespace

int main(int argc, char* argv[]) {
  std::printf("longctx %s tests; backends:", longctx::version().string);
  print_archs(static_cast<longctx::compiled_archs*>(nullptr));
  std::printf("; default %s; LONGCTX_TEST_SCALE %.3g\n", longctx::default_arch::name,
              longctx::test::scale());
  return Catch::Session().run(argc, argv);
}
