#pragma once
// Reduced-precision storage emulated in fp32 for mixed-precision training on the CPU: a value
// stored as f16 or bf16 is rounded to that format (round to nearest even, f16 overflow to ±inf,
// f16 subnormals and underflow to zero as the format does) and read back. Training then sees
// exactly the values a 16-bit tensor would hold, while the arithmetic stays fp32.
#include <cstddef>

#include "core/dtype.hpp"

namespace aiopt::kernels::cpu {

// x[i] = float(dtype(x[i])) in place; dtype f32 leaves x alone; others throw std::invalid_argument.
void round_through(DType dtype, float* x, std::size_t n);

struct ValueCensus {
  std::size_t zeros = 0;       // exactly ±0
  std::size_t nonfinite = 0;   // inf or NaN
};
// Counts over x: (n).
ValueCensus value_census(const float* x, std::size_t n);

}  // namespace aiopt::kernels::cpu
