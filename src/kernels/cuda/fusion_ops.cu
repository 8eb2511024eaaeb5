// The unfused passes of the tensor-fusion chains: one op per kernel, each reading its input
// from and writing its output to global memory. Activations are stored as T (float or
// __nv_bfloat16) and computed in fp32.
#include "kernels/cuda/fusion_launchers.hpp"
#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

namespace {

// ---- kernels (grid-stride over vectors of V elements; n a multiple of V)

template <int V, class T>
__global__ void bias_add_kernel(const T* x, const float* b, T* y, std::size_t n, std::size_t hidden) {
  for (std::size_t i = (blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x) * V; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x * V) {
    Pack<V> a = load<V>(x + i);
    const Pack<V> c = load<V>(b + i % hidden);
    for (int k = 0; k < V; ++k) a.v[k] += c.v[k];
    store<V>(y + i, a);
  }
}

template <int V, class T>
__global__ void gelu_kernel(const T* x, T* y, std::size_t n) {
  for (std::size_t i = (blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x) * V; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x * V) {
    Pack<V> a = load<V>(x + i);
    for (int k = 0; k < V; ++k) a.v[k] = gelu_tanh(a.v[k]);
    store<V>(y + i, a);
  }
}

template <int V, class T>
__global__ void dropout_kernel(const T* x, T* y, std::size_t n, DropoutMask mask) {
  for (std::size_t i = (blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x) * V; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x * V) {
    Pack<V> a = load<V>(x + i);
    for (int k = 0; k < V; ++k) a.v[k] = mask.apply(a.v[k], i + k);
    store<V>(y + i, a);
  }
}

template <int V, class T>
__global__ void residual_add_kernel(const T* a, const T* b, T* y, std::size_t n) {
  for (std::size_t i = (blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x) * V; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x * V) {
    Pack<V> s = load<V>(a + i);
    const Pack<V> t = load<V>(b + i);
    for (int k = 0; k < V; ++k) s.v[k] += t.v[k];
    store<V>(y + i, s);
  }
}

template <int V, class T>
__global__ void scale_kernel(const T* x, T* y, std::size_t n, float s) {
  for (std::size_t i = (blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x) * V; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x * V) {
    Pack<V> a = load<V>(x + i);
    for (int k = 0; k < V; ++k) a.v[k] *= s;
    store<V>(y + i, a);
  }
}

template <int V, class T>
__global__ void causal_mask_kernel(const T* x, T* y, std::size_t n, std::size_t hidden) {
  for (std::size_t i = (blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x) * V; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x * V) {
    const std::size_t q = (i / hidden) % hidden;
    const std::size_t j = i % hidden;  // V divides hidden, so the V elements share a row
    Pack<V> a = load<V>(x + i);
    for (int k = 0; k < V; ++k)
      if (j + k > q) a.v[k] = -INFINITY;
    store<V>(y + i, a);
  }
}

template <int V, class T>
__global__ void layernorm_kernel(const T* x, const float* gamma, const float* beta, T* y, int hidden, float eps) {
  const std::size_t base = static_cast<std::size_t>(blockIdx.x) * hidden;
  const T* in = x + base;
  layernorm_row<V>([in](int j) { return load<V>(in + j); }, gamma, beta, y + base, hidden, eps);
}

template <int V, class T>
__global__ void softmax_kernel(const T* x, T* y, int hidden) {
  const std::size_t base = static_cast<std::size_t>(blockIdx.x) * hidden;
  const T* in = x + base;
  softmax_row<V>([in](int j) { return load<V>(in + j); }, y + base, hidden);
}

}  // namespace

// ---- launchers

template <class T>
void bias_add(const T* x_, const float* b, T* y_, std::size_t rows, std::size_t hidden, void* stream) {
  const auto* x = device_ptr(x_);
  auto* y = device_ptr(y_);
  const std::size_t n = rows * hidden;
  if (use_vector4(hidden, x, b, y)) {
    bias_add_kernel<4><<<elementwise_blocks(n / 4), 256, 0, as_stream(stream)>>>(x, b, y, n, hidden);
  } else {
    bias_add_kernel<1><<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(x, b, y, n, hidden);
  }
  CUDA_CHECK_LAUNCH();
}

template <class T>
void gelu_tanh(const T* x_, T* y_, std::size_t n, void* stream) {
  const auto* x = device_ptr(x_);
  auto* y = device_ptr(y_);
  if (use_vector4(n, x, y)) {
    gelu_kernel<4><<<elementwise_blocks(n / 4), 256, 0, as_stream(stream)>>>(x, y, n);
  } else {
    gelu_kernel<1><<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(x, y, n);
  }
  CUDA_CHECK_LAUNCH();
}

