#pragma once
// LayerNorm on CUDA, mirroring kernels/cpu/layernorm.hpp: the same functions, layouts and
// accumulate/write contract, plus the stream. Device pointers, `stream` a cudaStream_t (nullptr:
// the default stream); every launch is checked; one block per row, so rows <= 2^31 − 1 (more throws
// std::invalid_argument); zero rows or zero width return without launching. Activations are stored
// as T = float or std::uint16_t (bf16 bits, as kernels/cpu/bf16.hpp; __nv_bfloat16 on the device)
// and computed in fp32, rounded to nearest even once per stored bf16; parameter vectors are float.
// Where the row width (for the flat ops: n) % 4 == 0 and every pointer is aligned to 4 of its
// elements the kernels move vectors of 4; otherwise single elements. The training forward and
// backward are fp32; dgamma and dbeta are reduced in a fixed order.
#include <cstddef>

namespace aiopt::kernels::cuda {

// y = LayerNorm(x)·gamma + beta per row. x, y: (rows, hidden); gamma, beta: (hidden).
template <class T>
void layernorm(const T* x, const float* gamma, const float* beta, T* y, std::size_t rows, std::size_t hidden,
               float eps, void* stream);

// The same, also saving each row's mean and rstd: (rows).
void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                       float* rstd, std::size_t rows, std::size_t hidden, float eps, void* stream);
// dx written; dgamma, dbeta accumulated, both skipped when both are null.
void layernorm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                        const float* rstd, float* dx, float* dgamma, float* dbeta, std::size_t rows,
                        std::size_t hidden, void* stream);

}  // namespace aiopt::kernels::cuda
