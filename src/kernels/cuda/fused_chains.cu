// The tensor-fusion chains, one kernel each: inputs read from global memory once, the output
// written once; intermediates stay in registers, or in the block's own output row (in L1/L2)
// between the statistics and the normalization.
#include "kernels/cuda/fusion_launchers.hpp"
#include "kernels/cuda/fusion_math.cuh"

namespace aiopt::kernels::cuda {

namespace {

// ---- kernels

template <int V>
__global__ void bias_gelu_kernel(const float* x, const float* b, float* y, std::size_t n, std::size_t hidden) {
  for (std::size_t i = (blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x) * V; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x * V) {
    Pack<V> a = load<V>(x + i);
    const Pack<V> c = load<V>(b + i % hidden);
    for (int k = 0; k < V; ++k) a.v[k] = gelu_tanh(a.v[k] + c.v[k]);
    store<V>(y + i, a);
  }
}

// One block per row: build residual + dropout(x + b) in the output row, then normalize it in
// place. Each thread reads back only the elements it wrote, so no barrier is needed between.
template <int V>
__global__ void bias_dropout_residual_layernorm_kernel(const float* x, const float* b, const float* residual,
                                                       const float* gamma, const float* beta, float* y,
                                                       int hidden, DropoutMask mask, float eps) {
  const std::size_t base = static_cast<std::size_t>(blockIdx.x) * hidden;
  for (int j = static_cast<int>(threadIdx.x) * V; j < hidden; j += static_cast<int>(blockDim.x) * V) {
    Pack<V> a = load<V>(x + base + j);
    const Pack<V> c = load<V>(b + j);
    const Pack<V> r = load<V>(residual + base + j);
    for (int k = 0; k < V; ++k) a.v[k] = r.v[k] + mask.apply(a.v[k] + c.v[k], base + j + k);
    store<V>(y + base + j, a);
  }
  layernorm_row<V>(y + base, gamma, beta, y + base, hidden, eps);
}

// One block per row: write the scaled, masked scores to the output row, then softmax in place.
template <int V>
__global__ void scale_mask_softmax_kernel(const float* x, float* y, int hidden, float s) {
  const std::size_t base = static_cast<std::size_t>(blockIdx.x) * hidden;
  const int q = static_cast<int>(blockIdx.x % static_cast<unsigned>(hidden));
  for (int j = static_cast<int>(threadIdx.x) * V; j < hidden; j += static_cast<int>(blockDim.x) * V) {
    Pack<V> a = load<V>(x + base + j);
    for (int k = 0; k < V; ++k) a.v[k] = j + k > q ? -INFINITY : s * a.v[k];
    store<V>(y + base + j, a);
  }
  softmax_row<V>(y + base, y + base, hidden);
}

cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace

// ---- launchers

void bias_gelu_fused(const float* x, const float* b, float* y, std::size_t rows, std::size_t hidden,
                     void* stream) {
  const std::size_t n = rows * hidden;
  if (use_float4(hidden, x, b, y)) {
    bias_gelu_kernel<4><<<elementwise_blocks(n / 4), 256, 0, as_stream(stream)>>>(x, b, y, n, hidden);
  } else {
    bias_gelu_kernel<1><<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(x, b, y, n, hidden);
  }
  CUDA_CHECK_LAUNCH();
}

void bias_dropout_residual_layernorm_fused(const float* x, const float* b, const float* residual,
                                           const float* gamma, const float* beta, float* y,
                                           std::size_t rows, std::size_t hidden, float p,
                                           std::uint64_t seed, float eps, void* stream) {
  const DropoutMask mask = DropoutMask::make(p, seed);
  const int h = static_cast<int>(hidden);
  const unsigned blocks = row_blocks(rows);
  if (use_float4(hidden, x, b, residual, gamma, beta, y)) {
    bias_dropout_residual_layernorm_kernel<4><<<blocks, row_block_threads(hidden, 4), 0, as_stream(stream)>>>(
        x, b, residual, gamma, beta, y, h, mask, eps);
  } else {
    bias_dropout_residual_layernorm_kernel<1><<<blocks, row_block_threads(hidden, 1), 0, as_stream(stream)>>>(
        x, b, residual, gamma, beta, y, h, mask, eps);
  }
  CUDA_CHECK_LAUNCH();
}

void scale_mask_softmax_fused(const float* x, float* y, std::size_t rows, std::size_t hidden, float s,
                              void* stream) {
  const int h = static_cast<int>(hidden);
  const unsigned blocks = row_blocks(rows);
  if (use_float4(hidden, x, y)) {
    scale_mask_softmax_kernel<4><<<blocks, row_block_threads(hidden, 4), 0, as_stream(stream)>>>(x, y, h, s);
  } else {
    scale_mask_softmax_kernel<1><<<blocks, row_block_threads(hidden, 1), 0, as_stream(stream)>>>(x, y, h, s);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace aiopt::kernels::cuda
