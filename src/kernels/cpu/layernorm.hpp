#pragma once
// Layer normalization (Ba, Kiros, Hinton 2016) over the last dimension:
// y = (x − mean) / sqrt(var + eps) · gamma + beta, with the biased variance.
#include <cmath>
#include <cstddef>

#include "kernels/cpu/bf16.hpp"

namespace aiopt::kernels::cpu {

// One row, two-pass statistics (mean, then the mean of squared deviations: no cancellation).
// The row is read three times; at model widths it stays in L1/L2 after the first read, so
// memory sees one read of x and one write of y. x, y: (hidden), stored as In and Out (float or
// bf16; y may alias x when both are float); gamma, beta: (hidden), fp32. Computed in fp32.
template <class In, class Out>
inline void layernorm_row(const In* x, const float* gamma, const float* beta, Out* y,
                          std::size_t hidden, float eps) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (std::size_t j = 0; j < hidden; ++j) sum += to_float(x[j]);
  const float mean = sum / static_cast<float>(hidden);
  float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
  for (std::size_t j = 0; j < hidden; ++j) squares += (to_float(x[j]) - mean) * (to_float(x[j]) - mean);
  const float rstd = 1.0f / std::sqrt(squares / static_cast<float>(hidden) + eps);
#pragma omp simd
  for (std::size_t j = 0; j < hidden; ++j)
    y[j] = from_float<Out>((to_float(x[j]) - mean) * rstd * gamma[j] + beta[j]);
}

// x, y: (rows, hidden); gamma, beta: (hidden). The reference accumulates in double.
void layernorm_reference(const float* x, const float* gamma, const float* beta, float* y,
                         std::size_t rows, std::size_t hidden, float eps);
// SIMD within a row, OpenMP over rows; x, y stored as T = float or bf16.
template <class T>
void layernorm(const T* x, const float* gamma, const float* beta, T* y, std::size_t rows,
               std::size_t hidden, float eps);

// Training forward: as layernorm, and saves each row's mean and rstd = 1/sqrt(var + eps) for the
// backward. x, y: (rows, hidden); mean, rstd: (rows).
void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                       float* rstd, std::size_t rows, std::size_t hidden, float eps);
// Backward of layernorm_forward given its saved mean and rstd. dy, x, dx: (rows, hidden);
// dx is written; dgamma, dbeta: (hidden) are accumulated (+=), both skipped when both are null (a
// frozen LayerNorm). The reference accumulates in double.
void layernorm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                        const float* rstd, float* dx, float* dgamma, float* dbeta, std::size_t rows,
                        std::size_t hidden);
void layernorm_backward_reference(const float* dy, const float* x, const float* gamma, const float* mean,
                                  const float* rstd, float* dx, float* dgamma, float* dbeta,
                                  std::size_t rows, std::size_t hidden);

}  // namespace aiopt::kernels::cpu
