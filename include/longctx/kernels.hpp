// Kernel layer umbrella: method-agnostic, unchecked verbs (masks, online
// softmax, micro-GEMM, tiled prefill, split-KV decode, linear state, chunk
// attention, RoPE, top-k), and the machine-limit measurements. The
// checked entry points are longctx/attention.hpp.
#pragma once

#include "kernels/attention.hpp"
#include "kernels/chunk_attention.hpp"
#include "kernels/linear_state.hpp"
#include "kernels/machine_limits.hpp"
#include "kernels/mask.hpp"
#include "kernels/micro_gemm.hpp"
#include "kernels/online_softmax.hpp"
#include "kernels/rmt_mask.hpp"
#include "kernels/rope.hpp"
#include "kernels/split_kv_decode.hpp"
#include "kernels/tiled_attention.hpp"
#include "kernels/topk.hpp"
