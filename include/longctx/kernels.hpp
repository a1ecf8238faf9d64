// Kernel layer umbrella: masks, online softmax, micro-GEMM, tiled attention,
// split-KV decode, executors.
#pragma once

#include "kernels/attention.hpp"
#include "kernels/executor.hpp"
#include "kernels/mask.hpp"
#include "kernels/micro_gemm.hpp"
#include "kernels/online_softmax.hpp"
#include "kernels/split_kv_decode.hpp"
#include "kernels/tiled_attention.hpp"
