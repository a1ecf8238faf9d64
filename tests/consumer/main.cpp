// Consumer smoke test, shared by every way of consuming longctx: if this
// compiles, links and runs, the public umbrella header is usable from outside.
#include <longctx/longctx.hpp>

#include <iostream>

int main() {
  std::cout << "longctx " << longctx::version().string << ", default arch "
            << longctx::default_arch::name << '\n';
  return 0;
}
