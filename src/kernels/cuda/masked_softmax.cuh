#pragma once
// The masked softmax of attention score rows, in place, shared by the naive and
// memory-efficient forwards (attention.cu) and the naive backward (attention_backward.cu).
#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>

#include "core/cuda_check.hpp"
#include "core/dtype.hpp"
#include "kernels/attention_shape.hpp"
#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

inline constexpr int masked_softmax_threads = 256;

// One block per row of `rows_per_head`·heads rows of length `row_len`, row r being query
// first_query + r % rows_per_head: p = softmax over its visible keys, 0 past them.
template <class T>
__global__ void masked_softmax_kernel(T* scores, std::size_t row_len, std::size_t rows_per_head,
                                      std::size_t first_query, bool causal, std::size_t kv_len,
                                      std::size_t q_offset) {
  const std::size_t row = blockIdx.x;
  T* x = scores + row * row_len;
  const std::size_t n = visible_keys(causal, kv_len, q_offset, first_query + row % rows_per_head);
  float max = -INFINITY;
  for (std::size_t j = threadIdx.x; j < n; j += blockDim.x) max = fmaxf(max, widen(x[j]));
  max = block_reduce(max, Max{}, -INFINITY);
  float sum = 0.0f;
  for (std::size_t j = threadIdx.x; j < n; j += blockDim.x) sum += expf(widen(x[j]) - max);
  const float inv = 1.0f / block_reduce(sum, Sum{}, 0.0f);
  for (std::size_t j = threadIdx.x; j < row_len; j += blockDim.x)
    x[j] = narrow<T>(j < n ? expf(widen(x[j]) - max) * inv : 0.0f);
}

template <class T>
void launch_masked_softmax(void* scores, std::size_t rows, std::size_t row_len, std::size_t rows_per_head,
                           std::size_t first_query, const AttentionShape& s, cudaStream_t stream) {
  if (rows == 0) return;
  masked_softmax_kernel<T><<<row_blocks(rows), masked_softmax_threads, 0, stream>>>(
      static_cast<T*>(scores), row_len, rows_per_head, first_query, s.causal, s.kv_len, s.q_offset);
  CUDA_CHECK_LAUNCH();
}

// scores: (rows, row_len) of dtype (f32, f16 or bf16).
inline void masked_softmax(void* scores, DType dtype, std::size_t rows, std::size_t row_len,
                           std::size_t rows_per_head, std::size_t first_query, const AttentionShape& s,
                           cudaStream_t stream) {
  switch (dtype) {
    case DType::f16: launch_masked_softmax<__half>(scores, rows, row_len, rows_per_head, first_query, s, stream); break;
    case DType::bf16:
      launch_masked_softmax<__nv_bfloat16>(scores, rows, row_len, rows_per_head, first_query, s, stream);
      break;
    default: launch_masked_softmax<float>(scores, rows, row_len, rows_per_head, first_query, s, stream); break;
  }
}

}  // namespace aiopt::kernels::cuda
