#pragma once
// The tensor-fusion chains on CUDA, one kernel per chain, mirroring kernels/cpu/fused_chains.hpp,
// plus the stream; their unfused passes are the single-op kernels of elementwise.hpp,
// activation.hpp, softmax.hpp and layernorm.hpp. Device pointers, `stream` a cudaStream_t (nullptr:
// the default stream); every launch is checked. Activations are stored as T = float or
// std::uint16_t (bf16 bits, as kernels/cpu/bf16.hpp; __nv_bfloat16 on the device) and computed in
// fp32, rounded to nearest even once per stored bf16; parameter vectors (b, gamma, beta) are float.
// Where hidden % 4 == 0 and every pointer is aligned to 4 of its
// elements the kernels move vectors of 4; otherwise single elements. The row chains run one block
// per row, so rows <= 2^31 − 1; a bad rows throws std::invalid_argument; zero rows or zero
// width return without launching.
#include <cstddef>

#include "kernels/cpu/elementwise.hpp"

namespace aiopt::kernels::cuda {

// y = gelu_tanh(x + b).
template <class T>
void bias_gelu_fused(const T* x, const float* b, T* y, std::size_t rows, std::size_t hidden,
                     void* stream);
// y = LayerNorm(residual + dropout(x + b)) · gamma + beta; dropout index = flat element index.
template <class T>
void bias_dropout_residual_layernorm_fused(const T* x, const float* b, const T* residual,
                                           const float* gamma, const float* beta, T* y,
                                           std::size_t rows, std::size_t hidden, const cpu::Dropout& mask,
                                           float eps, void* stream);
// y = softmax(causal_mask(s · x)) per row.
template <class T>
void scale_mask_softmax_fused(const T* x, T* y, std::size_t rows, std::size_t hidden, float s,
                              void* stream);

}  // namespace aiopt::kernels::cuda
