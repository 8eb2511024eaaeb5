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
#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/gemm.hpp"
#include "kernels/cuda/masked_softmax.cuh"

namespace aiopt::kernels::cuda {

namespace {

void check_dtype(DType dtype, const char* who) {
  if (dtype != DType::f32 && dtype != DType::f16 && dtype != DType::bf16)
    throw std::invalid_argument(std::string(who) + ": dtype must be f32, f16 or bf16, not " + to_string(dtype));
}

std::size_t element_bytes(DType dtype) { return dtype == DType::f32 ? 4 : 2; }

// ---- flash, fp32 on CUDA cores
//
// A block of 128 threads takes 32 queries of one (b, h); 4 neighbouring lanes share a query,
// each holding DMAX/4 of its dimensions of q and of the output accumulator in registers. Tiles
// of 32 keys of k and v are staged in shared memory; each lane group computes its query's 32
// scores (partial dots joined by two shuffles), then the online softmax and the v update.
// Scores are kept in the log2 domain (q pre-scaled by scale·log2e), so when `lse` is not null
// the training forward's log-sum-exp is ln2·(max + log2(sum)).

constexpr int f32_threads = 128, f32_lanes = 4, f32_queries = f32_threads / f32_lanes, f32_keys = 32;

template <int DMAX>
__global__ void __launch_bounds__(f32_threads)
flash_f32_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                 float* __restrict__ out, float* __restrict__ lse, int d, std::size_t q_len, std::size_t kv_len, std::size_t kv_capacity,
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
  if (lse != nullptr && lane == 0) lse[bh * q_len + qi] = ln2 * (row_max + log2f(row_sum));
}

template <int DMAX>
void launch_flash_f32(const float* q, const float* k, const float* v, float* out, float* lse,
                      const AttentionShape& s, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((s.q_len + f32_queries - 1) / f32_queries),
                  static_cast<unsigned>(s.batch * s.heads));
  flash_f32_kernel<DMAX><<<grid, f32_threads, 0, stream>>>(q, k, v, out, lse, static_cast<int>(s.head_dim), s.q_len,
                                                          s.kv_len, s.kv_capacity, s.q_offset, s.causal,
                                                          s.scale * log2e);
  CUDA_CHECK_LAUNCH();
}

void check_grid(const AttentionShape& s, std::size_t q_per_block) {
  if (s.batch * s.heads > 65535) throw std::invalid_argument("attention: batch·heads exceeds 65535 blocks");
  if ((s.q_len + q_per_block - 1) / q_per_block > 0x7fffffffu)
    throw std::invalid_argument("attention: q_len too large for one launch");
}

// The fp32 flash forward; lse: (B, H, Tq) or null.
void flash_f32(const float* q, const float* k, const float* v, float* out, float* lse, const AttentionShape& shape,
               cudaStream_t stream) {
  check_grid(shape, f32_queries);
  if (shape.head_dim <= 32) {
    launch_flash_f32<32>(q, k, v, out, lse, shape, stream);
  } else if (shape.head_dim <= 64) {
    launch_flash_f32<64>(q, k, v, out, lse, shape, stream);
  } else if (shape.head_dim <= 128) {
    launch_flash_f32<128>(q, k, v, out, lse, shape, stream);
  } else {
    throw std::invalid_argument("attention_flash: fp32 head_dim must be at most 128, not " +
                                std::to_string(shape.head_dim));
  }
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
  masked_softmax(scores, dtype, bh * tq, tk, tq, 0, shape, as_stream(stream));
  // out = P·v: (B·H) products (Tq, Tk)·(Tk, d).
  gemm_strided_batched(false, false, tq, d, tk, 1.0f, scores, tk, tq * tk, v, d, shape.kv_capacity * d, 0.0f, out,
                       d, tq * d, bh, dtype, stream);
}

void attention_flash(const void* q, const void* k, const void* v, void* out, DType dtype,
                     const AttentionShape& shape, void* stream) {
  shape.validate();
  check_dtype(dtype, "attention_flash");
  const cudaStream_t st = as_stream(stream);
  if (dtype == DType::f32) {
    flash_f32(static_cast<const float*>(q), static_cast<const float*>(k), static_cast<const float*>(v),
              static_cast<float*>(out), nullptr, shape, st);
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

void attention_flash(const float* q, const float* k, const float* v, float* out, float* lse,
                     const AttentionShape& shape, void* stream) {
  shape.validate();
  flash_f32(q, k, v, out, lse, shape, as_stream(stream));
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
    masked_softmax(scores, dtype, bh * rows, keys, rows, i0, shape, as_stream(stream));
    gemm_strided_batched(false, false, rows, d, keys, 1.0f, scores, keys, rows * keys, v, d,
                         shape.kv_capacity * d, 0.0f, ob + i0 * d * bytes, d, tq * d, bh, dtype, stream);
  }
}

}  // namespace aiopt::kernels::cuda
