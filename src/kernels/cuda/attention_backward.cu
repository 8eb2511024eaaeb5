// Training attention on CUDA, fp32 (kernels/cuda/attention_backward.hpp): the FlashAttention-2
// backward (Dao 2023) from the forward's lse (attention_flash in attention.cu), and the naive
// backward through cuBLAS. With P the softmax and D_i = Σ_c dO_ic·O_ic:
//   dV = Pᵀ·dO,  dP = dO·Vᵀ,  dS = P ∘ (dP − D),  dQ = scale·dS·K,  dK = scale·dSᵀ·Q.
#include "kernels/cuda/attention_backward.hpp"

#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "core/cuda_check.hpp"
#include "core/device.hpp"
#include "core/memory.hpp"
#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/gemm.hpp"
#include "kernels/cuda/masked_softmax.cuh"

namespace aiopt::kernels::cuda {

namespace {

// Self-attention (AttentionShape::validate_self) within one launch's grid.
void check_self(const AttentionShape& s, const char* who) {
  s.validate_self(who);
  if (s.batch * s.heads > 65535) throw std::invalid_argument(std::string(who) + ": batch·heads exceeds 65535");
  if (s.q_len > 0x7fffffffu) throw std::invalid_argument(std::string(who) + ": sequence too long");
}

// ---- D = rowsum(dO ∘ O): one warp per row (rows = B·H·N), lanes over the dimensions.
__global__ void row_dot_kernel(const float* dout, const float* out, float* D, std::size_t rows, int d) {
  const int lane = threadIdx.x % 32;
  const std::size_t warps = static_cast<std::size_t>(gridDim.x) * (blockDim.x / 32);
  for (std::size_t row = (blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x) / 32; row < rows;
       row += warps) {
    float sum = 0.0f;
    for (int c = lane; c < d; c += 32) sum += dout[row * d + c] * out[row * d + c];
    sum = warp_reduce(sum, Sum{});
    if (lane == 0) D[row] = sum;
  }
}

// ---- flash backward
//
// Two kernels, 256 threads each, over tiles of 32 queries and 32 keys, as FlashAttention-2's
// backward (Dao 2023, Algorithm 2) splits its work, with the dQ accumulation in a pass of its own
// so that every sum runs in a fixed order without float atomics and the only workspace is D:
// - dK, dV: grid (key tile, b·h). The block keeps its key tile's K and V in shared memory and
//   its dK, dV rows in registers (thread t: key t/8, dims t%8 + 8·r), and walks the query tiles
//   that see its keys (causal: from its own tile on): dV += Pᵀ·dO, dK += dSᵀ·Q.
// - dQ: grid (query tile, b·h). The block keeps its query tile's Q and dO in shared memory and
//   its dQ rows in registers (thread t: query t/8, dims t%8 + 8·r), and walks the key tiles its
//   queries see (causal: up to its own): dQ += dS·K.
// Both recompute, per (query tile, key tile), S and dP (thread t: key t%32, queries t/32 + 8·r),
// P = exp(scale·S − lse) masked and dS = P∘(dP − D).

constexpr int bwd_threads = 256, bwd_tile = 32;

// Shared floats: four (32, DMAX + 1) row tiles, `score_tiles` (32, 33) score tiles, lse and D.
template <int DMAX>
constexpr std::size_t bwd_shared_bytes(int score_tiles) {
  return sizeof(float) * (4 * bwd_tile * (DMAX + 1) + score_tiles * bwd_tile * (bwd_tile + 1) + 2 * bwd_tile);
}

// Rows [r0, r0 + 32) of x: (n, d) into tile: (32, DMAX + 1), zero past n and d.
template <int DMAX>
__device__ __forceinline__ void load_rows(float* tile, const float* x, std::size_t r0, std::size_t n, int d) {
  for (int e = threadIdx.x; e < bwd_tile * DMAX; e += bwd_threads) {
    const int r = e / DMAX, c = e % DMAX;
    tile[r * (DMAX + 1) + c] = r0 + r < n && c < d ? x[(r0 + r) * d + c] : 0.0f;
  }
}

// lse and D of queries [i0, i0 + 32), zero past n.
__device__ __forceinline__ void load_row_stats(float* sLse, float* sD, const float* lse, const float* D,
                                               std::size_t i0, std::size_t n) {
  if (threadIdx.x < bwd_tile) {
    const bool in = i0 + threadIdx.x < n;
    sLse[threadIdx.x] = in ? lse[i0 + threadIdx.x] : 0.0f;
    sD[threadIdx.x] = in ? D[i0 + threadIdx.x] : 0.0f;
  }
}

// P (when sP is not null) and dS of queries [i0, i0 + 32) against keys [j0, j0 + 32), each
// (32 queries, 33).
template <int DMAX>
__device__ __forceinline__ void tile_gradients(const float* sQ, const float* sdO, const float* sK, const float* sV,
                                               const float* sLse, const float* sD, float* sP, float* sdS,
                                               std::size_t i0, std::size_t j0, std::size_t n, bool causal,
                                               float scale) {
  constexpr int ld = DMAX + 1;  // padded rows: lanes reading different rows hit different banks
  const int score_key = threadIdx.x % 32, score_query = threadIdx.x / 32;
  const std::size_t key = j0 + score_key;
#pragma unroll
  for (int rr = 0; rr < bwd_tile / 8; ++rr) {
    const int i = score_query + 8 * rr;
    const std::size_t query = i0 + i;
    float s = 0.0f, dp = 0.0f;
#pragma unroll 8
    for (int c = 0; c < DMAX; ++c) {
      s += sQ[i * ld + c] * sK[score_key * ld + c];
      dp += sdO[i * ld + c] * sV[score_key * ld + c];
    }
    const bool visible = query < n && key < n && !(causal && key > query);
    const float p = visible ? expf(scale * s - sLse[i]) : 0.0f;
    if (sP != nullptr) sP[i * (bwd_tile + 1) + score_key] = p;
    sdS[i * (bwd_tile + 1) + score_key] = p * (dp - sD[i]);
  }
}

template <int DMAX>
__global__ void __launch_bounds__(bwd_threads)
flash_backward_dkdv_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                           const float* __restrict__ dout, const float* __restrict__ lse,
                           const float* __restrict__ D, float* __restrict__ dk, float* __restrict__ dv, int d,
                           std::size_t n, bool causal, float scale) {
  constexpr int ld = DMAX + 1;
  constexpr int per_thread = DMAX / 8;
  extern __shared__ float shared[];
  float* sK = shared;                             // (32, ld)
  float* sV = sK + bwd_tile * ld;                 // (32, ld)
  float* sQ = sV + bwd_tile * ld;                 // (32, ld)
  float* sdO = sQ + bwd_tile * ld;                // (32, ld)
  float* sP = sdO + bwd_tile * ld;                // (32 queries, 33)
  float* sdS = sP + bwd_tile * (bwd_tile + 1);    // (32 queries, 33)
  float* sLse = sdS + bwd_tile * (bwd_tile + 1);  // (32)
  float* sD = sLse + bwd_tile;                    // (32)

  const std::size_t kt = blockIdx.x;
  const std::size_t bh = blockIdx.y;
  const std::size_t j0 = kt * bwd_tile;
  const std::size_t head = bh * n * d;
  load_rows<DMAX>(sK, k + head, j0, n, d);
  load_rows<DMAX>(sV, v + head, j0, n, d);

  const int own_key = threadIdx.x / 8, group = threadIdx.x % 8;
  float dk_acc[per_thread], dv_acc[per_thread];
#pragma unroll
  for (int r = 0; r < per_thread; ++r) dk_acc[r] = dv_acc[r] = 0.0f;

  const std::size_t tiles = (n + bwd_tile - 1) / bwd_tile;
  for (std::size_t qt = causal ? kt : 0; qt < tiles; ++qt) {
    const std::size_t i0 = qt * bwd_tile;
    __syncthreads();  // the previous query tile is no longer read
    load_rows<DMAX>(sQ, q + head, i0, n, d);
    load_rows<DMAX>(sdO, dout + head, i0, n, d);
    load_row_stats(sLse, sD, lse + bh * n, D + bh * n, i0, n);
    __syncthreads();
    tile_gradients<DMAX>(sQ, sdO, sK, sV, sLse, sD, sP, sdS, i0, j0, n, causal, scale);
    __syncthreads();
    // dV += Pᵀ·dO and dK += dSᵀ·Q for this thread's key and dims; queries in order.
    for (int i = 0; i < bwd_tile; ++i) {
      const float p = sP[i * (bwd_tile + 1) + own_key];
      const float ds = sdS[i * (bwd_tile + 1) + own_key];
#pragma unroll
      for (int r = 0; r < per_thread; ++r) {
        const int c = group + 8 * r;
        dv_acc[r] += p * sdO[i * ld + c];
        dk_acc[r] += ds * sQ[i * ld + c];
      }
    }
  }

  if (j0 + own_key >= n) return;
  float* dk_row = dk + head + (j0 + own_key) * d;
  float* dv_row = dv + head + (j0 + own_key) * d;
#pragma unroll
  for (int r = 0; r < per_thread; ++r) {
    const int c = group + 8 * r;
    if (c < d) {
      dk_row[c] = scale * dk_acc[r];
      dv_row[c] = dv_acc[r];
    }
  }
}

template <int DMAX>
__global__ void __launch_bounds__(bwd_threads)
flash_backward_dq_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                         const float* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ D,
                         float* __restrict__ dq, int d, std::size_t n, bool causal, float scale) {
  constexpr int ld = DMAX + 1;
  constexpr int per_thread = DMAX / 8;
  extern __shared__ float shared[];
  float* sQ = shared;                             // (32, ld)
  float* sdO = sQ + bwd_tile * ld;                // (32, ld)
  float* sK = sdO + bwd_tile * ld;                // (32, ld)
  float* sV = sK + bwd_tile * ld;                 // (32, ld)
  float* sdS = sV + bwd_tile * ld;                // (32 queries, 33)
  float* sLse = sdS + bwd_tile * (bwd_tile + 1);  // (32)
  float* sD = sLse + bwd_tile;                    // (32)

  // Causal: the last query tiles see the most keys; launching them first evens the tail.
  const std::size_t qt = causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x;
  const std::size_t bh = blockIdx.y;
  const std::size_t i0 = qt * bwd_tile;
  const std::size_t head = bh * n * d;
  load_rows<DMAX>(sQ, q + head, i0, n, d);
  load_rows<DMAX>(sdO, dout + head, i0, n, d);
  load_row_stats(sLse, sD, lse + bh * n, D + bh * n, i0, n);

  const int own_query = threadIdx.x / 8, group = threadIdx.x % 8;
  float dq_acc[per_thread];
#pragma unroll
  for (int r = 0; r < per_thread; ++r) dq_acc[r] = 0.0f;

  const std::size_t tiles = causal ? qt + 1 : (n + bwd_tile - 1) / bwd_tile;
  for (std::size_t kt = 0; kt < tiles; ++kt) {
    const std::size_t j0 = kt * bwd_tile;
    __syncthreads();  // the previous key tile is no longer read
    load_rows<DMAX>(sK, k + head, j0, n, d);
    load_rows<DMAX>(sV, v + head, j0, n, d);
    __syncthreads();
    tile_gradients<DMAX>(sQ, sdO, sK, sV, sLse, sD, nullptr, sdS, i0, j0, n, causal, scale);
    __syncthreads();
    // dQ += dS·K for this thread's query and dims; keys in order.
    for (int j = 0; j < bwd_tile; ++j) {
      const float ds = sdS[own_query * (bwd_tile + 1) + j];
#pragma unroll
      for (int r = 0; r < per_thread; ++r) dq_acc[r] += ds * sK[j * ld + group + 8 * r];
    }
  }

  if (i0 + own_query >= n) return;
  float* dq_row = dq + head + (i0 + own_query) * d;
#pragma unroll
  for (int r = 0; r < per_thread; ++r) {
    const int c = group + 8 * r;
    if (c < d) dq_row[c] = scale * dq_acc[r];
  }
}

