#pragma once
// The GPT model's own CUDA ops besides GEMM, attention and the fusion ops (fusion_launchers.hpp:
// layernorm, gelu_tanh, residual_add): device pointers, `stream` a cudaStream_t; every launch
// checked. Each mirrors the CPU function of the same name (kernels/cpu/embedding.hpp, heads.hpp,
// kv_int8.hpp), with the same layouts, and is tested against it.
#include <cstddef>
#include <cstdint>

#include "kernels/attention_shape.hpp"

namespace aiopt::kernels::cuda {

// tokens is a device array; a token outside [0, vocab) is clamped to vocab − 1 on the device (the
// host checks tokens before upload; nn does).
void embedding(const std::int32_t* tokens, const float* wte, const float* wpe, float* y,
               std::size_t batch, std::size_t len, std::size_t pos0, std::size_t vocab,
               std::size_t channels, void* stream);

void split_qkv(const float* qkv, float* q, float* k_cache, float* v_cache, std::size_t batch,
               std::size_t len, std::size_t heads, std::size_t head_dim, std::size_t capacity,
               std::size_t pos0, void* stream);

void merge_heads(const float* x, float* y, std::size_t batch, std::size_t len, std::size_t heads,
                 std::size_t head_dim, void* stream);

void split_qkv_int8(const float* qkv, float* q, std::int8_t* k8, float* k_scale, std::int8_t* v8,
                    float* v_scale, std::size_t batch, std::size_t len, std::size_t heads,
                    std::size_t head_dim, std::size_t capacity, std::size_t pos0, void* stream);

void attention_int8_kv(const float* q, const std::int8_t* k8, const float* k_scale,
                       const std::int8_t* v8, const float* v_scale, float* out,
                       const AttentionShape& shape, void* stream);

}  // namespace aiopt::kernels::cuda
