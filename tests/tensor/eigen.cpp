// Eigen interop: views over Eigen objects and Eigen maps over views, both
// zero-copy, for row-major, column-major, blocks and Ref.
#include <catch2/catch.hpp>

#include <longctx/tensor/eigen.hpp>

using namespace longctx;
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

TEST_CASE("eigen: views of Eigen objects", "[tensor]") {
  RowMat a = RowMat::Random(5, 7);
  auto v = as_view(a);
  STATIC_REQUIRE(std::is_same_v<decltype(v), matrix_view<float>>);
  CHECK(v.data() == a.data());
  CHECK(v(3, 4) == a(3, 4));
  const RowMat& ca = a;
  auto cv = as_view(ca);
  STATIC_REQUIRE(std::is_same_v<decltype(cv), matrix_view<const float>>);

  Eigen::Matrix<float, Eigen::Dynamic, 16, Eigen::RowMajor> s(3, 16);
  s.setRandom();
  auto sv = as_view(s);
  STATIC_REQUIRE(decltype(sv)::static_extent(1) == 16);

  auto blk = a.block(1, 2, 3, 4);
  auto bv = as_view(blk);
  CHECK(bv.extent(0) == 3);
  CHECK(bv(2, 3) == a(3, 5));
  CHECK(bv.stride(0) == 7);

  Eigen::MatrixXf col = Eigen::MatrixXf::Random(4, 3);  // column-major: inner stride is rows
  auto colv = as_view(col);
  CHECK(colv(2, 1) == col(2, 1));
  CHECK(!colv.unit_inner_stride());

  Eigen::Ref<const RowMat> ref(a);
  CHECK(as_view(ref)(4, 6) == a(4, 6));
}

TEST_CASE("eigen: maps over views", "[tensor]") {
  std::vector<float> buf(4 * 6);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = float(i);
  auto v = make_matrix(buf.data(), 4, 6).rows(1, 2);
  auto e = as_eigen(v);
  CHECK(e.rows() == 2);
  CHECK(e.cols() == 6);
  CHECK(e(1, 5) == buf[2 * 6 + 5]);
  e(0, 0) = -3.0f;  // writes through
  CHECK(buf[6] == -3.0f);
  matrix_view<const float> cv = v;
  auto ce = as_eigen(cv);
  CHECK(ce.sum() == Approx(Eigen::Map<RowMat>(buf.data() + 6, 2, 6).sum()));
  auto one = as_eigen(make_matrix<1>(buf.data(), 4, 1, 6));  // single column, strided rows
  CHECK(one(3, 0) == buf[18]);
  // Round trip.
  RowMat m = RowMat::Random(3, 3);
  CHECK(as_eigen(as_view(m)).isApprox(m, 0.0f));
}

TEST_CASE("eigen: a column-major matrix is rejected with the fix in the message", "[tensor]") {
  using namespace longctx;
  rmt_reference_backbone<> model({.width = 8, .heads = 2, .layers = 1});
  const rmt policy{.memory = 2, .segment_budget = 16};
  RowMat mem0 = RowMat::Zero(2, 8);
  auto state = policy.make_state(model, as_view(mem0));
  Eigen::MatrixXf x = Eigen::MatrixXf::Random(5, 8);  // column-major, Eigen's default
  RowMat y_rows(5, 8);
  CHECK_THROWS_WITH(policy.forward(state, as_view(x), as_view(y_rows)),
                    Catch::Contains("argument 'in'") && Catch::Contains("must be contiguous") &&
                        Catch::Contains("Eigen::RowMajor"));
  RowMat x_rows = x;
  policy.forward(state, as_view(x_rows), as_view(y_rows));  // the fix works
  CHECK(std::isfinite(y_rows(4, 7)));
}