template <int DMAX>
void launch_flash_backward(const float* q, const float* k, const float* v, const float* dout, const float* lse,
                           const float* D, float* dq, float* dk, float* dv, const AttentionShape& s,
                           cudaStream_t stream) {
  constexpr std::size_t dkdv_bytes = bwd_shared_bytes<DMAX>(2), dq_bytes = bwd_shared_bytes<DMAX>(1);
  CUDA_CHECK(cudaFuncSetAttribute(flash_backward_dkdv_kernel<DMAX>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(dkdv_bytes)));
  CUDA_CHECK(cudaFuncSetAttribute(flash_backward_dq_kernel<DMAX>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(dq_bytes)));
  const std::size_t tiles = (s.q_len + bwd_tile - 1) / bwd_tile;
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(s.batch * s.heads));
  const int d = static_cast<int>(s.head_dim);
  flash_backward_dkdv_kernel<DMAX><<<grid, bwd_threads, dkdv_bytes, stream>>>(q, k, v, dout, lse, D, dk, dv, d,
                                                                             s.q_len, s.causal, s.scale);
  CUDA_CHECK_LAUNCH();
  flash_backward_dq_kernel<DMAX><<<grid, bwd_threads, dq_bytes, stream>>>(q, k, v, dout, lse, D, dq, d, s.q_len,
                                                                         s.causal, s.scale);
  CUDA_CHECK_LAUNCH();
}

