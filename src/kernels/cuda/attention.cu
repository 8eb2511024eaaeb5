// Attention on CUDA: naive (cuBLAS + masked softmax kernel), flash fp32 on CUDA cores, flash
// f16/bf16 on tensor cores (attention_mma.cuh), memory_efficient as chunked naive.
#include "kernels/cuda/attention.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "core/cuda_check.hpp"
#include "kernels/cuda/attention_mma.cuh"
#include "kernels/cuda/gemm.hpp"

namespace aiopt::kernels::cuda {

namespace {

cudaStream_t as_cuda_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

void check_dtype(DType dtype, const char* who) {
  if (dtype != DType::f32 && dtype != DType::f16 && dtype != DType::bf16)
    throw std::invalid_argument(std::string(who) + ": dtype must be f32, f16 or bf16, not " + to_string(dtype));
}

// Keys query i sees (kernels/attention_shape.hpp).
__host__ __device__ inline std::size_t visible_keys(bool causal, std::size_t kv_len, std::size_t q_offset,
                                                    std::size_t i) {
  return causal ? (q_offset + i + 1 < kv_len ? q_offset + i + 1 : kv_len) : kv_len;
}

// ---- masked softmax of score rows, in place

template <class T>
__device__ __forceinline__ float widen(T x) {
  return static_cast<float>(x);
}
template <>
__device__ __forceinline__ float widen(__half x) {
  return __half2float(x);
}
template <>
__device__ __forceinline__ float widen(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <class T>
__device__ __forceinline__ T narrow(float x);
template <>
__device__ __forceinline__ float narrow(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half narrow(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 narrow(float x) {
  return __float2bfloat16_rn(x);
}

constexpr int softmax_threads = 256;

// Block-wide max or sum of one value per thread; every thread gets the result.
template <bool Max>
__device__ float block_reduce(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(0xffffffffu, v, o);
    v = Max ? fmaxf(v, w) : v + w;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // `shared` may still be read from the previous reduction
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = Max ? -INFINITY : 0.0f;
  for (int w = 0; w < softmax_threads / 32; ++w) v = Max ? fmaxf(v, shared[w]) : v + shared[w];
  return v;
}

// One block per row of `rows_per_head`·heads rows of length `row_len`, row r being query
// first_query + r % rows_per_head: p = softmax over its visible keys, 0 past them.
template <class T>
__global__ void masked_softmax_kernel(T* scores, std::size_t row_len, std::size_t rows_per_head,
                                      std::size_t first_query, bool causal, std::size_t kv_len,
                                      std::size_t q_offset) {
  __shared__ float partial[softmax_threads / 32];
  const std::size_t row = blockIdx.x;
  T* x = scores + row * row_len;
  const std::size_t n = visible_keys(causal, kv_len, q_offset, first_query + row % rows_per_head);
  float max = -INFINITY;
  for (std::size_t j = threadIdx.x; j < n; j += blockDim.x) max = fmaxf(max, widen(x[j]));
  max = block_reduce<true>(max, partial);
  float sum = 0.0f;
  for (std::size_t j = threadIdx.x; j < n; j += blockDim.x) sum += __expf(widen(x[j]) - max);
  sum = block_reduce<false>(sum, partial);
  const float inv = 1.0f / sum;
  for (std::size_t j = threadIdx.x; j < row_len; j += blockDim.x)
    x[j] = narrow<T>(j < n ? __expf(widen(x[j]) - max) * inv : 0.0f);
}

template <class T>
void launch_masked_softmax(void* scores, std::size_t rows, std::size_t row_len, std::size_t rows_per_head,
                           std::size_t first_query, const AttentionShape& s, cudaStream_t stream) {
  if (rows > 0x7fffffffu) throw std::invalid_argument("attention: too many score rows for one launch");
  masked_softmax_kernel<T><<<static_cast<unsigned>(rows), softmax_threads, 0, stream>>>(
      static_cast<T*>(scores), row_len, rows_per_head, first_query, s.causal, s.kv_len, s.q_offset);
  CUDA_CHECK_LAUNCH();
}

void masked_softmax(void* scores, DType dtype, std::size_t rows, std::size_t row_len, std::size_t rows_per_head,
                    std::size_t first_query, const AttentionShape& s, cudaStream_t stream) {
  switch (dtype) {
    case DType::f16: launch_masked_softmax<__half>(scores, rows, row_len, rows_per_head, first_query, s, stream); break;
    case DType::bf16:
      launch_masked_softmax<__nv_bfloat16>(scores, rows, row_len, rows_per_head, first_query, s, stream);
      break;
    default: launch_masked_softmax<float>(scores, rows, row_len, rows_per_head, first_query, s, stream); break;
  }
}

std::size_t element_bytes(DType dtype) { return dtype == DType::f32 ? 4 : 2; }

// ---- flash, fp32 on CUDA cores
//
// A block of 128 threads takes 32 queries of one (b, h); 4 neighbouring lanes share a query,
// each holding DMAX/4 of its dimensions of q and of the output accumulator in registers. Tiles
// of 32 keys of k and v are staged in shared memory; each lane group computes its query's 32
// scores (partial dots joined by two shuffles), then the online softmax and the v update.

constexpr int f32_threads = 128, f32_lanes = 4, f32_queries = f32_threads / f32_lanes, f32_keys = 32;

template <int DMAX>
__global__ void __launch_bounds__(f32_threads)
flash_f32_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                 float* __restrict__ out, int d, std::size_t q_len, std::size_t kv_len, std::size_t kv_capacity,
                 std::size_t q_offset, bool causal, float scale_log2) {
  constexpr int per_lane = DMAX / f32_lanes;
  __shared__ float sk[f32_keys][DMAX + 1];  // +1: lanes of a group read different banks
  __shared__ float sv[f32_keys][DMAX + 1];
  const std::size_t bh = blockIdx.y;
  // Causal blocks at the end do the most work; launching them first evens the tail.
  const std::size_t tile = causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x;
  const std::size_t q0 = tile * f32_queries;
  const int lane = threadIdx.x % f32_lanes, local = threadIdx.x / f32_lanes;
  const std::size_t qi = q0 + local;
  const bool active = qi < q_len;
  const float* qh = q + (bh * q_len) * d;
  const float* kh = k + (bh * kv_capacity) * d;
  const float* vh = v + (bh * kv_capacity) * d;

  // This lane's dimensions: lane, lane + 4, ... (interleaved, so the shared reads spread banks).
  float qr[per_lane], acc[per_lane];
#pragma unroll
  for (int t = 0; t < per_lane; ++t) {
    const int dim = lane + t * f32_lanes;
    qr[t] = active && dim < d ? qh[qi * d + dim] * scale_log2 : 0.0f;
    acc[t] = 0.0f;
  }
  float row_max = -INFINITY, row_sum = 0.0f;
  const std::size_t last = q0 + f32_queries < q_len ? q0 + f32_queries - 1 : q_len - 1;
  const std::size_t keys = visible_keys(causal, kv_len, q_offset, last);
  const std::size_t mine = visible_keys(causal, kv_len, q_offset, qi);

  for (std::size_t j0 = 0; j0 < keys; j0 += f32_keys) {
    __syncthreads();  // the previous tile is no longer read
    for (int e = threadIdx.x; e < f32_keys * DMAX; e += f32_threads) {
      const int r = e / DMAX, c = e % DMAX;
      const bool in = j0 + r < kv_len && c < d;
      sk[r][c] = in ? kh[(j0 + r) * d + c] : 0.0f;
      sv[r][c] = in ? vh[(j0 + r) * d + c] : 0.0f;
    }
    __syncthreads();
    float s[f32_keys];
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < f32_keys; ++j) {
      float dot = 0.0f;
#pragma unroll
      for (int t = 0; t < per_lane; ++t) dot += qr[t] * sk[j][lane + t * f32_lanes];
      dot += __shfl_xor_sync(0xffffffffu, dot, 1);
      dot += __shfl_xor_sync(0xffffffffu, dot, 2);
      s[j] = j0 + j < mine ? dot : -INFINITY;
      tile_max = fmaxf(tile_max, s[j]);
    }
    const float new_max = fmaxf(row_max, tile_max);
    // A query whose keys are all masked so far (only past q_len) keeps everything at zero.
    const float base = new_max == -INFINITY ? 0.0f : new_max;
    const float correction = exp2f(row_max - base);
    row_sum *= correction;
#pragma unroll
    for (int t = 0; t < per_lane; ++t) acc[t] *= correction;
#pragma unroll
    for (int j = 0; j < f32_keys; ++j) {
      const float p = exp2f(s[j] - base);
      row_sum += p;
#pragma unroll
      for (int t = 0; t < per_lane; ++t) acc[t] += p * sv[j][lane + t * f32_lanes];
    }
    row_max = new_max;
  }
  if (!active) return;
  const float inv = 1.0f / row_sum;
  float* oh = out + (bh * q_len + qi) * d;
#pragma unroll
  for (int t = 0; t < per_lane; ++t) {
    const int dim = lane + t * f32_lanes;
    if (dim < d) oh[dim] = acc[t] * inv;
  }
}

template <int DMAX>
void launch_flash_f32(const float* q, const float* k, const float* v, float* out, const AttentionShape& s,
                      cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((s.q_len + f32_queries - 1) / f32_queries),
                  static_cast<unsigned>(s.batch * s.heads));
  flash_f32_kernel<DMAX><<<grid, f32_threads, 0, stream>>>(q, k, v, out, static_cast<int>(s.head_dim), s.q_len,
                                                          s.kv_len, s.kv_capacity, s.q_offset, s.causal,
                                                          s.scale * log2e);
  CUDA_CHECK_LAUNCH();
}

void check_grid(const AttentionShape& s, std::size_t q_per_block) {
  if (s.batch * s.heads > 65535) throw std::invalid_argument("attention: batch·heads exceeds 65535 blocks");
  if ((s.q_len + q_per_block - 1) / q_per_block > 0x7fffffffu)
    throw std::invalid_argument("attention: q_len too large for one launch");
}

}  // namespace

std::size_t naive_workspace_elements(const AttentionShape& shape) {
  return shape.batch * shape.heads * shape.q_len * shape.kv_len;
}

void attention_naive(const void* q, const void* k, const void* v, void* out, void* scores, DType dtype,
                     const AttentionShape& shape, void* stream) {
  shape.validate();
  check_dtype(dtype, "attention_naive");
  const std::size_t d = shape.head_dim, tq = shape.q_len, tk = shape.kv_len, bh = shape.batch * shape.heads;
  // S = scale·q·kᵀ: (B·H) products (Tq, d)·(d, Tk) into scores (B·H, Tq, Tk).
  gemm_strided_batched(false, true, tq, tk, d, shape.scale, q, d, tq * d, k, d, shape.kv_capacity * d, 0.0f,
                       scores, tk, tq * tk, bh, dtype, stream);
  masked_softmax(scores, dtype, bh * tq, tk, tq, 0, shape, as_cuda_stream(stream));
  // out = P·v: (B·H) products (Tq, Tk)·(Tk, d).
  gemm_strided_batched(false, false, tq, d, tk, 1.0f, scores, tk, tq * tk, v, d, shape.kv_capacity * d, 0.0f, out,
                       d, tq * d, bh, dtype, stream);
}

void attention_flash(const void* q, const void* k, const void* v, void* out, DType dtype,
                     const AttentionShape& shape, void* stream) {
  shape.validate();
  check_dtype(dtype, "attention_flash");
  const cudaStream_t st = as_cuda_stream(stream);
  if (dtype == DType::f32) {
    check_grid(shape, f32_queries);
    const auto* qf = static_cast<const float*>(q);
    const auto* kf = static_cast<const float*>(k);
    const auto* vf = static_cast<const float*>(v);
    auto* of = static_cast<float*>(out);
    if (shape.head_dim <= 32) {
      launch_flash_f32<32>(qf, kf, vf, of, shape, st);
    } else if (shape.head_dim <= 64) {
      launch_flash_f32<64>(qf, kf, vf, of, shape, st);
    } else if (shape.head_dim <= 128) {
      launch_flash_f32<128>(qf, kf, vf, of, shape, st);
    } else {
      throw std::invalid_argument("attention_flash: fp32 head_dim must be at most 128, not " +
                                  std::to_string(shape.head_dim));
    }
    return;
  }
  if (shape.head_dim != 64 && shape.head_dim != 128)
    throw std::invalid_argument("attention_flash: the f16/bf16 tensor-core kernel takes head_dim 64 or 128, not " +
                                std::to_string(shape.head_dim));
  for (const void* p : {q, k, v, static_cast<const void*>(out)})
    if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0)
      throw std::invalid_argument("attention_flash: f16/bf16 pointers must be 16-byte aligned");
  check_grid(shape, mma_queries);
  if (dtype == DType::f16) {
    launch_flash_mma<__half>(q, k, v, out, shape, st);
  } else {
    launch_flash_mma<__nv_bfloat16>(q, k, v, out, shape, st);
  }
}

