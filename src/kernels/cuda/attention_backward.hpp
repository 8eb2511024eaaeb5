#pragma once
// Training attention on CUDA, fp32, mirroring kernels/cpu/attention_backward.hpp (same shapes,
// formulas and contract: self-attention, causal or not; dq, dk, dv written).
#include <cstddef>

#include "kernels/attention_shape.hpp"

namespace aiopt::kernels::cuda {

// Flash backward from the forward's lse (attention_flash in kernels/cuda/attention.hpp): no N×N
// buffer; its only workspace is D, B·H·N floats. dK, dV and dQ are each summed in a fixed order
// (no float atomics), so results repeat bit for bit.
void attention_flash_backward(const float* q, const float* k, const float* v, const float* out,
                              const float* dout, const float* lse, float* dq, float* dk, float* dv,
                              const AttentionShape& shape, void* stream);

// Naive backward: P recomputed into `scores` (B·H·N·N floats) by cuBLAS, the rest by cuBLAS and
// one elementwise kernel.
void attention_naive_backward(const float* q, const float* k, const float* v, const float* out,
                              const float* dout, float* dq, float* dk, float* dv, float* scores,
                              const AttentionShape& shape, void* stream);

}  // namespace aiopt::kernels::cuda
