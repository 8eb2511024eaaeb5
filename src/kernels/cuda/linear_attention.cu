// Linear attention on CUDA: the CPU algorithm (kernels/cpu/linear_attention.cpp) with its
// products on cuBLAS and its elementwise passes, normalizers and scan over chunks as kernels.
#include "kernels/cuda/linear_attention.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "core/cuda_check.hpp"
#include "core/dtype.hpp"
#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/gemm.hpp"

namespace aiopt::kernels::cuda {

namespace {

constexpr int threads_per_block = 256;
static_assert(threads_per_block == 256, "elementwise_blocks (device_math.cuh) counts blocks of 256 threads");
constexpr int warps_per_block = threads_per_block / 32;

// Blocks for one warp per row.
unsigned int warp_row_blocks(std::size_t rows) {
  if ((rows + warps_per_block - 1) / warps_per_block > 0x7fffffffu)
    throw std::invalid_argument("linear_attention (CUDA): too many rows for one launch");
  return static_cast<unsigned int>((rows + warps_per_block - 1) / warps_per_block);
}

void gemm_batched(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, float alpha, const float* a,
                  std::size_t lda, std::size_t sa, const float* b, std::size_t ldb, std::size_t sb, float beta,
                  float* c, std::size_t ldc, std::size_t sc, std::size_t batch, void* stream) {
  gemm_strided_batched(ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, batch, DType::f32, stream);
}

// ---- kernels

__global__ void elu_kernel(const float* x, float* phi, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const float v = x[i];
    phi[i] = v <= 0.0f ? expf(v) : v + 1.0f;  // a NaN takes v + 1 and stays NaN
  }
}

// One warp per row: phi_r −= c²|x_r|²/2, row_max[r] = max_j phi_r[j] (fmaxf skips a NaN, which
// then reaches the output through exp).
__global__ void favor_prepare_kernel(const float* x, float* phi, float* row_max, std::size_t rows, int d, int m,
                                     float c) {
  const std::size_t r = blockIdx.x * static_cast<std::size_t>(warps_per_block) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const float* xr = x + r * d;
  float norm = 0.0f;
  for (int j = lane; j < d; j += 32) norm += xr[j] * xr[j];
  norm = warp_reduce(norm, Sum{});
  const float half = 0.5f * c * c * norm;
  float* p = phi + r * m;
  float mx = -INFINITY;
  for (int j = lane; j < m; j += 32) {
    const float v = p[j] - half;
    p[j] = v;
    mx = fmaxf(mx, v);
  }
  mx = warp_reduce(mx, Max{});
  if (lane == 0) row_max[r] = mx;
}

// One block per group: group_max[g] = max over the group's rows of row_max.
__global__ void group_max_kernel(const float* row_max, float* group_max, std::size_t rows) {
  const float* rm = row_max + blockIdx.x * rows;
  float mx = -INFINITY;
  for (std::size_t i = threadIdx.x; i < rows; i += blockDim.x) mx = fmaxf(mx, rm[i]);
  mx = block_reduce(mx, Max{}, -INFINITY);
  if (threadIdx.x == 0) group_max[blockIdx.x] = mx;
}

// phi = exp(phi − stabilizer)/sqrt(m); the stabilizer of element i is stab[i / (m·per)]:
// per = 1 (queries: the row's max) or rows (keys: the group's max).
__global__ void favor_exp_kernel(float* phi, const float* stab, std::size_t n, std::size_t span, float inv_sqrt_m) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    phi[i] = expf(phi[i] - stab[i / span]) * inv_sqrt_m;
}

// out (blocks, F) = column sums of x (blocks, rows, F); one thread per (block, feature).
__global__ void column_sums_kernel(const float* x, float* out, std::size_t blocks, std::size_t rows, std::size_t F) {
  const std::size_t n = blocks * F;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t b = i / F, f = i % F;
    const float* col = x + b * rows * F + f;
    float s = 0.0f;
    for (std::size_t r = 0; r < rows; ++r) s += col[r * F];
    out[i] = s;
  }
}

