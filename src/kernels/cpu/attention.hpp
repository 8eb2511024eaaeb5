#pragma once
// Exact scaled-dot-product attention on the CPU, three ways (TECHNIQUES.md §2). Shapes and
// layouts: kernels/attention_shape.hpp. All fp32 in and out.
#include <cstddef>

#include "kernels/attention_shape.hpp"

namespace aiopt::kernels::cpu {

// Float64 throughout: the reference every variant is measured against. out: (B, H, Tq, d).
void attention_reference(const float* q, const float* k, const float* v, double* out,
                         const AttentionShape& shape);

// `naive`: the scores materialized. S = scale·q·kᵀ for all (b, h) by batched GEMM, masked row
// softmax, out = P·v by batched GEMM. `scores` is caller-owned workspace of
// naive_workspace_elements(shape) floats (B·H·Tq·Tk).
std::size_t naive_workspace_elements(const AttentionShape& shape);
void attention_naive(const float* q, const float* k, const float* v, float* out, float* scores,
                     const AttentionShape& shape);

// `flash`: tiled with the online softmax (Dao et al. 2022); never stores more than a q_tile ×
// kv_tile block of scores per thread. Threads over (batch, head, query tile), SIMD inner loops.
// Its small per-thread workspace comes from the tracked allocator, so a memory scope sees it.
// The defaults were the fastest of 64/128 × 64..256 at B1 H8 N2048 d64 on a Zen 5 core: fewer,
// larger BLAS calls per tile, and a 128 × 256 score block (128 KiB) still fits in L2.
struct FlashTiles {
  std::size_t q_tile = 128;
  std::size_t kv_tile = 256;
};
void attention_flash(const float* q, const float* k, const float* v, float* out,
                     const AttentionShape& shape, FlashTiles tiles = {});
// The same, also writing each query row's log-sum-exp of its scaled, masked scores (natural
// log), lse: (B, H, Tq), which the flash backward (attention_backward.hpp) needs.
void attention_flash(const float* q, const float* k, const float* v, float* out, float* lse,
                     const AttentionShape& shape, FlashTiles tiles = {});

// `memory_efficient`: query-chunked (Rabe & Staats 2021): the full softmax over all keys for
// `chunk` queries at a time, so the workspace is chunk × Tk per thread, from the tracked allocator.
void attention_memory_efficient(const float* q, const float* k, const float* v, float* out,
                                const AttentionShape& shape, std::size_t chunk = 128);

// Attention with every score equal: out_i is the mean of the values query i sees (keys j <=
// q_offset + i when causal, a running mean). Not attention but the trivial predictor that an
// approximation of it must beat to be worth anything, and what a kernel that ignored q·k would
// produce. Float64 sums, O(B·H·(Tk + Tq)·d). out: (B, H, Tq, d).
void attention_uniform(const float* v, float* out, const AttentionShape& shape);

}  // namespace aiopt::kernels::cpu
