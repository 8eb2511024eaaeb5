#include "kernels/cpu/softmax.hpp"

#include <cmath>
#include <type_traits>

#include "core/memory.hpp"

namespace aiopt::kernels::cpu {

void causal_mask_reference(const float* x, float* y, std::size_t rows, std::size_t hidden) {
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t j = 0; j < hidden; ++j)
      y[r * hidden + j] = j > r % hidden ? -INFINITY : x[r * hidden + j];
}

template <class T>
void causal_mask(const T* x, T* y, std::size_t rows, std::size_t hidden) {
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    const std::size_t q = r % hidden;
    const T* xr = x + r * hidden;
    T* yr = y + r * hidden;
#pragma omp simd
    for (std::size_t j = 0; j < hidden; ++j) yr[j] = from_float<T>(causal(to_float(xr[j]), q, j));
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

template <class T>
void softmax(const T* x, T* y, std::size_t rows, std::size_t hidden) {
#pragma omp parallel
  {
    // fp32 output: the row is computed in y itself. bf16: in an fp32 row of this thread's
    // (hidden floats, in L1/L2), then rounded once into y.
    memory::Buffer<float> row(Device::cpu(), std::is_same_v<T, float> ? 0 : hidden);
#pragma omp for schedule(static)
    for (std::size_t r = 0; r < rows; ++r) {
      if constexpr (std::is_same_v<T, float>) {
        softmax_row(x + r * hidden, y + r * hidden, hidden);
      } else {
        softmax_row(x + r * hidden, row.data(), hidden);
        store_row(row.data(), y + r * hidden, hidden);
      }
    }
  }
}

template void causal_mask(const float*, float*, std::size_t, std::size_t);
template void causal_mask(const bf16*, bf16*, std::size_t, std::size_t);
template void softmax(const float*, float*, std::size_t, std::size_t);
template void softmax(const bf16*, bf16*, std::size_t, std::size_t);

}  // namespace aiopt::kernels::cpu
