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

// Checks of paged_kv_write and paged_attention, made before anything is read through a table or
// written: heads, head_dim and block_size positive (std::invalid_argument); q_start[0] == 0,
// every q_len(s) >= 1, q_start[seqs] == rows and q_len(s) <= context[s] (std::invalid_argument);
// table_start[s] >= 0 and every block id a sequence's context reaches, block_tables[table_start[s]
// + p / block_size] for p < context[s], in [0, blocks) (std::out_of_range). Not checkable here:
// that a table is as long as that (the tables carry no lengths), and that no two new rows of a
// step share a slot (a block shared by two sequences must only be read).
// check_paged_batch makes them alone, for a batch built on the host for the CUDA kernels.
void check_paged_batch(const PagedBatch& batch);

// Splits qkv into q and writes every new row's key and value into its slot of the pools.
void paged_kv_write(const float* qkv, float* q, float* k_pool, float* v_pool, const PagedBatch& batch);

// Causal attention of every new row over its own sequence's keys through the block table, in
// fp32 with scale batch.scale. out: (rows, heads, head_dim). Threads over (row, head); each takes
// its row's scores and their max before any exponential (numerically safe for any score size),
// and its loops over head_dim vectorize. One row's scores per thread are the workspace, from the
// tracked allocator.
void paged_attention(const float* q, const float* k_pool, const float* v_pool, float* out, const PagedBatch& batch);

// y[i] = x[rows[i]] for i < n: the rows the LM head needs. x: (>, channels); y: (n, channels).
// rows is not checked (x's row count is not passed).
void gather_rows(const float* x, const std::int32_t* rows, float* y, std::size_t n, std::size_t channels);

}  // namespace aiopt::kernels::cpu
