#include "kernels/cpu/layernorm.hpp"

#include <vector>

#include "kernels/cpu/over_columns.hpp"

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

void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                       float* rstd, std::size_t rows, std::size_t hidden, float eps) {
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * hidden;
    // The same two-pass statistics as layernorm_row, kept for the backward.
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (std::size_t j = 0; j < hidden; ++j) sum += xr[j];
    const float m = sum / static_cast<float>(hidden);
    float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
    for (std::size_t j = 0; j < hidden; ++j) squares += (xr[j] - m) * (xr[j] - m);
    const float s = 1.0f / std::sqrt(squares / static_cast<float>(hidden) + eps);
    float* yr = y + r * hidden;
#pragma omp simd
    for (std::size_t j = 0; j < hidden; ++j) yr[j] = (xr[j] - m) * s * gamma[j] + beta[j];
    mean[r] = m;
    rstd[r] = s;
  }
}

// With x̂ = (x − mean)·rstd and g = gamma∘dy, per row:
//   dx = rstd · (g − mean(g) − x̂ · mean(g∘x̂)),  dgamma += Σ_rows dy∘x̂,  dbeta += Σ_rows dy.
void layernorm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                        const float* rstd, float* dx, float* dgamma, float* dbeta, std::size_t rows,
                        std::size_t hidden) {
  const float inv_hidden = 1.0f / static_cast<float>(hidden);
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    const float* dyr = dy + r * hidden;
    const float* xr = x + r * hidden;
    const float m = mean[r], s = rstd[r];
    float g_sum = 0.0f, gx_sum = 0.0f;
#pragma omp simd reduction(+ : g_sum, gx_sum)
    for (std::size_t j = 0; j < hidden; ++j) {
      const float g = gamma[j] * dyr[j];
      g_sum += g;
      gx_sum += g * (xr[j] - m) * s;
    }
    const float g_mean = g_sum * inv_hidden, gx_mean = gx_sum * inv_hidden;
    float* dxr = dx + r * hidden;
#pragma omp simd
    for (std::size_t j = 0; j < hidden; ++j)
      dxr[j] = s * (gamma[j] * dyr[j] - g_mean - (xr[j] - m) * s * gx_mean);
  }
  if (dgamma == nullptr && dbeta == nullptr) return;  // frozen
  // The parameter gradients sum over rows: threads split the channels and walk the rows in
  // order, so the sums do not depend on the thread count.
  over_columns(hidden, [&](std::size_t begin, std::size_t end) {
    for (std::size_t r = 0; r < rows; ++r) {
      const float* dyr = dy + r * hidden;
      const float* xr = x + r * hidden;
      const float m = mean[r], s = rstd[r];
#pragma omp simd
      for (std::size_t j = begin; j < end; ++j) {
        dgamma[j] += dyr[j] * ((xr[j] - m) * s);
        dbeta[j] += dyr[j];
      }
    }
  });
}

void layernorm_backward_reference(const float* dy, const float* x, const float* gamma, const float* mean,
                                  const float* rstd, float* dx, float* dgamma, float* dbeta,
                                  std::size_t rows, std::size_t hidden) {
  std::vector<double> dgamma_sum(dgamma, dgamma + hidden), dbeta_sum(dbeta, dbeta + hidden);
  for (std::size_t r = 0; r < rows; ++r) {
    const float* dyr = dy + r * hidden;
    const float* xr = x + r * hidden;
    const double m = mean[r], s = rstd[r];
    double g_sum = 0.0, gx_sum = 0.0;
    for (std::size_t j = 0; j < hidden; ++j) {
      const double xhat = (xr[j] - m) * s;
      g_sum += static_cast<double>(gamma[j]) * dyr[j];
      gx_sum += static_cast<double>(gamma[j]) * dyr[j] * xhat;
      dgamma_sum[j] += dyr[j] * xhat;
      dbeta_sum[j] += dyr[j];
    }
    const double n = static_cast<double>(hidden);
    for (std::size_t j = 0; j < hidden; ++j) {
      const double xhat = (xr[j] - m) * s;
      dx[r * hidden + j] = static_cast<float>(s * (static_cast<double>(gamma[j]) * dyr[j] - g_sum / n - xhat * gx_sum / n));
    }
  }
  for (std::size_t j = 0; j < hidden; ++j) {
    dgamma[j] = static_cast<float>(dgamma_sum[j]);
    dbeta[j] = static_cast<float>(dbeta_sum[j]);
  }
}

}  // namespace aiopt::kernels::cpu