std::size_t memory_efficient_workspace_elements(const AttentionShape& shape, std::size_t chunk) {
  return shape.batch * shape.heads * std::min(chunk, shape.q_len) * shape.kv_len;
}

void attention_memory_efficient(const void* q, const void* k, const void* v, void* out, void* scores,
                                DType dtype, const AttentionShape& shape, std::size_t chunk, void* stream) {
  shape.validate();
  check_dtype(dtype, "attention_memory_efficient");
  if (chunk == 0) throw std::invalid_argument("attention_memory_efficient: chunk must be positive");
  const std::size_t d = shape.head_dim, tq = shape.q_len, bh = shape.batch * shape.heads;
  const std::size_t bytes = element_bytes(dtype);
  const auto* qb = static_cast<const char*>(q);
  auto* ob = static_cast<char*>(out);
  for (std::size_t i0 = 0; i0 < tq; i0 += chunk) {
    const std::size_t rows = std::min(chunk, tq - i0);
    // Keys past the chunk's last visible one are never needed: scores (B·H, rows, keys).
    const std::size_t keys = visible_keys(shape.causal, shape.kv_len, shape.q_offset, i0 + rows - 1);
    gemm_strided_batched(false, true, rows, keys, d, shape.scale, qb + i0 * d * bytes, d, tq * d, k, d,
                         shape.kv_capacity * d, 0.0f, scores, keys, rows * keys, bh, dtype, stream);
    masked_softmax(scores, dtype, bh * rows, keys, rows, i0, shape, as_cuda_stream(stream));
    gemm_strided_batched(false, false, rows, d, keys, 1.0f, scores, keys, rows * keys, v, d,
                         shape.kv_capacity * d, 0.0f, ob + i0 * d * bytes, d, tq * d, bh, dtype, stream);
  }
}

}  // namespace aiopt::kernels::cuda
