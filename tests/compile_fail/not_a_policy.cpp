// Must NOT compile: a policy whose state has no snapshot() fails the
// sequence_policy check with one readable line (tests/compile_fail/check.cmake).
#include <longctx/policies/protocol.hpp>

struct not_a_policy {
  struct state_type {
    longctx::attention_dims dims() const { return {}; }
    void restore(std::span<const std::byte>) {}
    std::size_t footprint() const { return 0; }
  };
  using input_type = longctx::sequence_input;
  state_type make_state(const longctx::attention_dims&) const { return {}; }
  template <class Exec = longctx::serial_executor>
  void forward(state_type&, const input_type&, longctx::tensor4_view<float>, Exec&& = {}) const {}
};

LONGCTX_ASSERT_SEQUENCE_POLICY(not_a_policy);

int main() {}
