// Head layouts on CUDA (kernels/cuda/heads.hpp).
#include "kernels/cuda/heads.hpp"

#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

namespace {

// Element i of a token-major tensor (batch, len, parts, heads, head_dim): parts is 3 for the
// fused q, k, v projection and 1 for the attention output.
struct TokenIndex {
  std::size_t b, t, part, h, d;
};

__device__ __forceinline__ TokenIndex token_index(std::size_t i, std::size_t len, std::size_t parts, std::size_t heads,
                                                  std::size_t head_dim) {
  const std::size_t bt = i / (parts * heads * head_dim);  // b·len + t
  return {bt / len, bt % len, i / (heads * head_dim) % parts, i / head_dim % heads, i % head_dim};
}

// The offset of that element at row `row` of a head-major tensor (batch, heads, rows, head_dim).
__device__ __forceinline__ std::size_t head_major(const TokenIndex& e, std::size_t heads, std::size_t rows,
                                                  std::size_t row, std::size_t head_dim) {
  return ((e.b * heads + e.h) * rows + row) * head_dim + e.d;
}

// Grid-stride over the input in vectors of V (V divides head_dim, so a vector stays in one head).
// qkv: (batch, len, 3, heads, head_dim) -> q: (batch, heads, len, head_dim) and
// k_cache, v_cache: (batch, heads, capacity, head_dim) at positions pos0 + t.
template <int V>
__global__ void split_qkv_kernel(const float* qkv, float* q, float* k_cache, float* v_cache, std::size_t len,
                                 std::size_t heads, std::size_t head_dim, std::size_t capacity, std::size_t pos0,
                                 std::size_t n) {
  for_each_vector<V>(n, [&](std::size_t i) {
    const TokenIndex e = token_index(i, len, 3, heads, head_dim);
    float* dst = e.part == 0 ? q + head_major(e, heads, len, e.t, head_dim)
                             : (e.part == 1 ? k_cache : v_cache) + head_major(e, heads, capacity, pos0 + e.t, head_dim);
    store<V>(dst, load<V>(qkv + i));
  });
}

// Grid-stride over the output in vectors of V (V divides head_dim).
// x: (batch, heads, len, head_dim) -> y: (batch, len, heads·head_dim).
template <int V>
__global__ void merge_heads_kernel(const float* x, float* y, std::size_t len, std::size_t heads, std::size_t head_dim,
                                   std::size_t n) {
  for_each_vector<V>(n, [&](std::size_t i) {
    const TokenIndex e = token_index(i, len, 1, heads, head_dim);
    store<V>(y + i, load<V>(x + head_major(e, heads, len, e.t, head_dim)));
  });
}

// q, k, v: (batch, heads, len, head_dim) -> qkv: (batch, len, 3, heads, head_dim); one thread
// per output element.
__global__ void merge_qkv_kernel(const float* q, const float* k, const float* v, float* qkv, std::size_t len,
                                 std::size_t heads, std::size_t head_dim, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const TokenIndex e = token_index(i, len, 3, heads, head_dim);
    const float* src = e.part == 0 ? q : e.part == 1 ? k : v;
    qkv[i] = src[head_major(e, heads, len, e.t, head_dim)];
  }
}

// x: (batch, len, heads·head_dim) -> y: (batch, heads, len, head_dim); one thread per input element.
__global__ void split_heads_kernel(const float* x, float* y, std::size_t len, std::size_t heads,
                                   std::size_t head_dim, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const TokenIndex e = token_index(i, len, 1, heads, head_dim);
    y[head_major(e, heads, len, e.t, head_dim)] = x[i];
  }
}

}  // namespace

// ---- launchers

void split_qkv(const float* qkv, float* q, float* k_cache, float* v_cache, std::size_t batch, std::size_t len,
               std::size_t heads, std::size_t head_dim, std::size_t capacity, std::size_t pos0, void* stream) {
  const std::size_t n = batch * len * 3 * heads * head_dim;
  if (n == 0) return;
  launch_vectorized(use_vector4(head_dim, qkv, q, k_cache, v_cache), [&]<int V>() {
    split_qkv_kernel<V><<<elementwise_blocks(n / V), 256, 0, as_stream(stream)>>>(qkv, q, k_cache, v_cache, len, heads,
                                                                                   head_dim, capacity, pos0, n);
  });
}

void merge_heads(const float* x, float* y, std::size_t batch, std::size_t len, std::size_t heads,
                 std::size_t head_dim, void* stream) {
  const std::size_t n = batch * len * heads * head_dim;
  if (n == 0) return;
  launch_vectorized(use_vector4(head_dim, x, y), [&]<int V>() {
    merge_heads_kernel<V><<<elementwise_blocks(n / V), 256, 0, as_stream(stream)>>>(x, y, len, heads, head_dim, n);
  });
}

void merge_qkv(const float* q, const float* k, const float* v, float* qkv, std::size_t batch, std::size_t len,
               std::size_t heads, std::size_t head_dim, void* stream) {
  const std::size_t n = batch * len * 3 * heads * head_dim;
  if (n == 0) return;
  merge_qkv_kernel<<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(q, k, v, qkv, len, heads, head_dim, n);
  CUDA_CHECK_LAUNCH();
}

void split_heads(const float* x, float* y, std::size_t batch, std::size_t len, std::size_t heads,
                 std::size_t head_dim, void* stream) {
  const std::size_t n = batch * len * heads * head_dim;
  if (n == 0) return;
  split_heads_kernel<<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(x, y, len, heads, head_dim, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace aiopt::kernels::cuda
