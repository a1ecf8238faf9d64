// The 16-bit GEMM engines every build can test (tests/kernels/engines.cpp,
// chunk_attention.cpp): the AMX engine on the emulated tile unit
// (kernels/amx_tiles.hpp), on the scalar backend and on the widest one
// compiled. The hardware engines run in the hidden [hw_amx] /
// [hw_avx512_bf16] cases, which ctest reports as skipped where the CPU or
// the build lacks them.
#pragma once

#include <tuple>

#include <longctx/kernels/compute.hpp>

namespace longctx::test {

// bf16's unit roundoff: 8 significant bits, so rounding to nearest moves a
// value by up to 2^-8 of it.
inline constexpr double u_bf16 = 0x1p-8;

using emulated_amx = decltype(std::tuple_cat(std::tuple<amx_engine<scalar, false>>{}
#if LONGCTX_HAS_AVX512
                                             , std::tuple<amx_engine<avx512, false>>{}
#elif LONGCTX_HAS_AVX2
                                             , std::tuple<amx_engine<avx2, false>>{}
#elif LONGCTX_HAS_NEON
                                             , std::tuple<amx_engine<neon, false>>{}
#endif
                                             ));

}  // namespace longctx::test
