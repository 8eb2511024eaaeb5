// LayerNorm on CUDA (kernels/cuda/layernorm.hpp): two-pass statistics per row as the CPU.
#include "kernels/cuda/layernorm.hpp"

#include <cstdint>

#include "kernels/cuda/column_sums.cuh"
#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

namespace {

template <int V, class T>
__global__ void layernorm_kernel(const T* x, const float* gamma, const float* beta, T* y, int hidden, float eps) {
  const std::size_t base = static_cast<std::size_t>(blockIdx.x) * hidden;
  const T* in = x + base;
  layernorm_row<V>([in](int j) { return load<V>(in + j); }, gamma, beta, y + base, hidden, eps);
}

// One block per row: two-pass statistics as the CPU, saving mean and rstd.
// x, y: (rows, hidden); mean, rstd: (rows).
__global__ void layernorm_forward_kernel(const float* x, const float* gamma, const float* beta, float* y,
                                         float* mean, float* rstd, int hidden, float eps) {
  const std::size_t row = blockIdx.x;
  const float* xr = x + row * hidden;
  float* yr = y + row * hidden;
  float sum = 0.0f;
  for (int j = threadIdx.x; j < hidden; j += blockDim.x) sum += xr[j];
  const float m = block_reduce(sum, Sum{}, 0.0f) / static_cast<float>(hidden);
  float squares = 0.0f;
  for (int j = threadIdx.x; j < hidden; j += blockDim.x) squares += (xr[j] - m) * (xr[j] - m);
  const float r = 1.0f / sqrtf(block_reduce(squares, Sum{}, 0.0f) / static_cast<float>(hidden) + eps);
  for (int j = threadIdx.x; j < hidden; j += blockDim.x) yr[j] = (xr[j] - m) * r * gamma[j] + beta[j];
  if (threadIdx.x == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

// One block per row: with x̂ = (x − mean)·rstd and g = dy·gamma,
// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)).
__global__ void layernorm_backward_dx_kernel(const float* dy, const float* x, const float* gamma, const float* mean,
                                             const float* rstd, float* dx, int hidden) {
  const std::size_t row = blockIdx.x;
  const float* dyr = dy + row * hidden;
  const float* xr = x + row * hidden;
  float* dxr = dx + row * hidden;
  const float m = mean[row], r = rstd[row];
  float sum_g = 0.0f, sum_gx = 0.0f;
  for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
    const float g = dyr[j] * gamma[j];
    sum_g += g;
    sum_gx += g * ((xr[j] - m) * r);
  }
  const float mean_g = block_reduce(sum_g, Sum{}, 0.0f) / static_cast<float>(hidden);
  const float mean_gx = block_reduce(sum_gx, Sum{}, 0.0f) / static_cast<float>(hidden);
  for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
    const float xhat = (xr[j] - m) * r;
    dxr[j] = r * (dyr[j] * gamma[j] - mean_g - xhat * mean_gx);
  }
}

// The column-sum terms of dgamma (dy·x̂) and dbeta (dy).
struct LayerNormTerms {
  static constexpr int count = 2;
  const float* dy;
  const float* x;
  const float* mean;
  const float* rstd;
  __device__ void at(std::size_t r, int c, int n, float* t) const {
    const float g = dy[r * n + c];
    t[0] = g * ((x[r * n + c] - mean[r]) * rstd[r]);
    t[1] = g;
  }
};

}  // namespace

// ---- launchers

template <class T>
void layernorm(const T* x_, const float* gamma, const float* beta, T* y_, std::size_t rows, std::size_t hidden,
               float eps, void* stream) {
  if (rows == 0 || hidden == 0) return;
  const auto* x = device_ptr(x_);
  auto* y = device_ptr(y_);
  const int h = static_cast<int>(hidden);
  const unsigned blocks = row_blocks(rows);
  launch_vectorized(use_vector4(hidden, x, gamma, beta, y), [&]<int V>() {
    layernorm_kernel<V><<<blocks, row_block_threads(hidden, V), 0, as_stream(stream)>>>(x, gamma, beta, y, h, eps);
  });
}

void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* rstd,
                       std::size_t rows, std::size_t hidden, float eps, void* stream) {
  if (rows == 0 || hidden == 0) return;
  const int width = checked_width(hidden, "layernorm_forward");
  layernorm_forward_kernel<<<row_blocks(rows), row_block_threads(hidden, 1), 0, as_stream(stream)>>>(
      x, gamma, beta, y, mean, rstd, width, eps);
  CUDA_CHECK_LAUNCH();
}

void layernorm_backward(const float* dy, const float* x, const float* gamma, const float* mean, const float* rstd,
                        float* dx, float* dgamma, float* dbeta, std::size_t rows, std::size_t hidden,
                        void* stream) {
  if (rows == 0 || hidden == 0) return;
  const int width = checked_width(hidden, "layernorm_backward");
  layernorm_backward_dx_kernel<<<row_blocks(rows), row_block_threads(hidden, 1), 0, as_stream(stream)>>>(
      dy, x, gamma, mean, rstd, dx, width);
  CUDA_CHECK_LAUNCH();
  if (dgamma == nullptr && dbeta == nullptr) return;  // frozen
  column_sums(LayerNormTerms{dy, x, mean, rstd}, rows, hidden, dgamma, dbeta, as_stream(stream),
              "layernorm_backward");
}

template void layernorm(const float*, const float*, const float*, float*, std::size_t, std::size_t, float, void*);
template void layernorm(const std::uint16_t*, const float*, const float*, std::uint16_t*, std::size_t, std::size_t,
                        float, void*);

}  // namespace aiopt::kernels::cuda
