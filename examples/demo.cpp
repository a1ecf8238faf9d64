// longctx demo: the library's main job on built-in synthetic data, one
// section per method. `--quick` runs a few-second smoke version.
#include <cstdio>
#include <cstring>
#include <initializer_list>

#include <longctx/longctx.hpp>

#include "demo/dense.hpp"
#include "demo/flash.hpp"
#include "demo/infini.hpp"
#include "demo/rmt.hpp"
#include "demo/tova.hpp"

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::printf("longctx %s demo%s\n", longctx::version().string, quick ? " (quick)" : "");
  std::printf("backend: %s (fixed at compile time by -march/-m flags or LONGCTX_FORCE_ARCH)\n",
              longctx::default_arch::name);
  // Flushed after each section, so that a pipe (| tee) shows them as they finish.
  for (void (*section)(bool) : {demo_dense, demo_infini, demo_flash, demo_rmt, demo_tova}) {
    section(quick);
    std::fflush(stdout);
  }
  return 0;
}
