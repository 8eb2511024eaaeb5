#include "kernels/cpu/fused_chains.hpp"

#include "kernels/cpu/activation.hpp"
#include "kernels/cpu/layernorm.hpp"
#include "kernels/cpu/softmax.hpp"

namespace aiopt::kernels::cpu {

void bias_gelu_fused(const float* x, const float* b, float* y, std::size_t rows, std::size_t hidden) {
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * hidden;
    float* yr = y + r * hidden;
#pragma omp simd
    for (std::size_t j = 0; j < hidden; ++j) yr[j] = gelu_tanh(xr[j] + b[j]);
  }
}

void bias_dropout_residual_layernorm_fused(const float* x, const float* b, const float* residual,
                                           const float* gamma, const float* beta, float* y,
                                           std::size_t rows, std::size_t hidden,
                                           const Dropout& mask, float eps) {
#pragma omp parallel
  {
    // A copy local to each thread, as in dropout(): it lives in registers and the loop vectorizes.
    const Dropout m = mask;
#pragma omp for schedule(static)
    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t base = r * hidden;
      const float* xr = x + base;
      const float* rr = residual + base;
      float* yr = y + base;
      // The pre-norm row is built in the output row, which stays in cache for the statistics
      // and is then normalized in place: memory sees x and residual read once, y written once.
#pragma omp simd
      for (std::size_t j = 0; j < hidden; ++j) yr[j] = rr[j] + m.apply(xr[j] + b[j], base + j);
      layernorm_row(yr, gamma, beta, yr, hidden, eps);
    }
  }
}

void scale_mask_softmax_fused(const float* x, float* y, std::size_t rows, std::size_t hidden, float s) {
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    const std::size_t q = r % hidden;
    const float* xr = x + r * hidden;
    float* yr = y + r * hidden;
#pragma omp simd
    for (std::size_t j = 0; j < hidden; ++j) yr[j] = causal(s * xr[j], q, j);
    softmax_row(yr, yr, hidden);
  }
}

}  // namespace aiopt::kernels::cpu