// ---- naive backward's row kernels (one block per score row, rows = B·H·N)

// In place: P -> dS = P ∘ (dP − D), with D_i = Σ_c dO_ic·O_ic reduced by the block.
__global__ void softmax_backward_kernel(float* scores, const float* dp, const float* dout, const float* out,
                                        std::size_t n, int d) {
  const std::size_t row = blockIdx.x;
  float dot = 0.0f;
  for (int c = threadIdx.x; c < d; c += blockDim.x) dot += dout[row * d + c] * out[row * d + c];
  const float D = block_reduce(dot, Sum{}, 0.0f);
  float* p = scores + row * n;
  const float* g = dp + row * n;
  for (std::size_t j = threadIdx.x; j < n; j += blockDim.x) p[j] = p[j] * (g[j] - D);
}

constexpr int row_threads = 256;

}  // namespace

void attention_flash_backward(const float* q, const float* k, const float* v, const float* out, const float* dout,
                              const float* lse, float* dq, float* dk, float* dv, const AttentionShape& shape,
                              void* stream) {
  check_self(shape, "attention_flash_backward");
  if (shape.head_dim > 128)
    throw std::invalid_argument("attention_flash_backward: head_dim must be at most 128, not " +
                                std::to_string(shape.head_dim));
  const cudaStream_t st = as_stream(stream);
  const std::size_t n = shape.q_len, d = shape.head_dim, bh = shape.batch * shape.heads;
  // D: (B·H·N), the only workspace.
  memory::Buffer<float> D = device_scratch(bh * n);
  row_dot_kernel<<<elementwise_blocks(bh * n * 32), 256, 0, st>>>(dout, out, D.data(), bh * n, static_cast<int>(d));
  CUDA_CHECK_LAUNCH();
  if (d <= 32) {
    launch_flash_backward<32>(q, k, v, dout, lse, D.data(), dq, dk, dv, shape, st);
  } else if (d <= 64) {
    launch_flash_backward<64>(q, k, v, dout, lse, D.data(), dq, dk, dv, shape, st);
  } else {
    launch_flash_backward<128>(q, k, v, dout, lse, D.data(), dq, dk, dv, shape, st);
  }
}

