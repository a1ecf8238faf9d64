// bf16 / f16 conversions: the scalar ones (tensor/storage_types.hpp) against
// an independent round-to-nearest-even by bracketing in double, and every
// backend's vector loads and stores (simd/convert.hpp) against the scalar
// ones bit for bit, over all 65,536 patterns (loads) and every pattern's
// neighbourhood, its ties and the specials (stores).
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <longctx/kernels/kv_storage.hpp>
#include <longctx/simd/convert.hpp>

#include "../support/support.hpp"

using namespace longctx;

namespace {

template <class T>
struct format;  // what the oracle needs: the largest finite pattern, inf's value for rounding
template <>
struct format<bf16> {
  static constexpr std::uint16_t max_finite = 0x7f7f, inf = 0x7f80;
  static constexpr double inf_value = 0x1p128;  // one ulp above the largest finite
};
template <>
struct format<f16> {
  static constexpr std::uint16_t max_finite = 0x7bff, inf = 0x7c00;
  static constexpr double inf_value = 65536.0;
};

template <class T>
double value_of(std::uint16_t b) {
  return b == format<T>::inf ? format<T>::inf_value : double(T::from_bits(b).to_float());
}

// Round to nearest, ties to the even pattern, by bracketing |x| between two
// consecutive non-negative patterns (monotonic in value) in double.
template <class T>
std::uint16_t reference_round(float x) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(x);
  const std::uint16_t sign = std::uint16_t((u >> 16) & 0x8000u);
  const double a = std::abs(double(x));
  if (std::isinf(x)) return std::uint16_t(sign | format<T>::inf);
  std::uint16_t lo = 0, hi = format<T>::inf;  // value_of(lo) <= a < value_of(hi), or a beyond
  if (a >= value_of<T>(hi)) return std::uint16_t(sign | format<T>::inf);
  while (hi - lo > 1) {
    const std::uint16_t mid = std::uint16_t((lo + hi) / 2);
    (value_of<T>(mid) <= a ? lo : hi) = mid;
  }
  const double dl = a - value_of<T>(lo), dh = value_of<T>(hi) - a;
  const std::uint16_t r = dl < dh ? lo : dh < dl ? hi : (lo % 2 == 0 ? lo : hi);
  return std::uint16_t(sign | r);
}

std::uint32_t bits(float x) { return std::bit_cast<std::uint32_t>(x); }

// Floats that probe every rounding decision: each pattern's value, the
// exact midpoint to its successor and the floats either side of both, the
// specials, the f16 subnormal range, random bit patterns.
template <class T>
std::vector<float> probe_floats() {
  std::vector<float> xs;
  for (std::uint32_t b = 0; b <= format<T>::max_finite; ++b) {
    const double v = value_of<T>(std::uint16_t(b)), next = value_of<T>(std::uint16_t(b + 1));
    const float mid = float((v + next) / 2);  // exact in float: a 16-bit format's midpoint has few bits
    for (float y : {float(v), mid})
      for (float z : {y, std::nextafter(y, 0.0f), std::nextafter(y, std::numeric_limits<float>::infinity())})
        xs.push_back(z), xs.push_back(-z);
  }
  const float inf = std::numeric_limits<float>::infinity();
  for (float s : {inf, -inf, std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min(),
                  std::numeric_limits<float>::min(), 65504.0f, 65519.99f, 65520.0f, 1e-8f, 2.98e-8f, 2.99e-8f})
    xs.push_back(s), xs.push_back(-s);
  test::rng_t g(test::seed_for(300, 0));
  for (int i = 0; i < 200000; ++i) {
    const float x = std::bit_cast<float>(std::uint32_t(g()));
    if (!std::isnan(x)) xs.push_back(x);
  }
  return xs;
}

// Quiet and signalling NaNs of every payload shape, both signs.
std::vector<float> nan_floats() {
  std::vector<float> xs;
  for (std::uint32_t m : {0x400000u, 0x000001u, 0x001fffu, 0x002000u, 0x3fffffu, 0x7fffffu, 0x200000u, 0x10000u})
    for (std::uint32_t s : {0u, 0x80000000u}) xs.push_back(std::bit_cast<float>(s | 0x7f800000u | m));
  return xs;
}

}  // namespace

TEMPLATE_TEST_CASE("storage types: scalar float to bf16/f16 rounds to nearest even, exactly", "[simd][convert]", bf16,
                   f16) {
  using T = TestType;
  for (float x : probe_floats<T>()) {
    INFO("x " << x << " bits " << std::hex << bits(x));
    REQUIRE(T::from_float(x).bits == reference_round<T>(x));
  }
  // Every finite pattern round-trips; NaNs stay NaN with their sign.
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const T t = T::from_bits(std::uint16_t(b));
    const float f = t.to_float();
    INFO("pattern " << std::hex << b);
    if (std::isnan(f)) {
      REQUIRE(std::isnan(T::from_float(f).to_float()));
      REQUIRE(std::signbit(T::from_float(f).to_float()) == std::signbit(f));
    } else {
      REQUIRE(T::from_float(f).bits == b);
    }
  }
  for (float x : nan_floats()) REQUIRE(std::isnan(T::from_float(x).to_float()));
}

