#pragma once
// 16-bit weight storage (TECHNIQUES.md §3, variants fp16 and bf16): the weights of a linear layer
// are stored as f16 or bf16 bits, the activations and every sum stay fp32. Each weight is widened
// to fp32 exactly (core/half.hpp) as it is loaded, so the only error against fp32 weights is the
// rounding of the weights when they were stored (relative 2^-11 for f16, 2^-8 for bf16), and the
// product is that of the rounded weights up to the fp32 accumulation error, (k + 2)·u·Σ|w·x|.
// A decode step's GEMV reads half the bytes of fp32.
//
// Layout: w (n, k) std::uint16_t, a linear layer's (out, in), row-major; 2 bytes per weight.
// Widening: f16 through F16C (vcvtph2ps), bf16 by a 16-bit left shift (bf16 is the top half of
// an f32). AVX512-BF16's vdpbf16ps is not used: it would need x rounded to bf16 as well.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/dtype.hpp"
#include "kernels/cpu/simd_path.hpp"

namespace aiopt::kernels::cpu {

// y (n) = W·x (+ b when b is not null); w (n, k) in `dtype` (f16 or bf16, else
// std::invalid_argument), x (k), b (n). OpenMP over output rows. A NaN in x or W gives NaN.
// A kernel this CPU lacks is a std::invalid_argument.
void gemv_half(const std::uint16_t* w, DType dtype, const float* x, const float* b, float* y,
               std::size_t n, std::size_t k, SimdPath kernel = SimdPath::automatic);

// y (m, n) = x·Wᵀ (+ b); x (m, k). m == 1 is gemv_half; for m > 1 each thread widens a tile of
// W's rows to fp32 (with `kernel`'s instructions; the widening is exact, so every kernel gives
// the same tile) and multiplies it with kernels::cpu::sgemm.
void gemm_half(const std::uint16_t* w, DType dtype, const float* x, const float* b, float* y,
               std::size_t m, std::size_t n, std::size_t k, SimdPath kernel = SimdPath::automatic);

}  // namespace aiopt::kernels::cpu
