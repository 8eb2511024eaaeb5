#pragma once
// The low-rank adapter of a linear layer on CUDA, mirroring kernels/cpu/lora.hpp (same layouts,
// shape checks and contract), plus the stream. Device pointers, `stream` a cudaStream_t (nullptr:
// the default stream). The products are kernels/cuda/gemm.hpp's fp32 cuBLAS calls (no TF32);
// every call and launch is checked. Scratch comes from the tracked allocator.
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/lora.hpp"

namespace aiopt::kernels::cuda {

using cpu::LoraShape;

// y = x·Wᵀ (+ bias) + scale·u·Bᵀ, u = x·Aᵀ written to `u` when not null (else scratch).
void lora_forward(const float* x, const float* w, const float* bias, const float* a, const float* b_adapter,
                  float scale, float* u, float* y, const LoraShape& shape, void* stream);

// dA += scale·(dy·B)ᵀ·x, dB += scale·dyᵀ·u, dx = dy·W + scale·(dy·B)·A (written; skipped when
// null). u null: recomputed from x and A.
void lora_backward(const float* x, const float* w, const float* a, const float* b_adapter, const float* u,
                   const float* dy, float scale, float* dx, float* da, float* db, const LoraShape& shape,
                   void* stream);

// The adapter's term alone on rows `ldy` floats apart (cpu::lora_adapter_forward), and its
// backward with dx accumulated (cpu::lora_adapter_backward).
void lora_adapter_forward(const float* x, const float* a, const float* b_adapter, float scale, float* u, float* y,
                          std::size_t ldy, const LoraShape& shape, void* stream);
void lora_adapter_backward(const float* x, const float* a, const float* b_adapter, const float* u, const float* dy,
                           std::size_t ldy, float scale, float* dx, float* da, float* db, const LoraShape& shape,
                           void* stream);

// W += scale·B·A, and W −= scale·B·A.
void lora_merge(float* w, const float* a, const float* b_adapter, float scale, const LoraShape& shape, void* stream);
void lora_unmerge(float* w, const float* a, const float* b_adapter, float scale, const LoraShape& shape,
                  void* stream);

// cpu::lora_init on the device: the same bits for the same seed.
void lora_init(float* a, float* b_adapter, std::uint64_t seed, const LoraShape& shape, void* stream);

}  // namespace aiopt::kernels::cuda
