#pragma once
// Quantizing fp32 tensors on a CUDA device for the int8 and fp8 GEMMs (kernels/cuda/gemm_lt.hpp),
// and turning the int8 GEMM's int32 sums back into fp32 (TECHNIQUES.md §3). Device pointers,
// `stream` a cudaStream_t (nullptr: default); every launch is checked. Formats:
//
//   int8, per row (dynamic): s_i = max_j |x_ij| / 127, q_ij = round_even(x_ij / s_i) saturated
//     to [−127, 127], x / s one IEEE division. An all-zero row gets s = 0 and q = 0. A row holding
//     a NaN gets s = NaN, one holding an infinity (and no NaN) s = inf, and q = 0 in both cases:
//     int8 cannot carry a non-finite value, the scale does, so it reaches the dequantized output.
//   int8, static: one given scale s > 0 for the tensor (from calibration), q = round_even(x / s)
//     saturated to [−127, 127]; ±inf saturates, a NaN becomes 0.
//   fp8 e4m3 (1 sign, 4 exponent bits with bias 7, 3 mantissa bits; max 448, no infinity):
//     q = e4m3(x / s), rounded to nearest even and saturated to ±448 (cuda_fp8.h's
//     __NV_SATFINITE); a NaN stays NaN. s is one scale for the tensor, given (static) or computed
//     as max|x| / 448 (dynamic; a NaN anywhere makes it NaN). s = 0 (an all-zero tensor) gives
//     q = 0. The real value is s·e4m3_value(q), which is what cuBLASLt's A/B scale multiplies by.
//
// Scales live on the device, so that a dynamic scale feeds the GEMM without a host round trip.
#include <cstddef>
#include <cstdint>

namespace aiopt::kernels::cuda {

// x: (rows, cols) -> q: (rows, cols), scale: (rows).
void quantize_int8_rows(const float* x, std::int8_t* q, float* scale, std::size_t rows, std::size_t cols,
                        void* stream);

// x: (count) -> q: (count); scale: (1), device.
void quantize_int8_static(const float* x, const float* scale, std::int8_t* q, std::size_t count, void* stream);

// y (m, n) = acc (m, n) dequantized: y_ij = fma(float(acc_ij), x_scale_i · w_scale_j, b_j), each
// operation in fp32 with rounding to nearest (float(acc) rounds above 2^24). x_scale: (m) when
// x_scale_per_row, else (1) for the whole of x (static); w_scale: (n); bias: (n) or null (b = 0).
void dequantize_int32(const std::int32_t* acc, const float* x_scale, bool x_scale_per_row, const float* w_scale,
                      const float* bias, float* y, std::size_t m, std::size_t n, void* stream);

// x: (count) -> q: (count) e4m3 bits; *scale (device, 1) = max|x| / 448, written before q.
void quantize_fp8_e4m3(const float* x, std::uint8_t* q, float* scale, std::size_t count, void* stream);

// x: (count) -> q: (count) e4m3 bits with the given scale (device, 1).
void quantize_fp8_e4m3_static(const float* x, const float* scale, std::uint8_t* q, std::size_t count,
                              void* stream);

}  // namespace aiopt::kernels::cuda
