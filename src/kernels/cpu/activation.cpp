#include "kernels/cpu/activation.hpp"

#include <cmath>
#include <numbers>

namespace aiopt::kernels::cpu {

void gelu_tanh_reference(const float* x, float* y, std::size_t n) {
  const double sqrt_2_over_pi = std::sqrt(2.0 / std::numbers::pi);
  for (std::size_t i = 0; i < n; ++i) {
    const double v = x[i];
    y[i] = static_cast<float>(0.5 * v * (1.0 + std::tanh(sqrt_2_over_pi * (v + 0.044715 * v * v * v))));
  }
}

template <class T>
void gelu_tanh(const T* x, T* y, std::size_t n) {
#pragma omp parallel for simd schedule(static)
  for (std::size_t i = 0; i < n; ++i) y[i] = from_float<T>(gelu_tanh(to_float(x[i])));
}

template void gelu_tanh(const float*, float*, std::size_t);
template void gelu_tanh(const bf16*, bf16*, std::size_t);

}  // namespace aiopt::kernels::cpu
