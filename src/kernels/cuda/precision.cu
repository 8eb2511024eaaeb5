// Rounding through f16/bf16 and the value census on CUDA (kernels/cuda/precision.hpp).
#include "kernels/cuda/precision.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <stdexcept>
#include <string>

#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

namespace {

__global__ void round_f16_kernel(float* x, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    x[i] = __half2float(__float2half_rn(x[i]));
}

__global__ void round_bf16_kernel(float* x, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    x[i] = __bfloat162float(__float2bfloat16_rn(x[i]));
}

// Per-thread counts, joined per warp, one integer atomic per warp and count.
__global__ void value_census_kernel(const float* x, std::size_t n, unsigned long long* counts) {
  unsigned long long zeros = 0, nonfinite = 0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const float a = x[i];
    zeros += a == 0.0f;
    nonfinite += !isfinite(a);
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    zeros += __shfl_xor_sync(0xffffffffu, zeros, offset);
    nonfinite += __shfl_xor_sync(0xffffffffu, nonfinite, offset);
  }
  if (threadIdx.x % 32 == 0) {
    if (zeros) atomicAdd(counts, zeros);
    if (nonfinite) atomicAdd(counts + 1, nonfinite);
  }
}

}  // namespace

// ---- launchers

void round_through(DType dtype, float* x, std::size_t n, void* stream) {
  if (dtype != DType::f32 && dtype != DType::f16 && dtype != DType::bf16)
    throw std::invalid_argument("round_through: dtype must be f32, f16 or bf16, not " + to_string(dtype));
  if (dtype == DType::f32 || n == 0) return;
  if (dtype == DType::f16) {
    round_f16_kernel<<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(x, n);
  } else {
    round_bf16_kernel<<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(x, n);
  }
  CUDA_CHECK_LAUNCH();
}

void value_census(const float* x, std::size_t n, unsigned long long* counts, void* stream) {
  if (n == 0) return;
  value_census_kernel<<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(x, n, counts);
  CUDA_CHECK_LAUNCH();
}

}  // namespace aiopt::kernels::cuda
