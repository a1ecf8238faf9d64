// Built with the native ISA flags: the exception type, views, dims and enums
// are the same types as in generic.cpp (built without flags), so catches and
// calls cross the two units. Exits non-zero on any mismatch.
#include <cstdio>
#include <vector>

#include <longctx/attention.hpp>
#include <longctx/policies/protocol.hpp>
#include <longctx/policies/kv_cache.hpp>

double generic_sum(longctx::tensor4_view<const float> t, longctx::attention_dims dims, longctx::kv_layout);
void generic_throw();
bool generic_catches(void (*f)());

static void native_throw() {
  std::vector<float> x(8);
  const auto q = longctx::from_bhnd<longctx::dynamic_extent, const float>(x.data(), 1, 1, 2, 4);
  longctx::attention(q, q, q, longctx::from_bhnd(x.data(), 1, 1, 3, 4), 1.0f);  // o too long: throws
}

int main() {
  int failures = 0;
  try {
    generic_throw();
    ++failures;
  } catch (const longctx::invalid_argument&) {  // thrown by isa_generic code, caught here
  }
  if (!generic_catches(native_throw)) ++failures;
  std::vector<float> x{1, 2, 3, 4};
  const auto t = longctx::from_bhnd<longctx::dynamic_extent, const float>(x.data(), 1, 1, 4, 1);
  if (generic_sum(t, {.b = 1, .h = 5, .h_kv = 1, .d = 1}, longctx::kv_layout::slots) != 15.0) ++failures;
  std::printf("cross_isa (%s unit with a generic one): %s\n", longctx::default_arch::name,
              failures ? "FAILED" : "exception, views, dims and enums cross");
  return failures;
}
