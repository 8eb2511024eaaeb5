#pragma once
// Moves between the token-major projections and the head-major attention layout on CUDA,
// mirroring kernels/cpu/heads.hpp (same functions and layouts), plus the stream. Device pointers,
// `stream` a cudaStream_t (nullptr: the default stream); every launch is checked. Pure data
// movement, so the results equal the CPU's bit for bit.
#include <cstddef>

namespace aiopt::kernels::cuda {

// qkv: (batch, len, 3, heads, head_dim) -> q: (batch, heads, len, head_dim) and
// k_cache, v_cache: (batch, heads, capacity, head_dim) at positions pos0 + t.
void split_qkv(const float* qkv, float* q, float* k_cache, float* v_cache, std::size_t batch,
               std::size_t len, std::size_t heads, std::size_t head_dim, std::size_t capacity,
               std::size_t pos0, void* stream);
// x: (batch, heads, len, head_dim) -> y: (batch, len, heads·head_dim).
void merge_heads(const float* x, float* y, std::size_t batch, std::size_t len, std::size_t heads,
                 std::size_t head_dim, void* stream);
// The backward of split_qkv (capacity len, pos0 0): q, k, v -> qkv.
void merge_qkv(const float* q, const float* k, const float* v, float* qkv, std::size_t batch,
               std::size_t len, std::size_t heads, std::size_t head_dim, void* stream);
// The backward of merge_heads.
void split_heads(const float* x, float* y, std::size_t batch, std::size_t len, std::size_t heads,
                 std::size_t head_dim, void* stream);

}  // namespace aiopt::kernels::cuda
