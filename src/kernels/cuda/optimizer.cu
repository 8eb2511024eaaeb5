// Optimizer updates and the clipping norm on CUDA (kernels/cuda/optimizer.hpp), the formulas of
// kernels/cpu/optimizer.hpp. The updates are elementwise; the sum of squares is a two-stage
// reduction whose grid depends on n alone, so it adds the same values in the same order on
// every run.
#include "kernels/cuda/optimizer.hpp"

#include <cuda_runtime.h>

#include <cmath>

#include "core/cuda_check.hpp"
#include "core/device.hpp"
#include "core/memory.hpp"
#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

namespace {

// The bias corrections are computed once on the host in double.
__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, std::size_t n, float lr, float beta1,
                             float beta2, float eps, float weight_decay, float correction1, float correction2,
                             float grad_scale) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const float grad = grad_scale * g[i];
    const float mi = beta1 * m[i] + (1.0f - beta1) * grad;
    const float vi = beta2 * v[i] + (1.0f - beta2) * grad * grad;
    m[i] = mi;
    v[i] = vi;
    const float m_hat = mi / correction1;
    const float v_hat = vi / correction2;
    p[i] -= lr * (m_hat / (sqrtf(v_hat) + eps) + weight_decay * p[i]);
  }
}

__global__ void sgd_kernel(float* p, const float* g, float* buf, std::size_t n, float lr, float momentum,
                           float weight_decay, float grad_scale) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const float b = momentum * buf[i] + grad_scale * g[i];
    buf[i] = b;
    p[i] -= lr * (b + weight_decay * p[i]);
  }
}

constexpr int norm_threads = 256;
constexpr std::size_t norm_max_blocks = 1024;

// Tree reduction of one double per thread in shared memory, a fixed pairing; thread 0 gets the total.
__device__ double block_sum(double value) {
  __shared__ double partial[norm_threads];
  partial[threadIdx.x] = value;
  __syncthreads();
  for (int half = norm_threads / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  return partial[0];
}

// Stage 1: thread t of block b sums x[i]² for i = b·256 + t, then strides of gridDim·256.
__global__ void __launch_bounds__(norm_threads) squares_kernel(const float* x, std::size_t n, double* partial) {
  double sum = 0.0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(norm_threads) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * norm_threads) {
    const double a = x[i];
    sum += a * a;
  }
  const double total = block_sum(sum);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// Stage 2: one block over the partials.
__global__ void __launch_bounds__(norm_threads) sum_partials_kernel(const double* partial, std::size_t count,
                                                                     double* result) {
  double sum = 0.0;
  for (std::size_t i = threadIdx.x; i < count; i += norm_threads) sum += partial[i];
  const double total = block_sum(sum);
  if (threadIdx.x == 0) *result = total;
}

}  // namespace

void adamw_update(float* p, const float* g, float* m, float* v, std::size_t n, const cpu::AdamW& h,
                  float grad_scale, void* stream) {
  if (n == 0) return;
  const double t = static_cast<double>(h.step);
  const auto correction1 = static_cast<float>(1.0 - std::pow(static_cast<double>(h.beta1), t));
  const auto correction2 = static_cast<float>(1.0 - std::pow(static_cast<double>(h.beta2), t));
  adamw_kernel<<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(p, g, m, v, n, h.lr, h.beta1, h.beta2, h.eps,
                                                                     h.weight_decay, correction1, correction2,
                                                                     grad_scale);
  CUDA_CHECK_LAUNCH();
}

void sgd_update(float* p, const float* g, float* buf, std::size_t n, float lr, float momentum, float weight_decay,
                float grad_scale, void* stream) {
  if (n == 0) return;
  sgd_kernel<<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(p, g, buf, n, lr, momentum, weight_decay,
                                                                   grad_scale);
  CUDA_CHECK_LAUNCH();
}

double sum_of_squares(const float* x, std::size_t n, void* stream) {
  if (n == 0) return 0.0;
  const std::size_t wanted = (n + norm_threads - 1) / norm_threads;
  const std::size_t blocks = wanted < norm_max_blocks ? wanted : norm_max_blocks;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  // partials: (blocks), then the result in the last slot.
  memory::Buffer<double> scratch(Device::cuda(device), blocks + 1);
  const cudaStream_t st = as_stream(stream);
  squares_kernel<<<static_cast<unsigned>(blocks), norm_threads, 0, st>>>(x, n, scratch.data());
  CUDA_CHECK_LAUNCH();
  sum_partials_kernel<<<1, norm_threads, 0, st>>>(scratch.data(), blocks, scratch.data() + blocks);
  CUDA_CHECK_LAUNCH();
  double result = 0.0;
  CUDA_CHECK(cudaMemcpyAsync(&result, scratch.data() + blocks, sizeof(double), cudaMemcpyDeviceToHost, st));
  CUDA_CHECK(cudaStreamSynchronize(st));
  return result;
}

}  // namespace aiopt::kernels::cuda
