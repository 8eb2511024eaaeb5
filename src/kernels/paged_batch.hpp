#pragma once
// One model step over a ragged batch whose keys and values live in a paged KV cache
// (TECHNIQUES.md §11), shared by the CPU and CUDA kernels. Every sequence s of the step brings
// q_len(s) >= 1 new tokens: a prefill chunk or one decode token. Its context after the step is
// context[s] positions, the new ones last, so new row i of s sits at absolute position
// context[s] − q_len(s) + i and (causal) sees the keys at positions <= that one.
//
// Layouts, all row-major:
//   rows of a step: the new tokens of sequence 0, then of sequence 1, …: rows = q_start[seqs]
//   qkv: (rows, 3, heads, head_dim), the fused projection's output
//   q, out: (rows, heads, head_dim) = (rows, channels), so out is already the merged heads
//   k_pool, v_pool: (blocks, heads, block_size, head_dim) f32
// Position p of sequence s lives in block block_tables[table_start[s] + p / block_size], at
// offset p % block_size. The arrays are on the kernel's device (host memory for the CPU kernels).
#include <cstddef>
#include <cstdint>

namespace aiopt::kernels {

struct PagedBatch {
  std::size_t seqs = 0;        // sequences in the step
  std::size_t rows = 0;        // new tokens in the step: q_start[seqs]
  std::size_t heads = 0;
  std::size_t head_dim = 0;
  std::size_t block_size = 0;  // positions per block
  std::size_t blocks = 0;      // blocks in the pool
  float scale = 1.0f;          // softmax scale, 1/sqrt(head_dim) for the model
  const std::int32_t* q_start = nullptr;       // (seqs + 1): s's rows are [q_start[s], q_start[s + 1])
  const std::int32_t* context = nullptr;       // (seqs): s's positions after the step, new ones included
  const std::int32_t* table_start = nullptr;   // (seqs): where s's block table starts in block_tables
  const std::int32_t* block_tables = nullptr;  // every sequence's block ids, one table after another
};

}  // namespace aiopt::kernels
