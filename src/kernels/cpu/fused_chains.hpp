#pragma once
// The three memory-bound chains of a transformer layer, each fused into one pass over memory:
// every input element is read once and every output element written once; the intermediates
// live in registers, or in the output row while it sits in L1/L2. They call the same inline
// ops as the unfused passes (activation.hpp, elementwise.hpp, layernorm.hpp, softmax.hpp), so
// fused and unfused compute the same math and differ only in memory traffic. Tensors are stored
// as T = float or bf16 and computed in fp32; fused, the intermediates are never rounded to bf16.
#include <cstddef>

#include "kernels/cpu/elementwise.hpp"

namespace aiopt::kernels::cpu {

// y = gelu_tanh(x + b). x, y: (rows, hidden); b: (hidden).
template <class T>
void bias_gelu_fused(const T* x, const float* b, T* y, std::size_t rows, std::size_t hidden);

// y = LayerNorm(residual + dropout(x + b)) · gamma + beta, dropout index = flat element index.
// x, residual, y: (rows, hidden); b, gamma, beta: (hidden).
template <class T>
void bias_dropout_residual_layernorm_fused(const T* x, const float* b, const T* residual, const float* gamma,
                                           const float* beta, T* y, std::size_t rows, std::size_t hidden,
                                           const Dropout& mask, float eps);

// y = softmax(causal_mask(s · x)) per row; rows a multiple of hidden (see softmax.hpp).
// x, y: (rows, hidden).
template <class T>
void scale_mask_softmax_fused(const T* x, T* y, std::size_t rows, std::size_t hidden, float s);

}  // namespace aiopt::kernels::cpu
