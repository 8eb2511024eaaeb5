#pragma once
// bfloat16 storage on the CPU: the top 16 bits of an IEEE fp32 (sign, 8 exponent bits, 7 stored
// mantissa bits), kept in a std::uint16_t. Tensors may be stored as bf16 while all arithmetic
// stays fp32: load widens, store rounds to nearest even (core/half.hpp: bf16_to_float,
// float_to_bf16). Both are branch-free bit operations, so `#pragma omp simd` loops over them
// vectorize.
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "core/half.hpp"

namespace aiopt::kernels::cpu {

using bf16 = std::uint16_t;

using aiopt::bf16_to_float;
using aiopt::float_to_bf16;

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