void attention_naive_backward(const float* q, const float* k, const float* v, const float* out, const float* dout,
                              float* dq, float* dk, float* dv, float* scores, const AttentionShape& shape,
                              void* stream) {
  check_self(shape, "attention_naive_backward");
  const std::size_t n = shape.q_len, d = shape.head_dim, bh = shape.batch * shape.heads;
  const std::size_t nd = n * d, nn = n * n;
  const cudaStream_t st = as_stream(stream);
  const unsigned rows = row_blocks(bh * n);
  // scores = scale·Q·Kᵀ, then P in place: (B·H) products (N, d)·(d, N).
  gemm_strided_batched(false, true, n, n, d, shape.scale, q, d, nd, k, d, nd, 0.0f, scores, n, nn, bh, DType::f32,
                       stream);
  masked_softmax(scores, DType::f32, bh * n, n, n, 0, shape, st);
  // dV = Pᵀ·dO: (N, N)ᵀ·(N, d).
  gemm_strided_batched(true, false, n, d, n, 1.0f, scores, n, nn, dout, d, nd, 0.0f, dv, d, nd, bh, DType::f32,
                       stream);
  // dP = dO·Vᵀ: (N, d)·(d, N), in a second B·H·N·N buffer.
  memory::Buffer<float> dp = device_scratch(bh * nn);
  gemm_strided_batched(false, true, n, n, d, 1.0f, dout, d, nd, v, d, nd, 0.0f, dp.data(), n, nn, bh, DType::f32,
                       stream);
  softmax_backward_kernel<<<rows, row_threads, 0, st>>>(scores, dp.data(), dout, out, n, static_cast<int>(d));
  CUDA_CHECK_LAUNCH();
  // dQ = scale·dS·K: (N, N)·(N, d); dK = scale·dSᵀ·Q: (N, N)ᵀ·(N, d).
  gemm_strided_batched(false, false, n, d, n, shape.scale, scores, n, nn, k, d, nd, 0.0f, dq, d, nd, bh, DType::f32,
                       stream);
  gemm_strided_batched(true, false, n, d, n, shape.scale, scores, n, nn, q, d, nd, 0.0f, dk, d, nd, bh, DType::f32,
                       stream);
}

}  // namespace aiopt::kernels::cuda
