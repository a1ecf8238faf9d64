// error.hpp: the exception type, messages naming function, argument and shapes.
#include <catch2/catch.hpp>

#include <longctx/error.hpp>
#include <longctx/tensor.hpp>

TEST_CASE("require: throws longctx::invalid_argument derived from std::invalid_argument", "[error]") {
  CHECK_NOTHROW(longctx::require(true, "f", "x", "never"));
  try {
    longctx::require(false, "attention", "k", "head dim ", 17, " != q head dim ", 16);
    FAIL("no throw");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()) == "longctx::attention: argument 'k': head dim 17 != q head dim 16");
  }
  CHECK_THROWS_AS(longctx::require(false, "f", "x"), longctx::invalid_argument);
  STATIC_REQUIRE(std::is_base_of_v<std::invalid_argument, longctx::invalid_argument>);
}

TEST_CASE("version", "[error]") {
  constexpr auto v = longctx::version();
  STATIC_REQUIRE(v.major == LONGCTX_VERSION_MAJOR);
  CHECK(std::string(v.string) == LONGCTX_VERSION_STRING);
}
