#pragma once
// bfloat16 storage on the CPU: the top 16 bits of an IEEE fp32 (sign, 8 exponent bits, 7 stored
// mantissa bits), kept in a std::uint16_t. Tensors may be stored as bf16 while all arithmetic
// stays fp32: load widens, store rounds to nearest even. The functions are branch-free bit
// operations, so `#pragma omp simd` loops over them vectorize.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace aiopt::kernels::cpu {

using bf16 = std::uint16_t;

// Exact: every bf16 is an fp32 with a zero low half.
inline float bf16_to_float(bf16 h) { return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16); }

// Round to nearest, ties to even: adding 0x7fff plus the lowest kept bit carries into the kept
// half exactly when the dropped half is above one half ulp, or equal to it with an odd kept half.
// Overflow rounds to ±inf, as IEEE rounding does. A NaN keeps its sign and top payload bits and
// is made quiet, so a payload in the dropped half alone cannot turn it into an infinity.
inline bf16 float_to_bf16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
  return static_cast<bf16>(nan ? (u >> 16) | 0x0040u : rounded);
}

// Storage-generic load and store: T is float (identity) or bf16.
inline float to_float(float v) { return v; }
inline float to_float(bf16 v) { return bf16_to_float(v); }

template <class T>
inline T from_float(float v) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bf16>, "storage is float or bf16");
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    return float_to_bf16(v);
  }
}

// dst = src rounded to T; src, dst: (n). The last step of a row built in an fp32 scratch row.
template <class T>
inline void store_row(const float* src, T* dst, std::size_t n) {
#pragma omp simd
  for (std::size_t j = 0; j < n; ++j) dst[j] = from_float<T>(src[j]);
}

}  // namespace aiopt::kernels::cpu
