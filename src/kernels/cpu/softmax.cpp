#include "kernels/cpu/softmax.hpp"

#include <cmath>

namespace aiopt::kernels::cpu {

void causal_mask_reference(const float* x, float* y, std::size_t rows, std::size_t hidden) {
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t j = 0; j < hidden; ++j)
      y[r * hidden + j] = j > r % hidden ? -INFINITY : x[r * hidden + j];
}

void causal_mask(const float* x, float* y, std::size_t rows, std::size_t hidden) {
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    const std::size_t q = r % hidden;
    const float* xr = x + r * hidden;
    float* yr = y + r * hidden;
#pragma omp simd
    for (std::size_t j = 0; j < hidden; ++j) yr[j] = causal(xr[j], q, j);
  }
}

void softmax_reference(const float* x, float* y, std::size_t rows, std::size_t hidden) {
  for (std::size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * hidden;
    float max = -INFINITY;
    for (std::size_t j = 0; j < hidden; ++j) max = std::fmax(max, xr[j]);
    double sum = 0.0;
    for (std::size_t j = 0; j < hidden; ++j) sum += std::exp(static_cast<double>(xr[j]) - max);
    for (std::size_t j = 0; j < hidden; ++j)
      y[r * hidden + j] = static_cast<float>(std::exp(static_cast<double>(xr[j]) - max) / sum);
  }
}

void softmax(const float* x, float* y, std::size_t rows, std::size_t hidden) {
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) softmax_row(x + r * hidden, y + r * hidden, hidden);
}

}  // namespace aiopt::kernels::cpu
