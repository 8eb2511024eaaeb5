#pragma once
// 16-bit floats kept as std::uint16_t bits, converted to and from f32, in which all arithmetic
// is done.
//   f16  (IEEE 754 binary16): sign, 5 exponent bits (bias 15), 10 mantissa bits; max 65504,
//        smallest normal 2^-14, smallest subnormal 2^-24.
//   bf16 (bfloat16): the top half of an f32: sign, 8 exponent bits, 7 mantissa bits.
// The scalar functions are portable bit operations (no FP environment, no intrinsics), usable in
// any translation unit, CUDA host code included. The bulk `convert`s use F16C and AVX512-BF16
// when the compiler targets them, and these scalar functions otherwise.
#include <bit>
#include <cstddef>
#include <cstdint>

#include "core/dtype.hpp"

namespace aiopt {

// ---- bf16

// Exact: every bf16 is an f32 with a zero low half.
inline float bf16_to_float(std::uint16_t h) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16);
}

// Round to nearest, ties to even: adding 0x7fff plus the lowest kept bit carries into the kept
// half exactly when the dropped half is above one half ulp, or equal to it with an odd kept half.
// Overflow rounds to ±inf, as IEEE rounding does; f32 subnormals round to bf16 subnormals. A NaN
// keeps its sign and top payload bits and is made quiet, so a payload in the dropped half alone
// cannot turn it into an infinity. Branch-free, so `#pragma omp simd` loops over it vectorize.
inline std::uint16_t float_to_bf16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
  return static_cast<std::uint16_t>(nan ? (u >> 16) | 0x0040u : rounded);
}

// ---- f16

// Exact: every f16 is an f32. Subnormals (exponent field 0) are normalized; inf keeps its sign,
// and a NaN its sign and payload, made quiet as F16C's vcvtph2ps does.
inline float f16_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  std::uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1fu && mantissa != 0) return std::bit_cast<float>(sign | 0x7fc00000u | (mantissa << 13));
  if (exponent == 0x1fu) return std::bit_cast<float>(sign | 0x7f800000u);
  if (exponent != 0) return std::bit_cast<float>(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  if (mantissa == 0) return std::bit_cast<float>(sign);
  // A subnormal is mantissa · 2^-24: shift its leading 1 up to the implicit bit (bit 10).
  std::uint32_t e = 113;  // f32 biased exponent of 2^-14
  while ((mantissa & 0x400u) == 0) {
    mantissa <<= 1;
    --e;
  }
  return std::bit_cast<float>(sign | (e << 23) | ((mantissa & 0x3ffu) << 13));
}

// Round to nearest, ties to even (IEEE 754 default rounding). Magnitudes from 65520 up round to
// ±inf; below 2^-14 the result is an f16 subnormal (or ±0), rounded the same way. A NaN keeps its
// sign and top 10 payload bits and is made quiet, as F16C's vcvtps2ph does.
inline std::uint16_t float_to_f16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t magnitude = u & 0x7fffffffu;
  const std::uint32_t exponent = magnitude >> 23;  // biased by 127
  if (magnitude > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));
  if (magnitude >= 0x47800000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 2^16, inf
  if (exponent >= 113) {
    // Normal: rebias the exponent (127 -> 15) and round away the 13 low mantissa bits; a carry
    // out of the mantissa steps the exponent, up to inf from 65520 on.
    const std::uint32_t rebased = magnitude - (112u << 23);
    const std::uint32_t rounded = (rebased + 0xfffu + ((rebased >> 13) & 1u)) >> 13;
    return static_cast<std::uint16_t>(sign | rounded);
  }
  // Subnormal or zero: the value is m · 2^(exponent - 150) with m the 24-bit significand, that is
  // (m >> shift) units of 2^-24 with shift = 126 - exponent. From shift 25 on it is below half a
  // unit and rounds to zero (f32 subnormals included).
  if (exponent < 102) return sign;
  const std::uint32_t m = (magnitude & 0x7fffffu) | 0x800000u;
  const std::uint32_t shift = 126 - exponent;
  const std::uint32_t kept = m >> shift;
  const std::uint32_t dropped = m & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1);
  const bool up = dropped > half || (dropped == half && (kept & 1u));
  return static_cast<std::uint16_t>(sign | (kept + (up ? 1u : 0u)));
}

// ---- bulk: dst = src converted; src, dst: (n); dtype is f16 or bf16 (else std::logic_error).
// Bit-identical to the scalar functions on every input, with one exception: AVX512-BF16's
// vcvtneps2bf16 treats f32 subnormal inputs as zero, so with __AVX512BF16__ a subnormal f32
// becomes a bf16 ±0 where float_to_bf16 rounds it to a bf16 subnormal.
void convert(const float* src, std::uint16_t* dst, std::size_t n, DType dtype);
void convert(const std::uint16_t* src, float* dst, std::size_t n, DType dtype);

}  // namespace aiopt
