// The tensor-fusion chains, one kernel each: inputs read from global memory once, the output
// written once; intermediates stay in registers, or in the block's own output row (in L1/L2)
// between the statistics and the normalization.
#include "kernels/cuda/fused_chains.hpp"
#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

namespace {

// ---- kernels

template <int V, class T>
__global__ void bias_gelu_kernel(const T* x, const float* b, T* y, std::size_t n, std::size_t hidden) {
  for_each_vector<V>(n, [&](std::size_t i) {
    Pack<V> a = load<V>(x + i);
    const Pack<V> c = load<V>(b + i % hidden);
    for (int k = 0; k < V; ++k) a.v[k] = gelu_tanh(a.v[k] + c.v[k]);
    store<V>(y + i, a);
  });
}

// One block per row. float: build residual + dropout(x + b) in the output row, then normalize it
// in place; each thread reads back only the elements it wrote, so no barrier is needed between.
// bf16: the pre-norm row must stay fp32, and the output row cannot hold it, so each pass
// recomputes it from x, residual and b (re-read from L1/L2, not memory).
template <int V, class T>
__global__ void bias_dropout_residual_layernorm_kernel(const T* x, const float* b, const T* residual,
                                                       const float* gamma, const float* beta, T* y,
                                                       int hidden, DropoutMask mask, float eps) {
  const std::size_t base = static_cast<std::size_t>(blockIdx.x) * hidden;
  const auto pre_norm = [=](int j) {
    Pack<V> a = load<V>(x + base + j);
    const Pack<V> c = load<V>(b + j);
    const Pack<V> r = load<V>(residual + base + j);
    for (int k = 0; k < V; ++k) a.v[k] = r.v[k] + mask.apply(a.v[k] + c.v[k], base + j + k);
    return a;
  };
  if constexpr (std::is_same_v<T, float>) {
    for (int j = static_cast<int>(threadIdx.x) * V; j < hidden; j += static_cast<int>(blockDim.x) * V)
      store<V>(y + base + j, pre_norm(j));
    const float* row = y + base;
    layernorm_row<V>([row](int j) { return load<V>(row + j); }, gamma, beta, y + base, hidden, eps);
  } else {
    layernorm_row<V>(pre_norm, gamma, beta, y + base, hidden, eps);
  }
}

// One block per row. float: write the scaled, masked scores to the output row, then softmax in
// place. bf16: the scores are recomputed from x in each pass, as in the LayerNorm chain.
template <int V, class T>
__global__ void scale_mask_softmax_kernel(const T* x, T* y, int hidden, float s) {
  const std::size_t base = static_cast<std::size_t>(blockIdx.x) * hidden;
  const int q = static_cast<int>(blockIdx.x % static_cast<unsigned>(hidden));
  const auto scores = [=](int j) {
    Pack<V> a = load<V>(x + base + j);
    for (int k = 0; k < V; ++k) a.v[k] = j + k > q ? -INFINITY : s * a.v[k];
    return a;
  };
  if constexpr (std::is_same_v<T, float>) {
    for (int j = static_cast<int>(threadIdx.x) * V; j < hidden; j += static_cast<int>(blockDim.x) * V)
      store<V>(y + base + j, scores(j));
    const float* row = y + base;
    softmax_row<V>([row](int j) { return load<V>(row + j); }, y + base, hidden);
  } else {
    softmax_row<V>(scores, y + base, hidden);
  }
}

}  // namespace

// ---- launchers

template <class T>
void bias_gelu_fused(const T* x_, const float* b, T* y_, std::size_t rows, std::size_t hidden, void* stream) {
  const auto* x = device_ptr(x_);
  auto* y = device_ptr(y_);
  const std::size_t n = rows * hidden;
  launch_vectorized(use_vector4(hidden, x, b, y), [&]<int V>() {
    bias_gelu_kernel<V><<<elementwise_blocks(n / V), 256, 0, as_stream(stream)>>>(x, b, y, n, hidden);
  });
}

template <class T>
void bias_dropout_residual_layernorm_fused(const T* x_, const float* b, const T* residual_, const float* gamma,
                                           const float* beta, T* y_, std::size_t rows, std::size_t hidden,
                                           const cpu::Dropout& dropout_mask, float eps, void* stream) {
  const auto* x = device_ptr(x_);
  const auto* residual = device_ptr(residual_);
  auto* y = device_ptr(y_);
  const DropoutMask mask(dropout_mask);
  if (rows == 0 || hidden == 0) return;
  const int h = static_cast<int>(hidden);
  const unsigned blocks = row_blocks(rows);
  launch_vectorized(use_vector4(hidden, x, b, residual, gamma, beta, y), [&]<int V>() {
    bias_dropout_residual_layernorm_kernel<V><<<blocks, row_block_threads(hidden, V), 0, as_stream(stream)>>>(
        x, b, residual, gamma, beta, y, h, mask, eps);
  });
}

template <class T>
void scale_mask_softmax_fused(const T* x_, T* y_, std::size_t rows, std::size_t hidden, float s, void* stream) {
  if (rows == 0 || hidden == 0) return;
  const auto* x = device_ptr(x_);
  auto* y = device_ptr(y_);
  const int h = static_cast<int>(hidden);
  const unsigned blocks = row_blocks(rows);
  launch_vectorized(use_vector4(hidden, x, y), [&]<int V>() {
    scale_mask_softmax_kernel<V><<<blocks, row_block_threads(hidden, V), 0, as_stream(stream)>>>(x, y, h, s);
  });
}

// ---- the storage types the chains use: float and bf16 bits

#define AIOPT_FUSED_CHAINS(T)                                                                                   \
  template void bias_gelu_fused(const T*, const float*, T*, std::size_t, std::size_t, void*);                  \
  template void bias_dropout_residual_layernorm_fused(const T*, const float*, const T*, const float*,           \
                                                      const float*, T*, std::size_t, std::size_t,               \
                                                      const cpu::Dropout&, float, void*);                       \
  template void scale_mask_softmax_fused(const T*, T*, std::size_t, std::size_t, float, void*);
AIOPT_FUSED_CHAINS(float)
AIOPT_FUSED_CHAINS(std::uint16_t)
#undef AIOPT_FUSED_CHAINS

}  // namespace aiopt::kernels::cuda