// x (groups, chunks, width) → its exclusive prefix sum over chunks; one thread per (group, e).
__global__ void exclusive_chunk_scan_kernel(float* x, std::size_t groups, std::size_t chunks, std::size_t width) {
  const std::size_t n = groups * width;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t g = i / width, e = i % width;
    float run = 0.0f;
    for (std::size_t c = 0; c < chunks; ++c) {
      float* u = x + (g * chunks + c) * width + e;
      const float t = *u;
      *u = run;
      run += t;
    }
  }
}

// a (batch, C, C): entries of key s > query t become 0.
__global__ void causal_block_mask_kernel(float* a, std::size_t n, std::size_t C) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    if (i % C > (i / C) % C) a[i] = 0.0f;
}

// (groups, n, width) → (groups, padded, width), rows n.. zero.
__global__ void pad_rows_kernel(const float* x, float* y, std::size_t groups, std::size_t n, std::size_t padded,
                                std::size_t width) {
  const std::size_t total = groups * padded * width;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t w = i % width, row = i / width, g = row / padded, r = row % padded;
    y[i] = r < n ? x[(g * n + r) * width + w] : 0.0f;
  }
}

// One warp per row of (groups, padded, ·): den = φ(q_r)·z[r / z_rows] (+ Σ_{t <= r % C} a_r[t]
// when a is given), out[g, i] = num_r / den for i < n. num may alias out (then padded == n):
// each lane reads and writes only its own elements.
__global__ void normalize_kernel(const float* phi_q, const float* z, std::size_t z_rows, const float* a,
                                 std::size_t C, const float* num, float* out, std::size_t groups, std::size_t n,
                                 std::size_t padded, int d, int F) {
  const std::size_t r = blockIdx.x * static_cast<std::size_t>(warps_per_block) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= groups * padded) return;
  const std::size_t g = r / padded, i = r % padded;
  if (i >= n) return;
  const float* q = phi_q + r * F;
  const float* zr = z + (r / z_rows) * F;
  float den = 0.0f;
  for (int f = lane; f < F; f += 32) den += q[f] * zr[f];
  if (a) {
    const float* ar = a + r * C;
    for (std::size_t t = lane; t <= i % C; t += 32) den += ar[t];
  }
  den = warp_reduce(den, Sum{});
  const float inv = 1.0f / den;
  const float* nr = num + r * d;
  float* o = out + (g * n + i) * d;
  for (int j = lane; j < d; j += 32) o[j] = nr[j] * inv;
}

// Row softmax in place, one block per row; each thread writes only the elements it read.
__global__ void softmax_rows_kernel(float* x, std::size_t cols) {
  float* row = x + blockIdx.x * cols;
  float mx = -INFINITY;
  for (std::size_t j = threadIdx.x; j < cols; j += blockDim.x) mx = fmaxf(mx, row[j]);
  mx = block_reduce(mx, Max{}, -INFINITY);
  float sum = 0.0f;
  for (std::size_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float e = expf(row[j] - mx);
    row[j] = e;
    sum += e;
  }
  const float inv = 1.0f / block_reduce(sum, Sum{}, 0.0f);
  for (std::size_t j = threadIdx.x; j < cols; j += blockDim.x) row[j] *= inv;
}

void column_sums(const float* x, float* out, std::size_t blocks, std::size_t rows, std::size_t F, void* stream) {
  column_sums_kernel<<<elementwise_blocks(blocks * F), threads_per_block, 0, as_stream(stream)>>>(x, out, blocks,
                                                                                                rows, F);
  CUDA_CHECK_LAUNCH();
}

void exclusive_chunk_scan(float* x, std::size_t groups, std::size_t chunks, std::size_t width, void* stream) {
  exclusive_chunk_scan_kernel<<<elementwise_blocks(groups * width), threads_per_block, 0, as_stream(stream)>>>(
      x, groups, chunks, width);
  CUDA_CHECK_LAUNCH();
}

