#pragma once
// Symmetric int8 quantization (TECHNIQUES.md §3): a value x is stored as q = round_even(x / s)
// saturated to [−127, 127] with one fp32 scale s per row (or per tensor), and read back as s·q.
// −128 is never produced, so q and −q are both representable (the AVX2 GEMM negates it).
// A value within ±127.5·s is off by at most s/2 (plus the rounding of x / s, < 128·2^-24·s).
//
// Formats:
//   weights, per output channel: w (n, k) f32 -> q (n, k) int8, scale (n) f32 with
//     s_j = max_p |w[j, p]| / 127: 1 byte per weight + 4/k bytes of scale (1.001 at k = 4096).
//     The GEMM takes them packed (gemm_int8.hpp, PackedInt8Weights).
//   activations, QuantizedActivations: x (m, k) f32 -> biased (m, k_padded) uint8 holding q + 128
//     (in [1, 255]; the padding past k holds 128, that is q = 0), scale (m) f32:
//     1 byte per activation + 4/k bytes of scale. The scale is per token (dynamic: max|row| / 127
//     computed from the row at run time) or one for the tensor (static: given, e.g. from
//     calibration, and copied to every row). The bias by 128 is the operand VNNI's vpdpbusd wants
//     (unsigned × signed bytes); gemm_int8 removes it with a per-channel compensation term.
//
// Non-finite input (NaN, ±inf) throws std::invalid_argument: a NaN has no int8 value, and an
// infinity would make a dynamic scale infinite (every other value of its row would become 0).
// A row of zeros, or one whose scale underflows to 0 (max|x| < 127·2^-149), gets scale 0 and q = 0.
#include <cstddef>
#include <cstdint>

#include "core/memory.hpp"

namespace aiopt::kernels::cpu {

inline constexpr int int8_max = 127;
inline constexpr int int8_activation_bias = 128;  // biased = q + 128

// The scale that maps ±max_abs to ±127: max_abs / 127.
float int8_scale(float max_abs);

// Per-row symmetric quantization: w (rows, cols) -> q (rows, cols), scale (rows).
void quantize_rows_int8(const float* w, std::int8_t* q, float* scale, std::size_t rows, std::size_t cols);
// w (rows, cols) = scale[row]·q.
void dequantize_rows_int8(const std::int8_t* q, const float* scale, float* w, std::size_t rows,
                          std::size_t cols);

// Activations in the int8 GEMM's operand format (see above). Allocate once for a shape, then
// quantize into it as often as needed (each decode step).
struct QuantizedActivations {
  QuantizedActivations() = default;
  QuantizedActivations(std::size_t m, std::size_t k);

  std::size_t m = 0, k = 0;
  std::size_t k_padded = 0;             // k rounded up to a multiple of 4 (one vpdpbusd group)
  memory::Buffer<std::uint8_t> biased;  // (m, k_padded): q + 128
  memory::Buffer<float> scale;          // (m)

  std::int8_t value(std::size_t i, std::size_t p) const {  // q of row i, column p
    return static_cast<std::int8_t>(int{biased[i * k_padded + p]} - int8_activation_bias);
  }
  std::size_t bytes() const { return biased.bytes() + scale.bytes(); }
};

// Dynamic (per token): x (out.m, out.k); each row's scale is max|row| / 127.
void quantize_activations_dynamic(const float* x, QuantizedActivations& out);

// What static quantization clipped: values with |x / s| > 127.5, whose error exceeds the s/2 of
// ordinary rounding because they saturated at ±127.
struct ClipCount {
  std::size_t clipped = 0;
  std::size_t total = 0;
  double fraction() const {
    return total == 0 ? 0.0 : static_cast<double>(clipped) / static_cast<double>(total);
  }
};

// Static (per tensor): x (out.m, out.k) with the one given scale (> 0 and finite, else
// std::invalid_argument); values beyond ±127.5·scale saturate and are counted.
ClipCount quantize_activations_static(const float* x, float scale, QuantizedActivations& out);

// ---- fp8 e4m3: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits; largest value 448, no
// infinity, 0x7f/0xff NaN. The format of the CUDA fp8 GEMM (kernels/cuda/gemm_lt.hpp); quantized
// here, on the host, as kernels/cuda/quantize.hpp does on the device, bit for bit.

inline constexpr float e4m3_max = 448.0f;

// v as e4m3 bits: rounded to nearest even, saturated to ±448 (±inf too), NaN to NaN (0x7f with
// v's sign): cuda_fp8.h's __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3).
std::uint8_t to_e4m3(float v);

// One scale for the tensor: x (count) -> q (count) e4m3 bits with s = max|x| / 448 and
// q = e4m3(x / s) (x / s one IEEE division), all zeros when s = 0; returns s. Non-finite input
// throws std::invalid_argument, as the int8 quantizers do.
float quantize_e4m3(const float* x, std::uint8_t* q, std::size_t count);

}  // namespace aiopt::kernels::cpu
