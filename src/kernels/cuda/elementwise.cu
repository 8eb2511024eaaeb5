// Elementwise ops on CUDA (kernels/cuda/elementwise.hpp): grid-stride over vectors of V elements.
#include "kernels/cuda/elementwise.hpp"

#include <cstdint>

#include "kernels/cuda/column_sums.cuh"
#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

namespace {

template <int V, class T>
__global__ void bias_add_kernel(const T* x, const float* b, T* y, std::size_t n, std::size_t hidden) {
  for_each_vector<V>(n, [&](std::size_t i) {
    Pack<V> a = load<V>(x + i);
    const Pack<V> c = load<V>(b + i % hidden);
    for (int k = 0; k < V; ++k) a.v[k] += c.v[k];
    store<V>(y + i, a);
  });
}

template <int V, class T>
__global__ void dropout_kernel(const T* x, T* y, std::size_t n, DropoutMask mask) {
  for_each_vector<V>(n, [&](std::size_t i) {
    Pack<V> a = load<V>(x + i);
    for (int k = 0; k < V; ++k) a.v[k] = mask.apply(a.v[k], i + k);
    store<V>(y + i, a);
  });
}

template <int V, class T>
__global__ void residual_add_kernel(const T* a, const T* b, T* y, std::size_t n) {
  for_each_vector<V>(n, [&](std::size_t i) {
    Pack<V> s = load<V>(a + i);
    const Pack<V> t = load<V>(b + i);
    for (int k = 0; k < V; ++k) s.v[k] += t.v[k];
    store<V>(y + i, s);
  });
}

template <int V, class T>
__global__ void scale_kernel(const T* x, T* y, std::size_t n, float s) {
  for_each_vector<V>(n, [&](std::size_t i) {
    Pack<V> a = load<V>(x + i);
    for (int k = 0; k < V; ++k) a.v[k] *= s;
    store<V>(y + i, a);
  });
}

// The column-sum term of the bias gradient: dy.
struct BiasTerms {
  static constexpr int count = 1;
  const float* dy;
  __device__ void at(std::size_t r, int c, int n, float* t) const { t[0] = dy[r * n + c]; }
};

}  // namespace

// ---- launchers

template <class T>
void bias_add(const T* x_, const float* b, T* y_, std::size_t rows, std::size_t hidden, void* stream) {
  const auto* x = device_ptr(x_);
  auto* y = device_ptr(y_);
  const std::size_t n = rows * hidden;
  launch_vectorized(use_vector4(hidden, x, b, y), [&]<int V>() {
    bias_add_kernel<V><<<elementwise_blocks(n / V), 256, 0, as_stream(stream)>>>(x, b, y, n, hidden);
  });
}

template <class T>
void dropout(const T* x_, T* y_, std::size_t n, const cpu::Dropout& dropout_mask, void* stream) {
  const auto* x = device_ptr(x_);
  auto* y = device_ptr(y_);
  const DropoutMask mask(dropout_mask);
  launch_vectorized(use_vector4(n, x, y), [&]<int V>() {
    dropout_kernel<V><<<elementwise_blocks(n / V), 256, 0, as_stream(stream)>>>(x, y, n, mask);
  });
}

template <class T>
void residual_add(const T* a_, const T* b_, T* y_, std::size_t n, void* stream) {
  const auto* a = device_ptr(a_);
  const auto* b = device_ptr(b_);
  auto* y = device_ptr(y_);
  launch_vectorized(use_vector4(n, a, b, y), [&]<int V>() {
    residual_add_kernel<V><<<elementwise_blocks(n / V), 256, 0, as_stream(stream)>>>(a, b, y, n);
  });
}

template <class T>
void scale(const T* x_, T* y_, std::size_t n, float s, void* stream) {
  const auto* x = device_ptr(x_);
  auto* y = device_ptr(y_);
  launch_vectorized(use_vector4(n, x, y), [&]<int V>() {
    scale_kernel<V><<<elementwise_blocks(n / V), 256, 0, as_stream(stream)>>>(x, y, n, s);
  });
}

void bias_backward(const float* dy, float* db, std::size_t rows, std::size_t n, void* stream) {
  if (rows == 0 || n == 0) return;
  column_sums(BiasTerms{dy}, rows, n, db, nullptr, as_stream(stream), "bias_backward");
}

#define AIOPT_ELEMENTWISE(T)                                                                   \
  template void bias_add(const T*, const float*, T*, std::size_t, std::size_t, void*);         \
  template void dropout(const T*, T*, std::size_t, const cpu::Dropout&, void*);                \
  template void residual_add(const T*, const T*, T*, std::size_t, void*);                      \
  template void scale(const T*, T*, std::size_t, float, void*);
AIOPT_ELEMENTWISE(float)
AIOPT_ELEMENTWISE(std::uint16_t)
#undef AIOPT_ELEMENTWISE

}  // namespace aiopt::kernels::cuda