void pad_rows(const float* x, float* y, std::size_t groups, std::size_t n, std::size_t padded, std::size_t width,
              void* stream) {
  pad_rows_kernel<<<elementwise_blocks(groups * padded * width), threads_per_block, 0, as_stream(stream)>>>(
      x, y, groups, n, padded, width);
  CUDA_CHECK_LAUNCH();
}

void normalize(const float* phi_q, const float* z, std::size_t z_rows, const float* a, std::size_t C,
               const float* num, float* out, const LinearAttentionShape& s, std::size_t padded, void* stream) {
  normalize_kernel<<<warp_row_blocks(s.groups() * padded), threads_per_block, 0, as_stream(stream)>>>(
      phi_q, z, z_rows, a, C, num, out, s.groups(), s.seq_len, padded, static_cast<int>(s.head_dim),
      static_cast<int>(s.features));
  CUDA_CHECK_LAUNCH();
}

}  // namespace

// ---- launchers

void elu_feature_map(const float* x, float* phi, std::size_t n, void* stream) {
  if (n == 0) return;
  elu_kernel<<<elementwise_blocks(n), threads_per_block, 0, as_stream(stream)>>>(x, phi, n);
  CUDA_CHECK_LAUNCH();
}

std::size_t favor_workspace_elements(std::size_t groups, std::size_t rows) { return groups * rows + groups; }

void favor_feature_map(const float* x, const float* w, float* phi, float* workspace, std::size_t groups,
                       std::size_t rows, std::size_t d, std::size_t m, FavorRole role, void* stream) {
  const std::size_t total = groups * rows;
  if (total == 0 || m == 0) return;
  if (d > 0x7fffffff || m > 0x7fffffff) throw std::invalid_argument("favor_feature_map (CUDA): d or m too large");
  const float c = static_cast<float>(std::pow(static_cast<double>(d), -0.25));
  const float inv_sqrt_m = static_cast<float>(1.0 / std::sqrt(static_cast<double>(m)));
  float* row_max = workspace;              // (groups·rows)
  float* group_max = workspace + total;    // (groups)
  // phi = (c·x)·Wᵀ: (groups·rows, m).
  gemm(false, true, total, m, d, c, x, d, w, d, 0.0f, phi, m, DType::f32, stream);
  favor_prepare_kernel<<<warp_row_blocks(total), threads_per_block, 0, as_stream(stream)>>>(
      x, phi, row_max, total, static_cast<int>(d), static_cast<int>(m), c);
  CUDA_CHECK_LAUNCH();
  const float* stab = row_max;
  std::size_t span = m;
  if (role == FavorRole::key) {
    if (groups > 0x7fffffff) throw std::invalid_argument("favor_feature_map (CUDA): too many groups");
    group_max_kernel<<<static_cast<unsigned int>(groups), threads_per_block, 0, as_stream(stream)>>>(
        row_max, group_max, rows);
    CUDA_CHECK_LAUNCH();
    stab = group_max;
    span = rows * m;
  }
  favor_exp_kernel<<<elementwise_blocks(total * m), threads_per_block, 0, as_stream(stream)>>>(phi, stab, total * m, span,
                                                                                            inv_sqrt_m);
  CUDA_CHECK_LAUNCH();
}

