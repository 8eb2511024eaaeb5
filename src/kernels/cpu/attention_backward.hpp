#pragma once
// The backward of scaled-dot-product attention, O = softmax(scale·Q·Kᵀ + mask)·V, for training:
// self-attention with q_len == kv_len == kv_capacity and q_offset 0 (AttentionShape::self), causal
// or not (others throw std::invalid_argument). With P the softmax and D_i = Σ_j dO_ij·O_ij:
//   dV = Pᵀ·dO,  dP = dO·Vᵀ,  dS = P ∘ (dP − D),  dQ = scale·dS·K,  dK = scale·dSᵀ·Q.
// q, k, v, out, dout, dq, dk, dv: (B, H, N, d); dq, dk, dv are written.
#include <cstddef>

#include "kernels/attention_shape.hpp"
#include "kernels/cpu/attention.hpp"

namespace aiopt::kernels::cpu {

// `naive`: recomputes P into `scores` (naive_workspace_elements(shape) floats, B·H·N·N) by batched
// GEMM, then the formulas above with batched GEMMs; dS overwrites P in place.
void attention_naive_backward(const float* q, const float* k, const float* v, const float* out,
                              const float* dout, float* dq, float* dk, float* dv, float* scores,
                              const AttentionShape& shape);

// `flash` (Dao 2022, FlashAttention-2's backward): recomputes P tile by tile from the forward's
// lse (B, H, N) (attention_flash with lse), so no N×N buffer exists; per-thread tile workspace
// from the tracked allocator. Threads over (batch, head, key tile): each owns its dK, dV rows, and
// dQ is reduced per (batch, head) in a fixed order, so results are bit-identical for any thread
// count.
void attention_flash_backward(const float* q, const float* k, const float* v, const float* out,
                              const float* dout, const float* lse, float* dq, float* dk, float* dv,
                              const AttentionShape& shape, FlashTiles tiles = {});

// Float64 throughout from the definition; the tests' reference.
void attention_backward_reference(const float* q, const float* k, const float* v, const float* dout,
                                  double* dq, double* dk, double* dv, const AttentionShape& shape);

}  // namespace aiopt::kernels::cpu
