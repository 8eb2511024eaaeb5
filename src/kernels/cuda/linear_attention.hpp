#pragma once
// Linear attention on CUDA (TECHNIQUES.md §8), callable from plain C++: pointers are device
// pointers, `stream` is a cudaStream_t (nullptr: the default stream); every cuBLAS call and every
// launch is checked. The math, layouts and workspace layouts are those of the CPU kernels
// (kernels/cpu/linear_attention.hpp, which also holds the shape): products by cuBLAS (fp32, no
// TF32), feature maps, normalizers and the scan over chunks by small kernels here.
#include <cstddef>

#include "kernels/attention_shape.hpp"
#include "kernels/cpu/linear_attention.hpp"

namespace aiopt::kernels::cuda {

using cpu::FavorRole;
using cpu::LinearAttentionShape;

// φ(x) = elu(x) + 1. x, phi: (n).
void elu_feature_map(const float* x, float* phi, std::size_t n, void* stream);

// FAVOR+ positive random features, stabilized as on the CPU. x: (groups, rows, d); w: (m, d);
// phi: (groups, rows, m); workspace: favor_workspace_elements(groups, rows) floats (each row's
// largest exponent, each group's).
std::size_t favor_workspace_elements(std::size_t groups, std::size_t rows);
void favor_feature_map(const float* x, const float* w, float* phi, float* workspace, std::size_t groups,
                       std::size_t rows, std::size_t d, std::size_t m, FavorRole role, void* stream);

// out = φ(Q)(φ(K)ᵀV) / φ(Q)(φ(K)ᵀ1), non-causal or chunked causal; workspace:
// cpu::linear_attention_workspace_elements(shape) floats, laid out as on the CPU.
void linear_attention(const float* phi_q, const float* phi_k, const float* v, float* out, float* workspace,
                      const LinearAttentionShape& shape, void* stream);

// out = softmax(scale · Q (E K)ᵀ) (F V); non-causal self-attention only (std::invalid_argument
// otherwise); workspace: cpu::linformer_workspace_elements(shape, proj_rows) floats.
void linformer_attention(const float* q, const float* k, const float* v, const float* e, const float* f,
                         float* out, float* workspace, const AttentionShape& shape, std::size_t proj_rows,
                         void* stream);

}  // namespace aiopt::kernels::cuda