void linear_attention(const float* phi_q, const float* phi_k, const float* v, float* out, float* workspace,
                      const LinearAttentionShape& s, void* stream) {
  s.validate();
  const std::size_t G = s.groups(), N = s.seq_len, F = s.features, d = s.head_dim;
  if (!s.causal) {
    float* kv = workspace;      // (G, F, d)
    float* z = kv + G * F * d;  // (G, F)
    gemm_batched(true, false, F, d, N, 1.0f, phi_k, F, N * F, v, d, N * d, 0.0f, kv, d, F * d, G, stream);
    column_sums(phi_k, z, G, N, F, stream);
    gemm_batched(false, false, N, d, F, 1.0f, phi_q, F, N * F, kv, d, F * d, 0.0f, out, d, N * d, G, stream);
    normalize(phi_q, z, N, nullptr, 1, out, out, s, N, stream);
    return;
  }
  const std::size_t C = s.chunk, nc = s.chunks(), np = s.padded_len(), batch = G * nc;
  float* a = workspace;                // (G, nc, C, C)
  float* state = a + batch * C * C;    // (G, nc, F, d)
  float* z = state + batch * F * d;    // (G, nc, F)
  float* num = out;                    // (G, np, d)
  if (s.padded()) {
    float* pq = z + batch * F;
    float* pk = pq + G * np * F;
    float* pv = pk + G * np * F;
    num = pv + G * np * d;
    pad_rows(phi_q, pq, G, N, np, F, stream);
    pad_rows(phi_k, pk, G, N, np, F, stream);
    pad_rows(v, pv, G, N, np, d, stream);
    phi_q = pq;
    phi_k = pk;
    v = pv;
  }
  gemm_batched(false, true, C, C, F, 1.0f, phi_q, F, C * F, phi_k, F, C * F, 0.0f, a, C, C * C, batch, stream);
  causal_block_mask_kernel<<<elementwise_blocks(batch * C * C), threads_per_block, 0, as_stream(stream)>>>(
      a, batch * C * C, C);
  CUDA_CHECK_LAUNCH();
  gemm_batched(true, false, F, d, C, 1.0f, phi_k, F, C * F, v, d, C * d, 0.0f, state, d, F * d, batch, stream);
  column_sums(phi_k, z, batch, C, F, stream);
  exclusive_chunk_scan(state, G, nc, F * d, stream);
  exclusive_chunk_scan(z, G, nc, F, stream);
  gemm_batched(false, false, C, d, C, 1.0f, a, C, C * C, v, d, C * d, 0.0f, num, d, C * d, batch, stream);
  gemm_batched(false, false, C, d, F, 1.0f, phi_q, F, C * F, state, d, F * d, 1.0f, num, d, C * d, batch, stream);
  normalize(phi_q, z, C, a, C, num, out, s, np, stream);
}

void linformer_attention(const float* q, const float* k, const float* v, const float* e, const float* f,
                         float* out, float* workspace, const AttentionShape& s, std::size_t proj_rows,
                         void* stream) {
  s.validate();
  if (s.causal) throw std::invalid_argument("linformer (CUDA): causal attention is not supported");
  if (s.q_len != s.kv_len || s.kv_len != s.kv_capacity || s.q_offset != 0 || proj_rows == 0)
    throw std::invalid_argument("linformer (CUDA): self-attention with proj_rows > 0 only");
  const std::size_t G = s.batch * s.heads, N = s.q_len, d = s.head_dim, kr = proj_rows;
  if (G * N > 0x7fffffff) throw std::invalid_argument("linformer (CUDA): too many rows for one launch");
  float* kp = workspace;             // (G, kr, d)
  float* vp = kp + G * kr * d;       // (G, kr, d)
  float* scores = vp + G * kr * d;   // (G, N, kr)
  gemm_batched(false, false, kr, d, N, 1.0f, e, N, 0, k, d, N * d, 0.0f, kp, d, kr * d, G, stream);
  gemm_batched(false, false, kr, d, N, 1.0f, f, N, 0, v, d, N * d, 0.0f, vp, d, kr * d, G, stream);
  gemm_batched(false, true, N, kr, d, s.scale, q, d, N * d, kp, d, kr * d, 0.0f, scores, kr, N * kr, G, stream);
  softmax_rows_kernel<<<static_cast<unsigned int>(G * N), threads_per_block, 0, as_stream(stream)>>>(scores, kr);
  CUDA_CHECK_LAUNCH();
  gemm_batched(false, false, N, d, kr, 1.0f, scores, kr, N * kr, vp, d, kr * d, 0.0f, out, d, N * d, G, stream);
}

}  // namespace aiopt::kernels::cuda
