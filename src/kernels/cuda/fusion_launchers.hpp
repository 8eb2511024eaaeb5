#pragma once
// Launchers of the tensor-fusion kernels, callable from plain C++ (no CUDA headers): pointers
// are device pointers, `stream` is a cudaStream_t (nullptr: the default stream). Every launch
// is checked. Shapes as in kernels/cpu: row-major, (rows, hidden). Activations are stored as
// T = float or std::uint16_t (bf16 bits, as kernels/cpu/bf16.hpp; __nv_bfloat16 on the device)
// and computed in fp32, rounded to nearest even once per stored bf16; parameter vectors (b,
// gamma, beta) are float. Where hidden (for the flat ops: n) % 4 == 0 and every pointer is
// aligned to 4 of its elements the kernels move vectors of 4 (float4, or 8 bytes of bf16);
// otherwise single elements. The row kernels (layernorm, softmax, the fused layernorm and softmax chains)
// run one block per row, so rows <= 2^31 − 1; a bad rows or p throws std::invalid_argument.
#include <cstddef>
#include <cstdint>

namespace aiopt::kernels::cuda {

// ---- one op per kernel (fusion_ops.cu), the unfused chains' passes

// y = x + b. x, y: (rows, hidden); b: (hidden).
template <class T>
void bias_add(const T* x, const float* b, T* y, std::size_t rows, std::size_t hidden, void* stream);
// y = gelu_tanh(x). x, y: (n).
template <class T>
void gelu_tanh(const T* x, T* y, std::size_t n, void* stream);
// Inverted dropout with the counter-based mask of kernels/cpu/elementwise.hpp: element i is kept
// iff rng::uniform(seed, i) >= p, scaled by 1/(1-p). x, y: (n).
template <class T>
void dropout(const T* x, T* y, std::size_t n, float p, std::uint64_t seed, void* stream);
// y = a + b. a, b, y: (n).
template <class T>
void residual_add(const T* a, const T* b, T* y, std::size_t n, void* stream);
// y = s·x. x, y: (n).
template <class T>
void scale(const T* x, T* y, std::size_t n, float s, void* stream);
// Causal mask: row r is query q = r % hidden; keys j > q become −inf. x, y: (rows, hidden).
template <class T>
void causal_mask(const T* x, T* y, std::size_t rows, std::size_t hidden, void* stream);
// LayerNorm of each row. x, y: (rows, hidden); gamma, beta: (hidden).
template <class T>
void layernorm(const T* x, const float* gamma, const float* beta, T* y, std::size_t rows,
               std::size_t hidden, float eps, void* stream);
// Softmax of each row. x, y: (rows, hidden).
template <class T>
void softmax(const T* x, T* y, std::size_t rows, std::size_t hidden, void* stream);

// ---- one kernel per chain (fused_chains.cu)

// y = gelu_tanh(x + b).
template <class T>
void bias_gelu_fused(const T* x, const float* b, T* y, std::size_t rows, std::size_t hidden,
                     void* stream);
// y = LayerNorm(residual + dropout(x + b)) · gamma + beta; dropout index = flat element index.
template <class T>
void bias_dropout_residual_layernorm_fused(const T* x, const float* b, const T* residual,
                                           const float* gamma, const float* beta, T* y,
                                           std::size_t rows, std::size_t hidden, float p,
                                           std::uint64_t seed, float eps, void* stream);
// y = softmax(causal_mask(s · x)) per row.
template <class T>
void scale_mask_softmax_fused(const T* x, T* y, std::size_t rows, std::size_t hidden, float s,
                              void* stream);

}  // namespace aiopt::kernels::cuda