template <class T>
void dropout(const T* x_, T* y_, std::size_t n, float p, std::uint64_t seed, void* stream) {
  const auto* x = device_ptr(x_);
  auto* y = device_ptr(y_);
  const DropoutMask mask = DropoutMask::make(p, seed);
  if (use_vector4(n, x, y)) {
    dropout_kernel<4><<<elementwise_blocks(n / 4), 256, 0, as_stream(stream)>>>(x, y, n, mask);
  } else {
    dropout_kernel<1><<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(x, y, n, mask);
  }
  CUDA_CHECK_LAUNCH();
}

template <class T>
void residual_add(const T* a_, const T* b_, T* y_, std::size_t n, void* stream) {
  const auto* a = device_ptr(a_);
  const auto* b = device_ptr(b_);
  auto* y = device_ptr(y_);
  if (use_vector4(n, a, b, y)) {
    residual_add_kernel<4><<<elementwise_blocks(n / 4), 256, 0, as_stream(stream)>>>(a, b, y, n);
  } else {
    residual_add_kernel<1><<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(a, b, y, n);
  }
  CUDA_CHECK_LAUNCH();
}

template <class T>
void scale(const T* x_, T* y_, std::size_t n, float s, void* stream) {
  const auto* x = device_ptr(x_);
  auto* y = device_ptr(y_);
  if (use_vector4(n, x, y)) {
    scale_kernel<4><<<elementwise_blocks(n / 4), 256, 0, as_stream(stream)>>>(x, y, n, s);
  } else {
    scale_kernel<1><<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(x, y, n, s);
  }
  CUDA_CHECK_LAUNCH();
}

template <class T>
void causal_mask(const T* x_, T* y_, std::size_t rows, std::size_t hidden, void* stream) {
  const auto* x = device_ptr(x_);
  auto* y = device_ptr(y_);
  const std::size_t n = rows * hidden;
  if (use_vector4(hidden, x, y)) {
    causal_mask_kernel<4><<<elementwise_blocks(n / 4), 256, 0, as_stream(stream)>>>(x, y, n, hidden);
  } else {
    causal_mask_kernel<1><<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(x, y, n, hidden);
  }
  CUDA_CHECK_LAUNCH();
}

template <class T>
void layernorm(const T* x_, const float* gamma, const float* beta, T* y_, std::size_t rows, std::size_t hidden,
               float eps, void* stream) {
  const auto* x = device_ptr(x_);
  auto* y = device_ptr(y_);
  const int h = static_cast<int>(hidden);
  const unsigned blocks = row_blocks(rows);
  if (use_vector4(hidden, x, gamma, beta, y)) {
    layernorm_kernel<4><<<blocks, row_block_threads(hidden, 4), 0, as_stream(stream)>>>(x, gamma, beta, y, h, eps);
  } else {
    layernorm_kernel<1><<<blocks, row_block_threads(hidden, 1), 0, as_stream(stream)>>>(x, gamma, beta, y, h, eps);
  }
  CUDA_CHECK_LAUNCH();
}

template <class T>
void softmax(const T* x_, T* y_, std::size_t rows, std::size_t hidden, void* stream) {
  const auto* x = device_ptr(x_);
  auto* y = device_ptr(y_);
  const int h = static_cast<int>(hidden);
  const unsigned blocks = row_blocks(rows);
  if (use_vector4(hidden, x, y)) {
    softmax_kernel<4><<<blocks, row_block_threads(hidden, 4), 0, as_stream(stream)>>>(x, y, h);
  } else {
    softmax_kernel<1><<<blocks, row_block_threads(hidden, 1), 0, as_stream(stream)>>>(x, y, h);
  }
  CUDA_CHECK_LAUNCH();
}

// ---- the storage types the chains use: float and bf16 bits

#define AIOPT_FUSION_OPS(T)                                                                                  \
  template void bias_add(const T*, const float*, T*, std::size_t, std::size_t, void*);                       \
  template void gelu_tanh(const T*, T*, std::size_t, void*);                                                 \
  template void dropout(const T*, T*, std::size_t, float, std::uint64_t, void*);                             \
  template void residual_add(const T*, const T*, T*, std::size_t, void*);                                    \
  template void scale(const T*, T*, std::size_t, float, void*);                                              \
  template void causal_mask(const T*, T*, std::size_t, std::size_t, void*);                                  \
  template void layernorm(const T*, const float*, const float*, T*, std::size_t, std::size_t, float, void*); \
  template void softmax(const T*, T*, std::size_t, std::size_t, void*);
AIOPT_FUSION_OPS(float)
AIOPT_FUSION_OPS(std::uint16_t)
#undef AIOPT_FUSION_OPS

}  // namespace aiopt::kernels::cuda
