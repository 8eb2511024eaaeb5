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
void paged_kv_write(const float* qkv, float* q, float* k_pool, float* v_pool, const PagedBatch& batch, void* stream);
void paged_attention(const float* q, const float* k_pool, const float* v_pool, float* out, const PagedBatch& batch,
                     void* stream);
void gather_rows(const float* x, const std::int32_t* rows, float* y, std::size_t n, std::size_t channels,
                 void* stream);

}  // namespace aiopt::kernels::cuda
