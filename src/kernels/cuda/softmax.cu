// Softmax and the causal mask on CUDA (kernels/cuda/softmax.hpp).
#include "kernels/cuda/softmax.hpp"

#include <cstdint>

#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

namespace {

template <int V, class T>
__global__ void causal_mask_kernel(const T* x, T* y, std::size_t n, std::size_t hidden) {
  for_each_vector<V>(n, [&](std::size_t i) {
    const std::size_t q = (i / hidden) % hidden;
    const std::size_t j = i % hidden;  // V divides hidden, so the V elements share a row
    Pack<V> a = load<V>(x + i);
    for (int k = 0; k < V; ++k)
      if (j + k > q) a.v[k] = -INFINITY;
    store<V>(y + i, a);
  });
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
void causal_mask(const T* x_, T* y_, std::size_t rows, std::size_t hidden, void* stream) {
  const auto* x = device_ptr(x_);
  auto* y = device_ptr(y_);
  const std::size_t n = rows * hidden;
  launch_vectorized(use_vector4(hidden, x, y), [&]<int V>() {
    causal_mask_kernel<V><<<elementwise_blocks(n / V), 256, 0, as_stream(stream)>>>(x, y, n, hidden);
  });
}

template <class T>
void softmax(const T* x_, T* y_, std::size_t rows, std::size_t hidden, void* stream) {
  if (rows == 0 || hidden == 0) return;
  const auto* x = device_ptr(x_);
  auto* y = device_ptr(y_);
  const int h = static_cast<int>(hidden);
  const unsigned blocks = row_blocks(rows);
  launch_vectorized(use_vector4(hidden, x, y), [&]<int V>() {
    softmax_kernel<V><<<blocks, row_block_threads(hidden, V), 0, as_stream(stream)>>>(x, y, h);
  });
}

template void causal_mask(const float*, float*, std::size_t, std::size_t, void*);
template void causal_mask(const std::uint16_t*, std::uint16_t*, std::size_t, std::size_t, void*);
template void softmax(const float*, float*, std::size_t, std::size_t, void*);
template void softmax(const std::uint16_t*, std::uint16_t*, std::size_t, std::size_t, void*);

}  // namespace aiopt::kernels::cuda
