#include "kernels/cpu/precision.hpp"

#include <cmath>
#include <stdexcept>

#include "core/half.hpp"

namespace aiopt::kernels::cpu {

void round_through(DType dtype, float* x, std::size_t n) {
  switch (dtype) {
    case DType::f32:
      return;
    case DType::f16:
#pragma omp parallel for schedule(static)
      for (std::size_t i = 0; i < n; ++i) x[i] = f16_to_float(float_to_f16(x[i]));
      return;
    case DType::bf16:
#pragma omp parallel for simd schedule(static)
      for (std::size_t i = 0; i < n; ++i) x[i] = bf16_to_float(float_to_bf16(x[i]));
      return;
    default:
      throw std::invalid_argument("round_through: storage " + to_string(dtype) +
                                  " is not a floating-point format (f32, f16 or bf16)");
  }
}

ValueCensus value_census(const float* x, std::size_t n) {
  std::size_t zeros = 0, nonfinite = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : zeros, nonfinite)
  for (std::size_t i = 0; i < n; ++i) {
    zeros += x[i] == 0.0f ? 1 : 0;
    nonfinite += std::isfinite(x[i]) ? 0 : 1;
  }
  return {zeros, nonfinite};
}

}  // namespace aiopt::kernels::cpu
