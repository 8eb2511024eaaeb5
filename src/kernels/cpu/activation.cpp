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

// gelu'(x) = 0.5·(1 + t) + 0.5·x·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²), t = tanh(√(2/π)·(x + 0.044715·x³)).
void gelu_tanh_backward(const float* x, const float* dy, float* dx, std::size_t n) {
  constexpr float sqrt_2_over_pi = 0.7978845608028654f;
#pragma omp parallel for simd schedule(static)
  for (std::size_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float t = tanh_poly(sqrt_2_over_pi * (v + 0.044715f * v * v * v));
    const float inner_grad = sqrt_2_over_pi * (1.0f + 3.0f * 0.044715f * v * v);
    dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * inner_grad);
  }
}

void gelu_tanh_backward_reference(const float* x, const float* dy, float* dx, std::size_t n) {
  const double sqrt_2_over_pi = std::sqrt(2.0 / std::numbers::pi);
  for (std::size_t i = 0; i < n; ++i) {
    const double v = x[i];
    const double t = std::tanh(sqrt_2_over_pi * (v + 0.044715 * v * v * v));
    const double inner_grad = sqrt_2_over_pi * (1.0 + 3.0 * 0.044715 * v * v);
    dx[i] = static_cast<float>(dy[i] * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * inner_grad));
  }
}

}  // namespace aiopt::kernels::cpu