TEST_CASE("storage types: f16 to float is exact, subnormals included", "[simd][convert]") {
  REQUIRE(f16::from_bits(0x0001).to_float() == std::ldexp(1.0f, -24));
  REQUIRE(f16::from_bits(0x03ff).to_float() == 1023 * std::ldexp(1.0f, -24));
  REQUIRE(f16::from_bits(0x3c00).to_float() == 1.0f);
  REQUIRE(f16::from_bits(0x7bff).to_float() == 65504.0f);
  REQUIRE(f16::from_bits(0xfc00).to_float() == -std::numeric_limits<float>::infinity());
  REQUIRE(std::signbit(f16::from_bits(0x8000).to_float()));
  REQUIRE(bf16::from_bits(0x3f80).to_float() == 1.0f);
  REQUIRE(bf16::from_float(1.0f + 0x1p-8f).bits == 0x3f80);  // tie to even
  REQUIRE(bf16::from_float(1.0f + 0x1p-8f + 0x1p-20f).bits == 0x3f81);
  REQUIRE(f16::from_float(0x1p-25f).bits == 0x0000);  // tie between 0 and the least subnormal: even
  REQUIRE(f16::from_float(0x1.8p-24f).bits == 0x0002);
}

TEMPLATE_LIST_TEST_CASE(
    "storage types: vector loads and stores give the scalar bits on every backend",
    "[simd][convert]", test::tested_archs) {
  using Arch = TestType;
  constexpr int W = Arch::width;
  const auto check = [&]<class T>(T) {
    INFO("arch " << Arch::name << " type " << (sizeof(T) == 2 && std::is_same_v<T, bf16> ? "bf16" : "f16"));
    std::vector<T> all(65536 + W);
    for (std::uint32_t b = 0; b < 65536; ++b) all[b] = T::from_bits(std::uint16_t(b));
    std::vector<float> out(65536 + W);
    to_float_row<Arch>(all.data(), out.data(), 65536);
    for (std::uint32_t b = 0; b < 65536; ++b) {
      INFO("pattern " << std::hex << b);
      REQUIRE(bits(out[b]) == bits(all[b].to_float()));
    }
    // Partial loads: the first n lanes, zeros after, nothing read past n.
    for (int n = 0; n <= W; ++n) {
      float lanes[W];
      float_io<T, Arch>::load_partial(all.data() + 0x3c00, n).store(lanes);
      for (int i = 0; i < W; ++i) REQUIRE(bits(lanes[i]) == (i < n ? bits(all[std::size_t(0x3c00 + i)].to_float()) : 0u));
    }
    std::vector<float> xs = probe_floats<T>();
    for (float x : nan_floats()) xs.push_back(x);
    std::vector<T> stored(xs.size() + W, T::from_bits(0x1234));
    from_float_row<Arch>(xs.data(), stored.data(), std::ptrdiff_t(xs.size()));
    for (std::size_t i = 0; i < xs.size(); ++i) {
      INFO("x bits " << std::hex << bits(xs[i]));
      REQUIRE(stored[i].bits == T::from_float(xs[i]).bits);
    }
    REQUIRE(stored[xs.size()].bits == 0x1234);  // nothing written past n
    for (int n = 0; n <= W; ++n) {  // partial stores leave lanes n.. untouched
      std::vector<T> dst(std::size_t(W), T::from_bits(0x5555));
      from_float_row<Arch>(xs.data(), dst.data(), n);
      for (int i = 0; i < W; ++i) REQUIRE(dst[std::size_t(i)].bits == (i < n ? T::from_float(xs[std::size_t(i)]).bits : 0x5555));
    }
  };
  check(bf16{});
  check(f16{});
}

