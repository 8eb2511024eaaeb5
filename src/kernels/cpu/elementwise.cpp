#include "kernels/cpu/elementwise.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cpu/biased_rows.hpp"

namespace aiopt::kernels::cpu {

void bias_add_reference(const float* x, const float* b, float* y, std::size_t rows, std::size_t hidden) {
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t j = 0; j < hidden; ++j) y[r * hidden + j] = x[r * hidden + j] + b[j];
}

template <class T>
void bias_add(const T* x, const float* b, T* y, std::size_t rows, std::size_t hidden) {
  map_biased_rows(x, b, y, rows, hidden, [](float v) { return v; });
}

namespace {

// Checked before the threshold is computed: a negative p would make its cast undefined.
float dropout_probability(float p) {
  if (!(p >= 0.0f && p < 1.0f))
    throw std::invalid_argument("dropout probability must be in [0, 1), got " + std::to_string(p));
  return p;
}

}  // namespace

Dropout::Dropout(float p_, std::uint64_t seed_)
    : p(dropout_probability(p_)), seed(seed_),
      keep_threshold(static_cast<std::uint64_t>(std::ceil(static_cast<double>(p) * 16777216.0))),
      scale(1.0f / (1.0f - p)) {}

void dropout_reference(const float* x, float* y, std::size_t n, float p, std::uint64_t seed) {
  const float scale = 1.0f / (1.0f - p);
  for (std::size_t i = 0; i < n; ++i) y[i] = rng::uniform(seed, i) >= p ? x[i] * scale : 0.0f;
}

template <class T>
void dropout(const T* x, T* y, std::size_t n, const Dropout& mask) {
#pragma omp parallel
  {
    // A copy local to each thread: stores to y cannot alias it, so it lives in registers and
    // the loop vectorizes (through the shared original it does not).
    const Dropout m = mask;
#pragma omp for simd schedule(static)
    for (std::size_t i = 0; i < n; ++i) y[i] = from_float<T>(m.apply(to_float(x[i]), i));
  }
}

void residual_add_reference(const float* a, const float* b, float* y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

template <class T>
void residual_add(const T* a, const T* b, T* y, std::size_t n) {
#pragma omp parallel for simd schedule(static)
  for (std::size_t i = 0; i < n; ++i) y[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
}

void scale_reference(const float* x, float* y, std::size_t n, float s) {
  for (std::size_t i = 0; i < n; ++i) y[i] = s * x[i];
}

template <class T>
void scale(const T* x, T* y, std::size_t n, float s) {
#pragma omp parallel for simd schedule(static)
  for (std::size_t i = 0; i < n; ++i) y[i] = from_float<T>(s * to_float(x[i]));
}

// ---- the storage types the chains use

template void bias_add(const float*, const float*, float*, std::size_t, std::size_t);
template void bias_add(const bf16*, const float*, bf16*, std::size_t, std::size_t);
template void dropout(const float*, float*, std::size_t, const Dropout&);
template void dropout(const bf16*, bf16*, std::size_t, const Dropout&);
template void residual_add(const float*, const float*, float*, std::size_t);
template void residual_add(const bf16*, const bf16*, bf16*, std::size_t);
template void scale(const float*, float*, std::size_t, float);
template void scale(const bf16*, bf16*, std::size_t, float);

}  // namespace aiopt::kernels::cpu
