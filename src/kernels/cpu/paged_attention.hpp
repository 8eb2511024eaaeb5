#pragma once
// A ragged batch's attention through block tables (kernels/paged_batch.hpp), on the CPU:
// iteration-level batching's prefill chunks and decode tokens of many sequences in one call.
#include <cstddef>
#include <cstdint>

#include "kernels/paged_batch.hpp"

namespace aiopt::kernels::cpu {

// y[r] = wte[tokens[r]] + wpe[positions[r]] for rows r < rows. tokens in [0, vocab) and positions
// in [0, context) (else std::out_of_range, checked before writing); y: (rows, channels).
void embedding_at(const std::int32_t* tokens, const std::int32_t* positions, const float* wte, const float* wpe,
                  float* y, std::size_t rows, std::size_t vocab, std::size_t context, std::size_t channels);

// Splits qkv into q and writes every new row's key and value into its slot of the pools.
void paged_kv_write(const float* qkv, float* q, float* k_pool, float* v_pool, const PagedBatch& batch);

// Causal attention of every new row over its own sequence's keys through the block table; online
// softmax in fp32. out: (rows, heads, head_dim).
void paged_attention(const float* q, const float* k_pool, const float* v_pool, float* out, const PagedBatch& batch);

// y[i] = x[rows[i]] for i < n: the rows the LM head needs. x: (>, channels); y: (n, channels).
void gather_rows(const float* x, const std::int32_t* rows, float* y, std::size_t n, std::size_t channels);

}  // namespace aiopt::kernels::cpu
