#pragma once
// Group-wise int4 weight-only quantization (TECHNIQUES.md §3, int4_weight_only): the weights of a
// linear layer are stored in 4 bits, the activations stay fp32, and a GEMV dequantizes the
// weights in registers, so a decode step (memory-bound on the weights) reads ~1/7 of the fp32
// bytes. As GPTQ/AWQ and llama.cpp's Q4_0/Q4_1 store them, one scale per group of g inputs.
//
// Layout of W (n, k), n outputs of k inputs each (a linear layer's (out, in)), group size g in
// {32, 64, 128}, k % g == 0:
//   packed (n, k/2) uint8: two weights a byte, element 2i of a row in the low nibble of byte i,
//                          element 2i+1 in the high nibble (as core/tensor.hpp packs i4).
//   scales (n, k/g) f16:   one scale s per group of g consecutive inputs of a row.
//   zeros  (n, k/g) uint8: asymmetric mode only, the zero point z in [0, 15], one byte a group.
// Bytes per weight: symmetric 1/2 + 2/g (g = 32: 0.5625, 64: 0.53125, 128: 0.515625);
// asymmetric 1/2 + 3/g (g = 32: 0.59375, 64: 0.546875, 128: 0.5234375). fp32 is 4.
//
// The two modes, for a group of values w:
//   symmetric:  q in [−8, 7], a two's-complement nibble, ŵ = s·q, s = max|w| / 7.
//   asymmetric: q in [0, 15], an unsigned nibble,       ŵ = s·(q − z), s = (hi − lo) / 15,
//               where [lo, hi] is [min w, max w] widened to hold 0 (so that 0 is exact and a
//               constant group has a scale), and z = round(−lo / s).
// q = round(w / s + z) with ties to even, saturated to the range. The scale is stored in f16
// rounded *up* (toward +inf), so max|w| / s <= 7 (symmetric) and (hi − lo) / s <= 15
// (asymmetric) hold for the stored s, subnormal f16 scales included: every w lies within half a
// step of the grid, and
//   |w − ŵ| <= s/2 · (1 + 2^-19)      (the 2^-19 covers the fp32 rounding of w / s, |w / s| <= 15).
// So for y = Ŵx against the fp32 weights: |Δy_j| <= Σ_i |x_i|·s_{j,g(i)}/2·(1 + 2^-19), plus the
// fp32 accumulation error of the kernel (weights_int4.cpp).
// A group with all weights 0 gets s = 0 and q = z (ŵ = 0). A weight that is not finite, or a
// group whose scale exceeds the f16 range (max|w| > 7·65504), is a std::invalid_argument.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/memory.hpp"
#include "kernels/cpu/simd_path.hpp"

namespace aiopt::kernels::cpu {

enum class Int4Mode { symmetric, asymmetric };

struct Int4Matrix {
  std::size_t n = 0, k = 0, group = 0;
  Int4Mode mode = Int4Mode::symmetric;
  memory::Buffer<std::uint8_t> packed;   // (n, k/2)
  memory::Buffer<std::uint16_t> scales;  // (n, k/group) f16 bits
  memory::Buffer<std::uint8_t> zeros;    // (n, k/group); empty when symmetric

  std::size_t groups_per_row() const { return k / group; }
  std::size_t bytes() const { return packed.bytes() + scales.bytes() + zeros.bytes(); }
};

// Bytes per weight of the layout above.
double int4_bytes_per_weight(std::size_t group, Int4Mode mode);

// v rounded to the nearest integer, ties to even, then clamped to [lo, hi]. A NaN is a
// std::invalid_argument.
int round_saturate(float v, int lo, int hi);

// w: (n, k) fp32. group in {32, 64, 128} and k % group == 0, else std::invalid_argument.
// The buffers come from the tracked allocator (core/memory.hpp).
Int4Matrix quantize_int4(const float* w, std::size_t n, std::size_t k, std::size_t group,
                         Int4Mode mode);

// out (n, k) = ŵ, exactly s·(q − z) rounded once to fp32 (bit-identical on every CPU).
void dequantize_int4(const Int4Matrix& w, float* out);
// Rows [row0, row0 + rows) of ŵ into out (rows, k).
void dequantize_int4_rows(const Int4Matrix& w, std::size_t row0, std::size_t rows, float* out);

// y (n) = Ŵ·x (+ b when b is not null); x (k), b (n). OpenMP over output rows. A NaN or inf in x
// makes y NaN (inf·0 is NaN); it is not rejected. A kernel this CPU lacks is a
// std::invalid_argument.
void gemv_int4(const Int4Matrix& w, const float* x, const float* b, float* y,
               SimdPath kernel = SimdPath::automatic);

// y (m, n) = x·Ŵᵀ (+ b); x (m, k). m == 1 is gemv_int4; for m > 1 (a prefill) each thread
// dequantizes a tile of W's rows to fp32 and multiplies it with kernels::cpu::sgemm, so W is
// read once whatever m is.
void gemm_int4(const Int4Matrix& w, const float* x, const float* b, float* y, std::size_t m,
               SimdPath kernel = SimdPath::automatic);

}  // namespace aiopt::kernels::cpu
