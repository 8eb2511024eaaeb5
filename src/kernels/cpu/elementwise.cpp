#include "kernels/cpu/elementwise.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

namespace aiopt::kernels::cpu {

void bias_add_reference(const float* x, const float* b, float* y, std::size_t rows, std::size_t hidden) {
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t j = 0; j < hidden; ++j) y[r * hidden + j] = x[r * hidden + j] + b[j];
}

void bias_add(const float* x, const float* b, float* y, std::size_t rows, std::size_t hidden) {
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * hidden;
    float* yr = y + r * hidden;
#pragma omp simd
    for (std::size_t j = 0; j < hidden; ++j) yr[j] = xr[j] + b[j];
  }
}

Dropout::Dropout(float p_, std::uint64_t seed_)
    : p(p_), seed(seed_),
      keep_threshold(static_cast<std::uint64_t>(std::ceil(static_cast<double>(p_) * 16777216.0))),
      scale(1.0f / (1.0f - p_)) {
  if (!(p_ >= 0.0f && p_ < 1.0f))
    throw std::invalid_argument("dropout probability must be in [0, 1), got " + std::to_string(p_));
}

void dropout_reference(const float* x, float* y, std::size_t n, float p, std::uint64_t seed) {
  const float scale = 1.0f / (1.0f - p);
  for (std::size_t i = 0; i < n; ++i) y[i] = rng::uniform(seed, i) >= p ? x[i] * scale : 0.0f;
}

void dropout(const float* x, float* y, std::size_t n, const Dropout& mask) {
#pragma omp parallel
  {
    // A copy local to each thread: stores to y cannot alias it, so it lives in registers and
    // the loop vectorizes (through the shared original it does not).
    const Dropout m = mask;
#pragma omp for simd schedule(static)
    for (std::size_t i = 0; i < n; ++i) y[i] = m.apply(x[i], i);
  }
}

void residual_add_reference(const float* a, const float* b, float* y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void residual_add(const float* a, const float* b, float* y, std::size_t n) {
#pragma omp parallel for simd schedule(static)
  for (std::size_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void scale_reference(const float* x, float* y, std::size_t n, float s) {
  for (std::size_t i = 0; i < n; ++i) y[i] = s * x[i];
}

void scale(const float* x, float* y, std::size_t n, float s) {
#pragma omp parallel for simd schedule(static)
  for (std::size_t i = 0; i < n; ++i) y[i] = s * x[i];
}

}  // namespace aiopt::kernels::cpu
