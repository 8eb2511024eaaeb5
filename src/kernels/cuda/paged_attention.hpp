#pragma once
// The paged ragged-batch kernels on CUDA, mirroring kernels/cpu/paged_attention.hpp (same
// functions, layouts and results within fp32 rounding), plus the stream. Device pointers, the
// PagedBatch arrays included; `stream` a cudaStream_t (nullptr: the default stream); every launch
// is checked. Tokens and positions live on the device: the host checks them before upload (nn
// does), and the kernel clamps one out of range.
#include <cstddef>
#include <cstdint>

#include "kernels/paged_batch.hpp"

namespace aiopt::kernels::cuda {

void embedding_at(const std::int32_t* tokens, const std::int32_t* positions, const float* wte, const float* wpe,
                  float* y, std::size_t rows, std::size_t vocab, std::size_t context, std::size_t channels,
                  void* stream);

// The launchers cannot read the batch's arrays (they are on the device): they check heads,
// head_dim and block_size positive and seqs >= 1 for rows >= 1 (std::invalid_argument), and
// trust q_start, context and the tables to pass kernels/cpu/paged_attention.hpp's checks
// (cpu::check_paged_batch on the host arrays before upload).
void paged_kv_write(const float* qkv, float* q, float* k_pool, float* v_pool, const PagedBatch& batch, void* stream);

// One thread block per (row, head): decode rows (q_len 1) of many sequences fill the device
// without a split over keys. Any context length (keys in tiles of 32 per warp, online softmax)
// and any head_dim (output slices of 128 dimensions beyond 128, each recomputing the scores) up
// to the 48 KiB of shared memory a block may take (head_dim about 11000, else
// std::invalid_argument); rows·heads <= 2^31 − 1.
void paged_attention(const float* q, const float* k_pool, const float* v_pool, float* out, const PagedBatch& batch,
                     void* stream);

void gather_rows(const float* x, const std::int32_t* rows, float* y, std::size_t n, std::size_t channels,
                 void* stream);

}  // namespace aiopt::kernels::cuda
