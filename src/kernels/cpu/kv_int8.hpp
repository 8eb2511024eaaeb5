#pragma once
// An int8 KV cache (TECHNIQUES.md §1, kv_cache_int8). Each cached row — one position of one head,
// head_dim values — is stored as int8 with one fp32 scale: s = max|x| / 127, q = round_even(x / s)
// saturated to [−127, 127]; x ≈ s·q, error at most s/2 per value. Layouts:
//   k8, v8:         (batch, heads, capacity, head_dim) int8
//   k_scale, v_scale: (batch, heads, capacity) fp32
#include <cstddef>
#include <cstdint>

#include "kernels/attention_shape.hpp"

namespace aiopt::kernels::cpu {

// Quantize one row of n values; an all-zero row gets scale 0 and zeros.
void quantize_row_int8(const float* x, std::int8_t* q, float* scale, std::size_t n);

// As cpu::split_qkv (heads.hpp), with k and v quantized into the int8 cache.
void split_qkv_int8(const float* qkv, float* q, std::int8_t* k8, float* k_scale, std::int8_t* v8,
                    float* v_scale, std::size_t batch, std::size_t len, std::size_t heads,
                    std::size_t head_dim, std::size_t capacity, std::size_t pos0);

// Attention with k and v read from the int8 cache and dequantized as they are used (fp32
// arithmetic); q, out fp32. Shape as kernels/attention_shape.hpp.
void attention_int8_kv(const float* q, const std::int8_t* k8, const float* k_scale,
                       const std::int8_t* v8, const float* v_scale, float* out,
                       const AttentionShape& shape);

}  // namespace aiopt::kernels::cpu
