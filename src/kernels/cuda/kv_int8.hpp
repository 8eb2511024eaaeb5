#pragma once
// The int8 KV cache on CUDA (TECHNIQUES.md §1, kv_cache_int8), mirroring kernels/cpu/kv_int8.hpp
// (same functions, row format and layouts), plus the stream. Device pointers, `stream` a
// cudaStream_t (nullptr: the default stream); every launch is checked.
#include <cstddef>
#include <cstdint>

#include "kernels/attention_shape.hpp"

namespace aiopt::kernels::cuda {

// split_qkv with k and v quantized per row into the cache at pos0 + t: q: (batch, heads, len,
// head_dim); k8, v8: (batch, heads, capacity, head_dim); k_scale, v_scale: (batch, heads, capacity).
void split_qkv_int8(const float* qkv, float* q, std::int8_t* k8, float* k_scale, std::int8_t* v8,
                    float* v_scale, std::size_t batch, std::size_t len, std::size_t heads,
                    std::size_t head_dim, std::size_t capacity, std::size_t pos0, void* stream);

// Attention over the int8 cache, dequantizing as it reads; shapes as kernels/attention_shape.hpp.
void attention_int8_kv(const float* q, const std::int8_t* k8, const float* k_scale,
                       const std::int8_t* v8, const float* v_scale, float* out,
                       const AttentionShape& shape, void* stream);

}  // namespace aiopt::kernels::cuda
