#include "kernels/cpu/layernorm.hpp"

namespace aiopt::kernels::cpu {

void layernorm_reference(const float* x, const float* gamma, const float* beta, float* y,
                         std::size_t rows, std::size_t hidden, float eps) {
  for (std::size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * hidden;
    double sum = 0.0;
    for (std::size_t j = 0; j < hidden; ++j) sum += xr[j];
    const double mean = sum / static_cast<double>(hidden);
    double squares = 0.0;
    for (std::size_t j = 0; j < hidden; ++j) squares += (xr[j] - mean) * (xr[j] - mean);
    const double rstd = 1.0 / std::sqrt(squares / static_cast<double>(hidden) + eps);
    for (std::size_t j = 0; j < hidden; ++j)
      y[r * hidden + j] = static_cast<float>((xr[j] - mean) * rstd * gamma[j] + beta[j]);
  }
}

template <class T>
void layernorm(const T* x, const float* gamma, const float* beta, T* y, std::size_t rows,
               std::size_t hidden, float eps) {
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r)
    layernorm_row(x + r * hidden, gamma, beta, y + r * hidden, hidden, eps);
}

template void layernorm(const float*, const float*, const float*, float*, std::size_t, std::size_t, float);
template void layernorm(const bf16*, const float*, const float*, bf16*, std::size_t, std::size_t, float);

}  // namespace aiopt::kernels::cpu
