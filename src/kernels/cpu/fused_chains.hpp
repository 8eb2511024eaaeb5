#pragma once
// The three memory-bound chains of a transformer layer, each fused into one pass over memory:
// every input element is read once and every output element written once; the intermediates
// live in registers, or in the output row while it sits in L1/L2. They call the same inline
// ops as the unfused passes (activation.hpp, elementwise.hpp, layernorm.hpp, softmax.hpp), so
// fused and unfused compute the same math and differ only in memory traffic.
#include <cstddef>

#include "kernels/cpu/elementwise.hpp"

namespace aiopt::kernels::cpu {

// y = gelu_tanh(x + b). x, y: (rows, hidden); b: (hidden).
void bias_gelu_fused(const float* x, const float* b, float* y, std::size_t rows, std::size_t hidden);

// y = LayerNorm(residual + dropout(x + b)) · gamma + beta, dropout index = flat element index.
// x, residual, y: (rows, hidden); b, gamma, beta: (hidden).
void bias_dropout_residual_layernorm_fused(const float* x, const float* b, const float* residual,
                                           const float* gamma, const float* beta, float* y,
                                           std::size_t rows, std::size_t hidden,
                                           const Dropout& mask, float eps);

// y = softmax(causal_mask(s · x)) per row; rows a multiple of hidden (see softmax.hpp).
// x, y: (rows, hidden).
void scale_mask_softmax_fused(const float* x, float* y, std::size_t rows, std::size_t hidden, float s);

}  // namespace aiopt::kernels::cpu
