// Linear-state kernel against the double oracle on random shapes for every
// compiled backend and both state precisions (feature maps, normalisers,
// linear and delta updates, several blocks), plus its properties: closed-form
// linear sums, the delta-rule fixed point, empty state, tiny denominators.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include <longctx/kernels/linear_state.hpp>
#include <longctx/reference/linear_state.hpp>

#include "../support/support.hpp"

using namespace longctx;

namespace {

// A state of type S with the kernel's layout, and a matching oracle state.
template <class S>
struct state_pair {
  index_t d_k, d_v, ld;
  std::vector<S> m, z;
  reference::linear_state ref;
  state_pair(index_t dk, index_t dv)
      : d_k(dk), d_v(dv), ld(linear_state_ld(dv)), m(std::size_t(dk * ld), S(0)), z(std::size_t(dk), S(0)),
        ref(dk, dv) {}
  linear_state_view<S> view() { return {m.data(), z.data(), d_k, d_v, ld}; }
  // Random initial state (user-supplied): z > 0 keeps ELU+1 denominators positive.
  void randomise(test::rng_t& g, bool positive_z) {
    for (index_t p = 0; p < d_k; ++p) {
      for (index_t c = 0; c < d_v; ++c) {
        const float x = test::random_floats(g, 1, -3, 3)[0];
        m[std::size_t(p * ld + c)] = S(x);
        ref.m[std::size_t(p * d_v + c)] = S(x);
        ref.m_abs[std::size_t(p * d_v + c)] = std::abs(double(S(x)));
      }
      const float x = test::random_floats(g, 1, positive_z ? 0.5f : -4.0f, 4)[0];
      z[std::size_t(p)] = S(x);
      ref.z[std::size_t(p)] = S(x);
      ref.z_abs[std::size_t(p)] = std::abs(double(S(x)));
    }
    ref.terms = 1;
  }
};

struct rows {
  std::vector<float> data;
  matrix_view<float> view;
  rows(test::rng_t& g, index_t n, index_t d, float lo = -1, float hi = 1, index_t pad = 0)
      : data(test::random_floats(g, std::size_t(std::max<index_t>(1, n * (d + pad))), lo, hi)),
        view(make_matrix(data.data(), n, d, d + pad)) {}
};

// fp32 rounding of sums of (d_k + terms) products, relative to the magnitudes
// that were summed (the oracle's bound): a worst-case linear bound, times 2.
double sum_tolerance(double terms, index_t d_k, double magnitude, double eps) {
  return 2 * eps * (double(d_k) + terms + 8) * magnitude + 1e-30;
}

template <class S>
constexpr double state_eps() {
  // The double state still sees fp32 inputs and writes fp32 outputs: its
  // error is one fp32 rounding of each output, not a sum of them.
  return std::is_same_v<S, float> ? test::eps_f32 : 0.0;
}

template <class Arch, class S>
void check_retrieve(state_pair<S>& st, feature_map f, const retrieval_norm& nm, matrix_view<float> q,
                    test::rng_t& g, const std::string& what) {
  const index_t n = q.extent(0), d_v = st.d_v;
  rows out(g, n, d_v, -1, 1, test::uniform_int(g, 0, 2));
  std::vector<float> a(static_cast<std::size_t>(d_v)), b(static_cast<std::size_t>(d_v));
  const bool blend = test::uniform_int(g, 0, 1);
  for (index_t c = 0; c < d_v; ++c) {
    a[std::size_t(c)] = test::random_floats(g, 1, 0, 1)[0];
    b[std::size_t(c)] = 1 - a[std::size_t(c)];
  }
  const std::vector<float> before = out.data;
  std::vector<S> scratch(std::size_t(linear_retrieve_scratch(st.d_k, d_v)));
  linear_retrieve<Arch, S>(st.view(), f, nm, q, out.view,
                           blend ? retrieval_combine{a.data(), b.data()} : retrieval_combine{}, scratch.data());
  const auto ref = reference::retrieve(st.ref, f, nm, matrix_view<const float>(q));
  double worst = 0;
  std::string where;
  for (index_t i = 0; i < n; ++i) {
    double err = 0, mag = 0;
    for (index_t c = 0; c < d_v; ++c) {
      double want = ref.o[std::size_t(i * d_v + c)], m = std::abs(want);
      if (blend) {
        const double prev = before[std::size_t(i * out.view.stride(0) + c)];
        m = std::abs(a[std::size_t(c)] * want) + std::abs(b[std::size_t(c)] * prev);
        want = a[std::size_t(c)] * want + b[std::size_t(c)] * prev;
      }
      err = std::max(err, std::abs(out.view(i, c) - want));
      mag = std::max(mag, m);
    }
    const double tol = sum_tolerance(st.ref.terms, st.d_k, ref.bound[std::size_t(i)], state_eps<S>() + 1e-300) +
                       4 * test::eps_f32 * (mag + 1e-30);
    if (!(err <= worst * tol)) {
      worst = err / tol;
      where = detail::concat("row ", i, " err ", err, " tol ", tol, " bound ", ref.bound[std::size_t(i)]);
    }
  }
  INFO(what << ": worst " << where);
  REQUIRE(worst <= 1.0);
}

template <class S>
void check_state(const state_pair<S>& st, const std::string& what) {
  // Worst element relative to its tolerance, checked once (per-element
  // REQUIREs would dominate the run time).
  const double eps = std::is_same_v<S, float> ? test::eps_f32 : 1e-15;
  double worst = 0;
  std::string where;
  for (index_t p = 0; p < st.d_k; ++p) {
    for (index_t c = 0; c < st.d_v; ++c) {
      const std::size_t r = std::size_t(p * st.d_v + c);
      const double tol = sum_tolerance(st.ref.terms, st.d_k, st.ref.m_abs[r], eps);
      const double err = std::abs(double(st.m[std::size_t(p * st.ld + c)]) - st.ref.m[r]);
      if (!(err <= worst * tol)) {
        worst = err / tol;
        where = detail::concat("M(", p, ", ", c, ") = ", st.m[std::size_t(p * st.ld + c)], " vs ", st.ref.m[r],
                               " tol ", tol);
      }
    }
    for (index_t c = st.d_v; c < st.ld; ++c) REQUIRE(st.m[std::size_t(p * st.ld + c)] == S(0));
    const double tol = sum_tolerance(st.ref.terms, 0, st.ref.z_abs[std::size_t(p)], eps);
    const double err = std::abs(double(st.z[std::size_t(p)]) - st.ref.z[std::size_t(p)]);
    if (!(err <= worst * tol)) {
      worst = err / tol;
      where = detail::concat("z(", p, ") = ", st.z[std::size_t(p)], " vs ", st.ref.z[std::size_t(p)], " tol ", tol);
    }
  }
  INFO(what << ": worst " << where);
  REQUIRE(worst <= 1.0);
}

template <class Arch, class S>
void random_case(std::uint64_t seed) {
  static const std::vector<int> dims{1, 2, 3, 7, 8, 16, 17, 33, 59, 64, 111, 128};
  static const std::vector<int> lens = test::odd_sizes({linear_state_block, 8, 16}, 300);
  test::rng_t g(seed);
  const index_t d_k = dims[std::size_t(test::uniform_int(g, 0, int(dims.size()) - 1))];
  const index_t d_v = test::uniform_int(g, 0, 2) ? d_k : dims[std::size_t(test::uniform_int(g, 0, int(dims.size()) - 1))];
  const feature_map f = test::uniform_int(g, 0, 3) ? feature_map::elu_plus_one : feature_map::identity;
  const update_rule rule = test::uniform_int(g, 0, 1) ? update_rule::delta : update_rule::linear;
  retrieval_norm nm;
  const int kind = test::uniform_int(g, 0, 5);
  nm.kind = kind < 4 ? normaliser::z_denominator : kind == 4 ? normaliser::block_mean : normaliser::none;
  const index_t C = test::uniform_int(g, 1, 64);
  state_pair<S> st(d_k, d_v);
  const bool initial = test::uniform_int(g, 0, 3) == 0;
  if (initial) st.randomise(g, f == feature_map::elu_plus_one);
  const int blocks = test::uniform_int(g, 1, 4);
  const std::string what = detail::concat("d_k ", d_k, " d_v ", d_v, " phi ", int(f), " rule ", int(rule), " norm ",
                                          int(nm.kind), " initial ", initial, " blocks ", blocks);
  std::vector<S> scratch(std::size_t(linear_update_scratch(d_k, d_v)));
  for (int blk = 0; blk <= blocks; ++blk) {
    nm.divisor = double(C) * blk;  // FLASH: C x visible blocks (0 for the first)
    const index_t n_q = test::random_size(g, lens, 300);
    rows q(g, n_q, d_k, -1, 1, test::uniform_int(g, 0, 3));
    check_retrieve<Arch, S>(st, f, nm, q.view, g, detail::concat(what, " block ", blk));
    if (blk == blocks) break;
    // Values reach 2 so the delta residual is not just the retrieval.
    const index_t n = test::random_size(g, lens, 300);
    rows k(g, n, d_k, -1, 1, test::uniform_int(g, 0, 2)), v(g, n, d_v, -2, 2, test::uniform_int(g, 0, 2));
    linear_update<Arch, S>(st.view(), f, rule, nm, k.view, v.view, scratch.data());
    reference::update(st.ref, f, rule, nm, matrix_view<const float>(k.view), matrix_view<const float>(v.view));
    check_state(st, detail::concat(what, " after block ", blk, " n ", n));
  }
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("linear_state: random shapes against the double oracle",
                        "[kernels][linear_state]", test::tested_archs) {
  const int cases = test::scaled(300);
  for (int c = 0; c < cases; ++c) {
    const std::uint64_t seed = test::seed_for(40, std::uint64_t(c));
    INFO("arch " << TestType::name << " case " << c << " seed " << seed);
    random_case<TestType, float>(seed);
    if (c % 4 == 0) random_case<TestType, double>(seed ^ 0x5bd1e995);
  }
}

TEMPLATE_LIST_TEST_CASE("linear_state: the linear rule over S blocks equals the closed-form sums",
                        "[kernels][linear_state]", test::tested_archs) {
  test::rng_t g(test::seed_for(41, 0));
  for (index_t d : {5, 64}) {
    const index_t S_blocks = 7, n = 37 * S_blocks, d_v = d + 3;
    rows k(g, n, d, -1, 1), v(g, n, d_v, -1, 1);
    state_pair<float> st(d, d_v);
    std::vector<float> scratch(std::size_t(linear_update_scratch(d, d_v)));
    for (index_t s = 0; s < S_blocks; ++s)
      linear_update<TestType, float>(st.view(), feature_map::elu_plus_one, update_rule::linear, {},
                                     k.view.rows(s * 37, 37), v.view.rows(s * 37, 37), scratch.data());
    // M = sum_t phi(k_t)^T v_t, z = sum_t phi(k_t) over all S blocks at once.
    for (index_t p = 0; p < d; ++p) {
      double z = 0, z_abs = 0;
      for (index_t t = 0; t < n; ++t) z += feature_value(feature_map::elu_plus_one, k.view(t, p));
      z_abs = z;
      INFO("d " << d << " p " << p);
      REQUIRE(std::abs(st.z[std::size_t(p)] - z) <= sum_tolerance(double(n), 0, z_abs, test::eps_f32));
      for (index_t c = 0; c < d_v; ++c) {
        double m = 0, m_abs = 0;
        for (index_t t = 0; t < n; ++t) {
          const double a = feature_value(feature_map::elu_plus_one, k.view(t, p));
          m += a * v.view(t, c);
          m_abs += std::abs(a * v.view(t, c));
        }
        REQUIRE(std::abs(st.m[std::size_t(p * st.ld + c)] - m) <= sum_tolerance(double(n), 0, m_abs, test::eps_f32));
      }
    }
  }
}

TEMPLATE_LIST_TEST_CASE("linear_state: delta rule fixed point (values equal to their retrieval)",
                        "[kernels][linear_state]", test::tested_archs) {
  test::rng_t g(test::seed_for(42, 0));
  for (index_t d_k : {3, 17, 64}) {
    const index_t d_v = 2 * d_k + 1, n = 150;
    state_pair<double> st(d_k, d_v);
    st.randomise(g, true);
    rows k(g, n, d_k, -1, 1), v(g, n, d_v);
    // V rows := their own retrieval, computed in double and rounded once.
    std::vector<double> scratch(std::size_t(std::max(linear_update_scratch(d_k, d_v), linear_retrieve_scratch(d_k, d_v))));
    linear_retrieve<TestType, double>(st.view(), feature_map::elu_plus_one, {}, k.view, v.view, {}, scratch.data());
    const std::vector<double> m0 = st.m, z0 = st.z;
    double mag = 0;
    for (double x : m0) mag = std::max(mag, std::abs(x));
    linear_update<TestType, double>(st.view(), feature_map::elu_plus_one, update_rule::delta, {}, k.view, v.view,
                                    scratch.data());
    // The residuals are V's rounding (<= eps_f32 |v|): M moves by at most
    // sum_t phi(k_t) * eps |v|, far less than the linear rule would add.
    double z_gain = 0, moved = 0;
    for (index_t p = 0; p < d_k; ++p) z_gain = std::max(z_gain, st.z[std::size_t(p)] - z0[std::size_t(p)]);
    for (std::size_t i = 0; i < m0.size(); ++i) moved = std::max(moved, std::abs(st.m[i] - m0[i]));
    double vmax = 0;
    for (float x : v.data) vmax = std::max(vmax, double(std::abs(x)));
    INFO("d_k " << d_k << " moved " << moved << " z gain " << z_gain << " |v| " << vmax);
    REQUIRE(z_gain > double(n) * 0.3);  // z still grows: the fixed point is M's, not z's
    REQUIRE(moved <= 2 * test::eps_f32 * z_gain * vmax);
    // The same block under the linear rule moves M by O(n |v|): the check can fail.
    state_pair<double> lin(d_k, d_v);
    lin.m = m0, lin.z = z0;
    linear_update<TestType, double>(lin.view(), feature_map::elu_plus_one, update_rule::linear, {}, k.view, v.view,
                                    scratch.data());
    double lin_moved = 0;
    for (std::size_t i = 0; i < m0.size(); ++i) lin_moved = std::max(lin_moved, std::abs(lin.m[i] - m0[i]));
    REQUIRE(lin_moved > 1000 * moved);
  }
  // fp32 state: the fixed point holds to the fp32 retrieval's own rounding.
  test::rng_t g2(test::seed_for(42, 1));
  const index_t d_k = 32, d_v = 32, n = 200;
  state_pair<float> st(d_k, d_v);
  st.randomise(g2, true);
  rows k(g2, n, d_k), v(g2, n, d_v);
  std::vector<float> scratch(std::size_t(linear_update_scratch(d_k, d_v)));
  linear_retrieve<TestType, float>(st.view(), feature_map::elu_plus_one, {}, k.view, v.view, {}, scratch.data());
  const std::vector<float> m0 = st.m;
  linear_update<TestType, float>(st.view(), feature_map::elu_plus_one, update_rule::delta, {}, k.view, v.view,
                                 scratch.data());
  double moved = 0, mag = 0, z_gain = 0, vmax = 0;
  for (std::size_t i = 0; i < m0.size(); ++i) {
    moved = std::max(moved, double(std::abs(st.m[i] - m0[i])));
    mag = std::max(mag, double(std::abs(m0[i])));
  }
  for (index_t i = 0; i < n; ++i)
    for (index_t c = 0; c < d_v; ++c) vmax = std::max(vmax, double(std::abs(v.view(i, c))));
  for (index_t t = 0; t < n; ++t) {
    double s = 0;
    for (index_t p = 0; p < d_k; ++p) s = std::max(s, feature_value(feature_map::elu_plus_one, k.view(t, p)));
    z_gain += s;
  }
  // The update's retrieval of each key is bit-identical to the one that made
  // V (rows are independent), and V - retrieval is fused: each residual is
  // V's own rounding, <= eps/2 |v|. M moves by sum_t phi(k_t) eps/2 |v| at
  // most, plus the rounding of M + dM.
  INFO("moved " << moved << " |M| " << mag << " z gain " << z_gain << " |v| " << vmax);
  REQUIRE(moved <= test::eps_f32 * (z_gain * vmax + 2 * mag));
  REQUIRE(moved < 1e-3 * mag);
}

TEMPLATE_LIST_TEST_CASE("linear_state: empty state, tiny denominators, block mean, feature maps",
                        "[kernels][linear_state]", test::tested_archs) {
  test::rng_t g(test::seed_for(43, 0));
  const index_t d_k = 19, d_v = 21, n = 40;
  std::vector<float> scratch(std::size_t(linear_update_scratch(d_k, d_v)));
  SECTION("an empty state retrieves exactly 0, never NaN, and delta equals linear on it") {
    state_pair<float> st(d_k, d_v);
    rows q(g, n, d_k), o(g, n, d_v), k(g, n, d_k), v(g, n, d_v);
    for (feature_map f : {feature_map::elu_plus_one, feature_map::identity}) {
      linear_retrieve<TestType, float>(st.view(), f, {}, q.view, o.view, {}, scratch.data());
      for (index_t i = 0; i < n; ++i)
        for (index_t c = 0; c < d_v; ++c) REQUIRE(o.view(i, c) == 0.0f);
    }
    state_pair<float> lin(d_k, d_v);
    linear_update<TestType, float>(st.view(), feature_map::elu_plus_one, update_rule::delta, {}, k.view, v.view,
                                   scratch.data());
    linear_update<TestType, float>(lin.view(), feature_map::elu_plus_one, update_rule::linear, {}, k.view, v.view,
                                   scratch.data());
    CHECK(st.m == lin.m);
    CHECK(st.z == lin.z);
  }
  SECTION("a zero denominator with a non-empty z is clamped to epsilon: finite, as the oracle") {
    state_pair<float> st(d_k, d_v);
    st.randomise(g, false);
    // q orthogonal to z: q = (z_1, -z_0, 0, ...) gives q . z = 0 exactly.
    rows q(g, 2, d_k);
    std::fill(q.data.begin(), q.data.end(), 0.0f);
    q.view(0, 0) = st.z[1], q.view(0, 1) = -st.z[0];
    rows o(g, 2, d_v);
    retrieval_norm nm{normaliser::z_denominator, 1e-3f};
    linear_retrieve<TestType, float>(st.view(), feature_map::identity, nm, q.view, o.view, {}, scratch.data());
    const auto ref = reference::retrieve(st.ref, feature_map::identity, nm, matrix_view<const float>(q.view));
    for (index_t i = 0; i < 2; ++i)
      for (index_t c = 0; c < d_v; ++c) {
        REQUIRE(std::isfinite(o.view(i, c)));
        REQUIRE(std::abs(o.view(i, c) - ref.o[std::size_t(i * d_v + c)]) <=
                64 * test::eps_f32 * (std::abs(ref.o[std::size_t(i * d_v + c)]) + ref.bound[std::size_t(i)]));
      }
    CHECK(o.view(1, 0) == 0.0f);  // q = 0: 0 / eps = 0
  }
  SECTION("block mean: divisor 0 (no visible block) gives 0, otherwise phi(q) M / divisor") {
    state_pair<float> st(d_k, d_v);
    st.randomise(g, true);
    rows q(g, n, d_k), o(g, n, d_v), o2(g, n, d_v);
    linear_retrieve<TestType, float>(st.view(), feature_map::identity, {normaliser::block_mean, 1e-6f, 0.0}, q.view,
                                     o.view, {}, scratch.data());
    for (float x : o.data) REQUIRE(x == 0.0f);
    linear_retrieve<TestType, float>(st.view(), feature_map::identity, {normaliser::block_mean, 1e-6f, 4.0}, q.view,
                                     o.view, {}, scratch.data());
    linear_retrieve<TestType, float>(st.view(), feature_map::identity, {normaliser::none}, q.view, o2.view, {},
                                     scratch.data());
    for (std::size_t i = 0; i < o.data.size(); ++i) REQUIRE(o.data[i] == o2.data[i] * 0.25f);
  }
  SECTION("ELU+1 matches double within 4 ulp and propagates NaN") {
    std::vector<float> x = test::random_floats(g, 1000, -20, 20), y(1000);
    x[3] = 0.0f, x[4] = -0.0f, x[5] = -200.0f;
    apply_feature_map<TestType>(feature_map::elu_plus_one, x.data(), y.data(), index_t(x.size()));
    for (std::size_t i = 0; i < x.size(); ++i) {
      INFO("x " << x[i]);
      REQUIRE(test::ulp_distance(y[i], float(feature_value(feature_map::elu_plus_one, x[i]))) <= 4);
    }
    x[0] = std::numeric_limits<float>::quiet_NaN();
    apply_feature_map<TestType>(feature_map::elu_plus_one, x.data(), y.data(), 3);
    CHECK(std::isnan(y[0]));
  }
}