TEMPLATE_LIST_TEST_CASE(
    "storage types: int8 loads give the integers on every backend; rows quantise within a half "
    "step",
    "[simd][convert]", test::tested_archs) {
  using Arch = TestType;
  constexpr int W = Arch::width;
  std::vector<q8> all(256 + W);
  for (int b = 0; b < 256; ++b) all[std::size_t(b)].v = std::int8_t(b - 128);
  std::vector<float> out(256 + W, -1.0f);
  to_float_row<Arch>(all.data(), out.data(), 256);
  for (int b = 0; b < 256; ++b) REQUIRE(out[std::size_t(b)] == float(b - 128));
  REQUIRE(out[256] == -1.0f);
  for (int n = 0; n <= W; ++n) {
    float lanes[W];
    float_io<q8, Arch>::load_partial(all.data() + 3, n).store(lanes);
    for (int i = 0; i < W; ++i) REQUIRE(lanes[i] == (i < n ? float(i + 3 - 128) : 0.0f));
  }
  // store_row: scale = max|x| / 127, every value within half a step;
  // zero rows are exact; a non-finite value makes the row NaN.
  using traits = kv_storage_traits<q8>;
  test::rng_t g(test::seed_for(301, 0));
  for (int n : {1, 2, 7, 16, 17, 64, 128, 131}) {
    const auto x = test::random_floats(g, std::size_t(n), -3, 3);
    stored_rows<q8> r(1, n);
    traits::store_row<Arch>(x.data(), r.row(0), n);
    std::vector<float> back(static_cast<std::size_t>(n));
    traits::load_row<Arch>(r.row(0), back.data(), n);
    double amax = 0;
    for (float v : x) amax = std::max(amax, double(std::abs(v)));
    REQUIRE(traits::row_scale(r.row(0)) == float(amax) / 127.0f);
    for (int i = 0; i < n; ++i) REQUIRE(std::abs(double(back[std::size_t(i)]) - x[std::size_t(i)]) <= amax / 254 * (1 + 1e-6));
  }
  stored_rows<q8> z(1, 5);
  const float zeros[5] = {}, bad[5] = {1, 2, std::numeric_limits<float>::infinity(), 4, 5};
  float back[5];
  traits::store_row<Arch>(zeros, z.row(0), 5);
  traits::load_row<Arch>(z.row(0), back, 5);
  for (float v : back) REQUIRE(v == 0.0f);
  traits::store_row<Arch>(bad, z.row(0), 5);
  traits::load_row<Arch>(z.row(0), back, 5);
  for (float v : back) REQUIRE(std::isnan(v));
}

TEMPLATE_LIST_TEST_CASE(
    "storage types: int8 stores and row quantisation give the scalar formula's bits on every "
    "backend",
    "[simd][convert]", test::tested_archs) {
  using Arch = TestType;
  constexpr int W = Arch::width;
  using V = vec<float, Arch>;
  // Stores narrow integer lanes in [-127, 127] exactly, partial ones
  // leaving the bytes past n alone.
  for (int base = -127; base + W <= 128; base += W)
    for (int n = 0; n <= W; ++n) {
      float lanes[W];
      for (int i = 0; i < W; ++i) lanes[i] = float(base + i);
      std::vector<q8> dst(std::size_t(W), q8{0x55});
      if (n == W)
        float_io<q8, Arch>::store(dst.data(), V::load(lanes));
      else
        float_io<q8, Arch>::store_partial(dst.data(), V::load(lanes), n);
      for (int i = 0; i < W; ++i) REQUIRE(dst[std::size_t(i)].v == (i < n ? base + i : 0x55));
    }
  // store_row against the definition, written out: scale = max|x| / 127,
  // v = nearbyint(x / scale) clamped; zeros when the scale is 0; a NaN scale
  // and zeros when a value is not finite. Rows with ties (x / scale = k +
  // 1/2), tiny and huge magnitudes, infinities and NaNs.
  const auto reference = [](const std::vector<float>& x, float& scale) {
    float amax = 0;
    bool finite = true;
    for (float v : x) finite = finite && std::isfinite(v), amax = std::max(amax, std::abs(v));
    scale = finite ? amax / 127.0f : std::numeric_limits<float>::quiet_NaN();
    std::vector<std::int8_t> q(x.size(), 0);
    if (finite && scale > 0)
      for (std::size_t i = 0; i < x.size(); ++i) q[i] = std::int8_t(std::clamp(std::nearbyint(x[i] / scale), -127.0f, 127.0f));
    return q;
  };
  test::rng_t g(test::seed_for(302, 0));
  for (int c = 0; c < 400; ++c) {
    const int n = test::uniform_int(g, 1, 3 * W + 5);
    const float mag = std::ldexp(1.0f, test::uniform_int(g, -140, 120));
    std::vector<float> x = test::random_floats(g, std::size_t(n), -mag, mag);
    if (c % 5 == 1) {  // exact ties: amax 127 makes the scale 1
      for (auto& v : x) v = float(test::uniform_int(g, -126, 125)) + 0.5f;
      x[0] = 127.0f;
    }
    if (c % 7 == 2) x[std::size_t(test::uniform_int(g, 0, n - 1))] = std::numeric_limits<float>::infinity();
    if (c % 11 == 3) x[std::size_t(test::uniform_int(g, 0, n - 1))] = std::numeric_limits<float>::quiet_NaN();
    if (c % 13 == 4) std::fill(x.begin(), x.end(), 0.0f);
    INFO("case " << c << " n " << n << " magnitude " << mag);
    float scale = 0;
    const auto want = reference(x, scale);
    stored_rows<q8> r(1, n);
    kv_storage_traits<q8>::store_row<Arch>(x.data(), r.row(0), n);
    const float got = kv_storage_traits<q8>::row_scale(r.row(0));
    REQUIRE(std::memcmp(&got, &scale, 4) == 0);
    for (int i = 0; i < n; ++i) REQUIRE(r.row(0)[i].v == want[std::size_t(i)]);
  }
}
