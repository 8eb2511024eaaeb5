#include "kernels/cpu/fused_chains.hpp"

#include <type_traits>

#include "core/memory.hpp"
#include "kernels/cpu/activation.hpp"
#include "kernels/cpu/biased_rows.hpp"
#include "kernels/cpu/layernorm.hpp"
#include "kernels/cpu/softmax.hpp"

namespace aiopt::kernels::cpu {

namespace {

// The fp32 row a chain builds its intermediates in: the output row itself when the output is
// fp32 (it stays in cache until normalized), else this thread's fp32 scratch row.
template <class T>
float* fp32_row(T* out_row, memory::Buffer<float>& scratch) {
  if constexpr (std::is_same_v<T, float>) {
    return out_row;
  } else {
    return scratch.data();
  }
}

}  // namespace

template <class T>
void bias_gelu_fused(const T* x, const float* b, T* y, std::size_t rows, std::size_t hidden) {
  map_biased_rows(x, b, y, rows, hidden, [](float v) { return gelu_tanh(v); });
}

template <class T>
void bias_dropout_residual_layernorm_fused(const T* x, const float* b, const T* residual, const float* gamma,
                                           const float* beta, T* y, std::size_t rows, std::size_t hidden,
                                           const Dropout& mask, float eps) {
#pragma omp parallel
  {
    // A copy local to each thread, as in dropout(): it lives in registers and the loop vectorizes.
    const Dropout m = mask;
    // The pre-norm row stays fp32: built in the output row itself when that is fp32, else in an
    // fp32 row of this thread's (hidden floats, in L1/L2).
    memory::Buffer<float> scratch(Device::cpu(), std::is_same_v<T, float> ? 0 : hidden);
#pragma omp for schedule(static)
    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t base = r * hidden;
      const T* xr = x + base;
      const T* rr = residual + base;
      T* yr = y + base;
      float* row = fp32_row(yr, scratch);
      // The pre-norm row is built where it stays in cache for the statistics and is then
      // normalized into y: memory sees x and residual read once, y written once.
#pragma omp simd
      for (std::size_t j = 0; j < hidden; ++j)
        row[j] = to_float(rr[j]) + m.apply(to_float(xr[j]) + b[j], base + j);
      layernorm_row(row, gamma, beta, yr, hidden, eps);
    }
  }
}

template <class T>
void scale_mask_softmax_fused(const T* x, T* y, std::size_t rows, std::size_t hidden, float s) {
#pragma omp parallel
  {
    // The scores stay fp32, as in bias_dropout_residual_layernorm_fused.
    memory::Buffer<float> scratch(Device::cpu(), std::is_same_v<T, float> ? 0 : hidden);
#pragma omp for schedule(static)
    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t q = r % hidden;
      const T* xr = x + r * hidden;
      T* yr = y + r * hidden;
      float* row = fp32_row(yr, scratch);
#pragma omp simd
      for (std::size_t j = 0; j < hidden; ++j) row[j] = causal(s * to_float(xr[j]), q, j);
      softmax_row(row, row, hidden);
      if constexpr (!std::is_same_v<T, float>) store_row(row, yr, hidden);
    }
  }
}

// ---- the storage types the chains use

template void bias_gelu_fused(const float*, const float*, float*, std::size_t, std::size_t);
template void bias_gelu_fused(const bf16*, const float*, bf16*, std::size_t, std::size_t);
template void bias_dropout_residual_layernorm_fused(const float*, const float*, const float*, const float*,
                                                    const float*, float*, std::size_t, std::size_t,
                                                    const Dropout&, float);
template void bias_dropout_residual_layernorm_fused(const bf16*, const float*, const bf16*, const float*,
                                                    const float*, bf16*, std::size_t, std::size_t,
                                                    const Dropout&, float);
template void scale_mask_softmax_fused(const float*, float*, std::size_t, std::size_t, float);
template void scale_mask_softmax_fused(const bf16*, bf16*, std::size_t, std::size_t, float);

}  // namespace aiopt::kernels::cpu
