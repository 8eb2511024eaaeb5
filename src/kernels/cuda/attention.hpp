#pragma once
// Attention on CUDA (TECHNIQUES.md §2), callable from plain C++: pointers are device pointers,
// `stream` is a cudaStream_t (nullptr: the default stream); every call and launch is checked.
// Shapes and layouts: kernels/attention_shape.hpp. `dtype` is f32, f16 or bf16 (q, k, v, out
// all stored in it; f16/bf16 accumulate in fp32); others throw std::invalid_argument.
#include <cstddef>

#include "core/dtype.hpp"
#include "kernels/attention_shape.hpp"

namespace aiopt::kernels::cuda {

// `naive`: S = scale·q·kᵀ by cuBLAS strided-batched GEMM into `scores` (B·H·Tq·Tk elements of
// dtype), masked softmax kernel in place, out = P·v by cuBLAS.
std::size_t naive_workspace_elements(const AttentionShape& shape);
void attention_naive(const void* q, const void* k, const void* v, void* out, void* scores, DType dtype,
                     const AttentionShape& shape, void* stream);
// fp32, with the arguments of cpu::attention_naive.
inline void attention_naive(const float* q, const float* k, const float* v, float* out, float* scores,
                            const AttentionShape& shape, void* stream) {
  attention_naive(q, k, v, out, scores, DType::f32, shape, stream);
}

// `flash`: our kernel, online softmax, no N×N storage. f32: CUDA cores; f16/bf16: tensor cores
// (mma), head_dim 64 or 128 (others throw std::invalid_argument).
void attention_flash(const void* q, const void* k, const void* v, void* out, DType dtype,
                     const AttentionShape& shape, void* stream);
// fp32, with the arguments of cpu::attention_flash.
inline void attention_flash(const float* q, const float* k, const float* v, float* out, const AttentionShape& shape,
                            void* stream) {
  attention_flash(q, k, v, out, DType::f32, shape, stream);
}
// fp32 flash that also writes each query row's log-sum-exp of its scaled, masked scores (natural
// log), lse: (B, H, Tq), which the flash backward (attention_backward.hpp) needs.
void attention_flash(const float* q, const float* k, const float* v, float* out, float* lse,
                     const AttentionShape& shape, void* stream);

// `memory_efficient`: `chunk` queries at a time through the naive path; workspace chunk·Tk per
// (b, h) in `scores` (memory_efficient_workspace_elements).
std::size_t memory_efficient_workspace_elements(const AttentionShape& shape, std::size_t chunk);
void attention_memory_efficient(const void* q, const void* k, const void* v, void* out, void* scores,
                                DType dtype, const AttentionShape& shape, std::size_t chunk,
                                void* stream);

}  // namespace aiopt::kernels::cuda
