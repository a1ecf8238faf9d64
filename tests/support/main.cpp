// Catch2 runner: prints the compiled backends, those the tests instantiate
// (LONGCTX_TEST_ARCHS) and the test scale first, so a log says what was tested.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>
#include <tuple>
#include <vector>

#include <longctx/kernels/amx_tiles.hpp>
#include <longctx/kernels/compute.hpp>

#include "support.hpp"

namespace {
template <class... A>
void print_archs(std::tuple<A...>*) {
  ((std::printf(" %s", A::name)), ...);
}
}  // namespace

// --require-cpu amx_bf16 | avx512_bf16: exit 77 (ctest: skipped) unless
// the build compiled that engine and the CPU has its instructions. The
// hardware engines' tests run behind it (tests/CMakeLists.txt).
int skip_unless(const char* what) {
  bool compiled = false, present = false;
  if (std::strcmp(what, "amx_bf16") == 0) {
    compiled = LONGCTX_HAS_AMX, present = longctx::cpu_has_amx_bf16();
  } else if (std::strcmp(what, "avx512_bf16") == 0) {
    compiled = LONGCTX_HAS_AVX512_BF16, present = longctx::cpu_has_avx512_bf16();
  } else {
    std::fprintf(stderr, "--require-cpu: unknown feature '%s' (amx_bf16, avx512_bf16)\n", what);
    return 2;
  }
  if (!compiled) {
    std::printf("SKIPPED: this build has no %s engine (its flags lack %s; preset amx compiles both)\n", what,
                std::strcmp(what, "amx_bf16") == 0 ? "-mamx-tile -mamx-bf16 -mavx512bf16" : "-mavx512bf16");
    return 77;
  }
  if (!present) {
    std::printf("SKIPPED: this CPU lacks %s (not in CPUID), so its engine's tests cannot run here\n", what);
    return 77;
  }
  return 0;
}

int main(int argc, char* argv[]) {
  std::vector<char*> args(argv, argv + argc);
  for (std::size_t i = 1; i + 1 < args.size(); ++i)
    if (std::strcmp(args[i], "--require-cpu") == 0) {
      if (const int rc = skip_unless(args[i + 1])) return rc;
      args.erase(args.begin() + std::ptrdiff_t(i), args.begin() + std::ptrdiff_t(i) + 2);
      break;
    }
  argc = int(args.size());
  argv = args.data();
  std::printf("longctx %s tests; backends:", longctx::version().string);
  print_archs(static_cast<longctx::compiled_archs*>(nullptr));
  std::printf("; tested:");
  print_archs(static_cast<longctx::test::tested_archs*>(nullptr));
  std::printf("; default %s; bf16 compute on %s%s; LONGCTX_TEST_SCALE %.3g\n",
              longctx::default_arch::name, longctx::active_engine(longctx::compute_precision::bf16),
              LONGCTX_HAS_AVX512_BF16 && !LONGCTX_HAS_AMX && !LONGCTX_BF16_DOT_PAYS
                  ? " (LONGCTX_BF16_DOT_PAYS=0: avx512-bf16 compiled, tested by name)"
                  : "",
              longctx::test::scale());
  return Catch::Session().run(argc, argv);
}
