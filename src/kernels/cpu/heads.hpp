#pragma once
// Moving between the token-major layout of the projections and the head-major layout of
// attention. C = heads · head_dim.
#include <cstddef>

namespace aiopt::kernels::cpu {

// qkv: (batch, len, 3, heads, head_dim), the fused projection's output (q, then k, then v, each
// C wide). Writes q: (batch, heads, len, head_dim), and k, v into a cache laid out
// (batch, heads, capacity, head_dim) at positions [pos0, pos0 + len); pos0 + len <= capacity.
void split_qkv(const float* qkv, float* q, float* k_cache, float* v_cache, std::size_t batch,
               std::size_t len, std::size_t heads, std::size_t head_dim, std::size_t capacity,
               std::size_t pos0);

// x: (batch, heads, len, head_dim) -> y: (batch, len, heads · head_dim).
void merge_heads(const float* x, float* y, std::size_t batch, std::size_t len, std::size_t heads,
                 std::size_t head_dim);

// The backward of split_qkv with capacity == len and pos0 == 0 (training): q, k, v:
// (batch, heads, len, head_dim) -> qkv: (batch, len, 3, heads, head_dim), written.
void merge_qkv(const float* q, const float* k, const float* v, float* qkv, std::size_t batch,
               std::size_t len, std::size_t heads, std::size_t head_dim);

// The backward of merge_heads: x: (batch, len, heads · head_dim) -> y: (batch, heads, len, head_dim).
void split_heads(const float* x, float* y, std::size_t batch, std::size_t len, std::size_t heads,
                 std::size_t head_dim);

}  // namespace aiopt::kernels::cpu
