#pragma once
// A linear layer with a low-rank adapter (LoRA, Hu et al. 2021): the frozen weight W (out, in),
// stored as kernels/cpu/gemm.hpp's linear layers store it, plus the product of two small
// trainable matrices A (rank, in) and B (out, rank), scaled by s (alpha / rank in the paper):
//
//   y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ
//
// Every product goes through cpu::sgemm (OpenBLAS cblas_sgemm), fp32. The intermediate
// u = x·Aᵀ (rows, rank) is what the backward needs besides x, so the forward can keep it.
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <utility>

namespace aiopt::kernels::cpu {

// The dimensions of one adapted layer: x is (rows, in), W (out, in), A (rank, in), B (out, rank),
// y (rows, out), u (rows, rank).
struct LoraShape {
  std::size_t rows = 0;
  std::size_t in = 0;
  std::size_t out = 0;
  std::size_t rank = 0;
};

// Throws std::invalid_argument, naming `who` and the value, unless 1 <= rank <= min(in, out)
// (a rank past that is no longer low: B·A could be any (out, in) matrix at rank min(in, out)).
void check_lora_shape(const LoraShape& shape, const char* who);
// check_lora_shape, then std::invalid_argument naming `who` and the first of the `required`
// pointers (name, pointer) that is null: the checks of every LoRA function on either device.
void check_lora_arguments(const LoraShape& shape, std::initializer_list<std::pair<const char*, const void*>> required,
                          const char* who);

// std::invalid_argument naming `who` when the row stride ldy is below shape.out.
void check_lora_ldy(std::size_t ldy, const LoraShape& shape, const char* who);

// alpha / rank, the paper's scale; std::invalid_argument for rank 0.
float lora_scale(float alpha, std::size_t rank);

// y = x·Wᵀ (+ bias when not null) + scale·u·Bᵀ with u = x·Aᵀ, written to `u` when it is not null
// (for the backward), else kept in scratch from the tracked allocator. When B is all zeros y is
// the plain linear layer's, bit for bit. x, w, a, b_adapter, y are required (not null).
void lora_forward(const float* x, const float* w, const float* bias, const float* a, const float* b_adapter,
                  float scale, float* u, float* y, const LoraShape& shape);

// The backward of lora_forward for the adapter and the input; W and bias are frozen and get no
// gradient. With v = dy·B (rows, rank), in scratch:
//   dA += scale·vᵀ·x      (rank, in)
//   dB += scale·dyᵀ·u     (out, rank)
//   dx  = dy·W + scale·v·A (rows, in), written; skipped when dx is null.
// As linear_backward (gemm.hpp), the parameter gradients accumulate and dx is overwritten.
// u is the forward's x·Aᵀ; when null it is recomputed from x and A (in scratch). x, w (only when
// dx is not null), a, b_adapter, dy, da and db are required.
void lora_backward(const float* x, const float* w, const float* a, const float* b_adapter, const float* u,
                   const float* dy, float scale, float* dx, float* da, float* db, const LoraShape& shape);

// The adapter's term alone, for a layer whose base product is computed elsewhere (one slice of a
// wider output, such as the query part of a fused QKV projection, or a product with quantized
// weights): y[r, j] += scale·(u·Bᵀ)[r, j] for the shape's `out` columns of rows that lie `ldy`
// floats apart (ldy >= out), with u = x·Aᵀ written to `u` when it is not null. x, a, b_adapter
// and y are required. lora_forward is linear() followed by this.
void lora_adapter_forward(const float* x, const float* a, const float* b_adapter, float scale, float* u, float* y,
                          std::size_t ldy, const LoraShape& shape);
// Its backward, with dy's rows `ldy` floats apart and v = dy·B:
//   dA += scale·vᵀ·x,  dB += scale·dyᵀ·u,  dx += scale·v·A (accumulated onto the base layer's dx;
//   skipped when dx is null).
// u null: recomputed from x and A. lora_backward is dx = dy·W followed by this.
void lora_adapter_backward(const float* x, const float* a, const float* b_adapter, const float* u, const float* dy,
                           std::size_t ldy, float scale, float* dx, float* da, float* db, const LoraShape& shape);

// W += scale·B·A: afterwards linear(x, W, bias) computes lora_forward's y with no adapter work.
// shape.rows is not used.
void lora_merge(float* w, const float* a, const float* b_adapter, float scale, const LoraShape& shape);
// W −= scale·B·A, undoing lora_merge up to fp32 rounding: each element comes back within
// (rank + 2)·u·(2·|W| + 3·S) to first order, u = 2^-24 and S = scale·Σ_k |B_ik·A_kj| (two sums of
// rank + 1 terms).
void lora_unmerge(float* w, const float* a, const float* b_adapter, float scale, const LoraShape& shape);

// The paper's initialisation: A uniform in [−bound, bound) with bound = 1/√in, as PyTorch's
// kaiming_uniform_(a = √5) gives nn.Linear's weight, and B zeros, so that the adapted layer starts
// as the frozen one. A's element i is bound·(2·rng::uniform(seed, i) − 1) (core/rng.hpp), one
// rounding, so any device computing the same element gets the same bits.
void lora_init(float* a, float* b_adapter, std::uint64_t seed, const LoraShape& shape);
// bound = 1/√in rounded to float, the bound lora_init uses.
float lora_init_bound(std::size_t in);

}  // namespace aiopt::kernels::cpu
