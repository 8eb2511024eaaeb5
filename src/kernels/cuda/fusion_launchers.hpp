#pragma once
// Launchers of the tensor-fusion kernels, callable from plain C++ (no CUDA headers): pointers
// are device pointers, `stream` is a cudaStream_t (nullptr: the default stream). Every launch
// is checked. Shapes as in kernels/cpu: fp32, row-major, (rows, hidden). Where hidden (for the
// flat ops: n) % 4 == 0 and every pointer is 16-byte aligned the kernels move float4s; otherwise
// single floats. The row kernels (layernorm, softmax, the fused layernorm and softmax chains)
// run one block per row, so rows <= 2^31 − 1; a bad rows or p throws std::invalid_argument.
#include <cstddef>
#include <cstdint>

namespace aiopt::kernels::cuda {

// ---- one op per kernel (fusion_ops.cu), the unfused chains' passes

// y = x + b. x, y: (rows, hidden); b: (hidden).
void bias_add(const float* x, const float* b, float* y, std::size_t rows, std::size_t hidden, void* stream);
// y = gelu_tanh(x). x, y: (n).
void gelu_tanh(const float* x, float* y, std::size_t n, void* stream);
// Inverted dropout with the counter-based mask of kernels/cpu/elementwise.hpp: element i is kept
// iff rng::uniform(seed, i) >= p, scaled by 1/(1-p). x, y: (n).
void dropout(const float* x, float* y, std::size_t n, float p, std::uint64_t seed, void* stream);
// y = a + b. a, b, y: (n).
void residual_add(const float* a, const float* b, float* y, std::size_t n, void* stream);
// y = s·x. x, y: (n).
void scale(const float* x, float* y, std::size_t n, float s, void* stream);
// Causal mask: row r is query q = r % hidden; keys j > q become −inf. x, y: (rows, hidden).
void causal_mask(const float* x, float* y, std::size_t rows, std::size_t hidden, void* stream);
// LayerNorm of each row. x, y: (rows, hidden); gamma, beta: (hidden).
void layernorm(const float* x, const float* gamma, const float* beta, float* y, std::size_t rows,
               std::size_t hidden, float eps, void* stream);
// Softmax of each row. x, y: (rows, hidden).
void softmax(const float* x, float* y, std::size_t rows, std::size_t hidden, void* stream);

// ---- one kernel per chain (fused_chains.cu)

// y = gelu_tanh(x + b).
void bias_gelu_fused(const float* x, const float* b, float* y, std::size_t rows, std::size_t hidden,
                     void* stream);
// y = LayerNorm(residual + dropout(x + b)) · gamma + beta; dropout index = flat element index.
void bias_dropout_residual_layernorm_fused(const float* x, const float* b, const float* residual,
                                           const float* gamma, const float* beta, float* y,
                                           std::size_t rows, std::size_t hidden, float p,
                                           std::uint64_t seed, float eps, void* stream);
// y = softmax(causal_mask(s · x)) per row.
void scale_mask_softmax_fused(const float* x, float* y, std::size_t rows, std::size_t hidden, float s,
                              void* stream);

}  // namespace aiopt::kernels::cuda
