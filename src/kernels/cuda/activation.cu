// GELU on CUDA (kernels/cuda/activation.hpp).
#include "kernels/cuda/activation.hpp"

#include <cstdint>

#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

namespace {

template <int V, class T>
__global__ void gelu_kernel(const T* x, T* y, std::size_t n) {
  for_each_vector<V>(n, [&](std::size_t i) {
    Pack<V> a = load<V>(x + i);
    for (int k = 0; k < V; ++k) a.v[k] = gelu_tanh(a.v[k]);
    store<V>(y + i, a);
  });
}

// gelu(x) = 0.5·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³):
// gelu'(x) = 0.5·(1 + tanh u) + 0.5·x·(1 − tanh²u)·√(2/π)·(1 + 3·0.044715·x²).
__global__ void gelu_tanh_backward_kernel(const float* x, const float* dy, float* dx, std::size_t n) {
  constexpr float sqrt_2_over_pi = 0.7978845608028654f;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const float a = x[i];
    const float t = tanhf(sqrt_2_over_pi * (a + 0.044715f * a * a * a));
    const float grad = 0.5f * (1.0f + t) + 0.5f * a * (1.0f - t * t) * sqrt_2_over_pi * (1.0f + 3.0f * 0.044715f * a * a);
    dx[i] = grad * dy[i];
  }
}

}  // namespace

// ---- launchers

template <class T>
void gelu_tanh(const T* x_, T* y_, std::size_t n, void* stream) {
  const auto* x = device_ptr(x_);
  auto* y = device_ptr(y_);
  launch_vectorized(use_vector4(n, x, y), [&]<int V>() {
    gelu_kernel<V><<<elementwise_blocks(n / V), 256, 0, as_stream(stream)>>>(x, y, n);
  });
}

void gelu_tanh_backward(const float* x, const float* dy, float* dx, std::size_t n, void* stream) {
  if (n == 0) return;
  gelu_tanh_backward_kernel<<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(x, dy, dx, n);
  CUDA_CHECK_LAUNCH();
}

template void gelu_tanh(const float*, float*, std::size_t, void*);
template void gelu_tanh(const std::uint16_t*, std::uint16_t*, std::size_t, void*);

}  // namespace aiopt::kernels::cuda
