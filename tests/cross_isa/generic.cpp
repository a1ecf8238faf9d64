// Built WITHOUT ISA flags (longctx::isa_generic): throws and reads views that
// cross into a unit built with -march=native (native.cpp).
#include <longctx/attention.hpp>
#include <longctx/policies/kv_cache.hpp>
#include <longctx/policies/protocol.hpp>

double generic_sum(longctx::tensor4_view<const float> t, longctx::attention_dims dims, longctx::kv_layout) {
  double s = 0;
  for (longctx::index_t i = 0; i < t.extent(2); ++i) s += t(0, 0, i, 0);
  return s + double(dims.h);
}

void generic_throw() {
  std::vector<float> x(8);
  const auto q = longctx::from_bhnd<longctx::dynamic_extent, const float>(x.data(), 1, 1, 2, 4);
  const auto o = longctx::from_bhnd(x.data(), 1, 1, 2, 4);
  longctx::attention(q, q, q, o, std::numeric_limits<float>::infinity());  // bad scale: throws
}

bool generic_catches(void (*f)()) {
  try {
    f();
  } catch (const longctx::invalid_argument&) {
    return true;
  } catch (...) {
  }
  return false;
}
