// longctx demo: the library's main job on built-in synthetic data, one
// section per method. `--quick` runs a few-second smoke version.
#include <cstdio>
#include <cstring>

#include <longctx/longctx.hpp>

#include "demo/dense.hpp"
#include "demo/flash.hpp"
#include "demo/infini.hpp"
#include "demo/rmt.hpp"
#include "demo/tova.hpp"

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::printf("longctx %s demo, SIMD backend: %s%s\n", longctx::version().string, longctx::default_arch::name,
              quick ? " (quick)" : "");
  demo_dense(quick);
  demo_infini(quick);
  demo_flash(quick);
  demo_rmt(quick);
  demo_tova(quick);
  return 0;
}
