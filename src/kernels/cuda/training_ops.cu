// The training ops of the GPT on CUDA (kernels/cuda/training_ops.hpp). Every sum over rows is
// reduced in a fixed order: column sums go through per-chunk partials in a tracked scratch
// buffer and a second kernel that adds the chunks in order, and the embedding gradient has one
// block per vocabulary row walking the tokens in order. No float atomics, so results repeat bit
// for bit.
#include "kernels/cuda/training_ops.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "core/cuda_check.hpp"
#include "core/device.hpp"
#include "core/memory.hpp"
#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

namespace {

// A scratch buffer on the current device, from the tracked allocator. Released by cudaFree,
// which waits for the work queued on the device, so it outlives the kernels that use it.
memory::Buffer<float> device_scratch(std::size_t count) {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  return memory::Buffer<float>(Device::cuda(device), count);
}

int checked_width(std::size_t n, const char* who) {
  if (n > 0x7fffffffu) throw std::invalid_argument(std::string(who) + ": row width exceeds 2^31 - 1");
  return static_cast<int>(n);
}

// ---- column sums in a fixed order
//
// Stage 1: block (x: column tile, y: chunk of `column_chunk_rows` rows) with 32 × 8 threads;
// thread (tx, ty) sums rows ty, ty + 8, ... of its chunk for column tile·32 + tx, then the 8
// partials are added in order of ty. partial: (chunks, terms, n). Stage 2: one thread per
// column adds the chunks in order onto the output. Each partial has the same operands in the
// same order on every run.

constexpr int column_tile = 32, column_lanes = 8, column_chunk_rows = 64;

// The per-element terms of a column sum: bias_backward sums dy; layernorm_backward sums
// dy·x̂ (dgamma) and dy (dbeta).
struct BiasTerms {
  static constexpr int count = 1;
  const float* dy;
  __device__ void at(std::size_t r, int c, int n, float* t) const { t[0] = dy[r * n + c]; }
};

struct LayerNormTerms {
  static constexpr int count = 2;
  const float* dy;
  const float* x;
  const float* mean;
  const float* rstd;
  __device__ void at(std::size_t r, int c, int n, float* t) const {
    const float g = dy[r * n + c];
    t[0] = g * ((x[r * n + c] - mean[r]) * rstd[r]);
    t[1] = g;
  }
};

template <class Terms>
__global__ void column_partials_kernel(Terms terms, float* partial, std::size_t rows, int n) {
  __shared__ float lanes[Terms::count][column_lanes][column_tile];
  const int c = blockIdx.x * column_tile + threadIdx.x;
  const std::size_t chunk = blockIdx.y;
  const std::size_t r0 = chunk * column_chunk_rows;
  const std::size_t r1 = r0 + column_chunk_rows < rows ? r0 + column_chunk_rows : rows;
  float sum[Terms::count] = {};
  if (c < n) {
    for (std::size_t r = r0 + threadIdx.y; r < r1; r += column_lanes) {
      float t[Terms::count];
      terms.at(r, c, n, t);
      for (int k = 0; k < Terms::count; ++k) sum[k] += t[k];
    }
  }
  for (int k = 0; k < Terms::count; ++k) lanes[k][threadIdx.y][threadIdx.x] = sum[k];
  __syncthreads();
  if (threadIdx.y == 0 && c < n) {
    for (int k = 0; k < Terms::count; ++k) {
      float total = 0.0f;
      for (int l = 0; l < column_lanes; ++l) total += lanes[k][l][threadIdx.x];
      partial[(chunk * Terms::count + k) * n + c] = total;
    }
  }
}

// out_k[c] += Σ_chunks partial[chunk][k][c], chunks in order. outs: up to 2 outputs.
__global__ void column_finish_kernel(const float* partial, std::size_t chunks, int terms, int n, float* out0,
                                     float* out1) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= n) return;
  for (int k = 0; k < terms; ++k) {
    float total = 0.0f;
    for (std::size_t chunk = 0; chunk < chunks; ++chunk) total += partial[(chunk * terms + k) * n + c];
    float* out = k == 0 ? out0 : out1;
    out[c] += total;
  }
}

template <class Terms>
void column_sums(const Terms& terms, std::size_t rows, std::size_t n, float* out0, float* out1, cudaStream_t stream,
                 const char* who) {
  const int width = checked_width(n, who);
  const std::size_t chunks = (rows + column_chunk_rows - 1) / column_chunk_rows;
  if (chunks > 65535) throw std::invalid_argument(std::string(who) + ": too many rows for one launch");
  memory::Buffer<float> partial = device_scratch(chunks * Terms::count * n);
  const dim3 grid(static_cast<unsigned>((n + column_tile - 1) / column_tile), static_cast<unsigned>(chunks));
  const dim3 block(column_tile, column_lanes);
  column_partials_kernel<Terms><<<grid, block, 0, stream>>>(terms, partial.data(), rows, width);
  CUDA_CHECK_LAUNCH();
  column_finish_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(partial.data(), chunks,
                                                                                   Terms::count, width, out0, out1);
  CUDA_CHECK_LAUNCH();
}

// ---- layernorm

// One block per row: two-pass statistics as the CPU, saving mean and rstd.
// x, y: (rows, hidden); mean, rstd: (rows).
__global__ void layernorm_forward_kernel(const float* x, const float* gamma, const float* beta, float* y,
                                         float* mean, float* rstd, int hidden, float eps) {
  const std::size_t row = blockIdx.x;
  const float* xr = x + row * hidden;
  float* yr = y + row * hidden;
  float sum = 0.0f;
  for (int j = threadIdx.x; j < hidden; j += blockDim.x) sum += xr[j];
  const float m = block_reduce(sum, Sum{}, 0.0f) / static_cast<float>(hidden);
  float squares = 0.0f;
  for (int j = threadIdx.x; j < hidden; j += blockDim.x) squares += (xr[j] - m) * (xr[j] - m);
  const float r = 1.0f / sqrtf(block_reduce(squares, Sum{}, 0.0f) / static_cast<float>(hidden) + eps);
  for (int j = threadIdx.x; j < hidden; j += blockDim.x) yr[j] = (xr[j] - m) * r * gamma[j] + beta[j];
  if (threadIdx.x == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

// One block per row: with x̂ = (x − mean)·rstd and g = dy·gamma,
// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)).
__global__ void layernorm_backward_dx_kernel(const float* dy, const float* x, const float* gamma, const float* mean,
                                             const float* rstd, float* dx, int hidden) {
  const std::size_t row = blockIdx.x;
  const float* dyr = dy + row * hidden;
  const float* xr = x + row * hidden;
  float* dxr = dx + row * hidden;
  const float m = mean[row], r = rstd[row];
  float sum_g = 0.0f, sum_gx = 0.0f;
  for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
    const float g = dyr[j] * gamma[j];
    sum_g += g;
    sum_gx += g * ((xr[j] - m) * r);
  }
  const float mean_g = block_reduce(sum_g, Sum{}, 0.0f) / static_cast<float>(hidden);
  const float mean_gx = block_reduce(sum_gx, Sum{}, 0.0f) / static_cast<float>(hidden);
  for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
    const float xhat = (xr[j] - m) * r;
    dxr[j] = r * (dyr[j] * gamma[j] - mean_g - xhat * mean_gx);
  }
}

// ---- elementwise

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

__global__ void round_f16_kernel(float* x, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    x[i] = __half2float(__float2half_rn(x[i]));
}

__global__ void round_bf16_kernel(float* x, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    x[i] = __bfloat162float(__float2bfloat16_rn(x[i]));
}

// Per-thread counts, joined per warp, one integer atomic per warp and count.
__global__ void value_census_kernel(const float* x, std::size_t n, unsigned long long* counts) {
  unsigned long long zeros = 0, nonfinite = 0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const float a = x[i];
    zeros += a == 0.0f;
    nonfinite += !isfinite(a);
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    zeros += __shfl_xor_sync(0xffffffffu, zeros, offset);
    nonfinite += __shfl_xor_sync(0xffffffffu, nonfinite, offset);
  }
  if (threadIdx.x % 32 == 0) {
    if (zeros) atomicAdd(counts, zeros);
    if (nonfinite) atomicAdd(counts + 1, nonfinite);
  }
}

// ---- embedding backward
//
// dwte: one block per vocabulary row v. The block scans the tokens blockDim at a time, compacts
// the positions holding v in order (warp ballots, warps in order) into shared memory, and its
// threads, one per channel, add those dy rows in that order: the same additions in the same
// order as the CPU's per-channel walk over the tokens.

constexpr int embedding_threads = 256;

__global__ void __launch_bounds__(embedding_threads)
embedding_backward_wte_kernel(const std::int32_t* tokens, const float* dy, float* dwte, std::size_t count,
                              int channels) {
  __shared__ std::size_t positions[embedding_threads];
  __shared__ int warp_base[embedding_threads / 32 + 1];
  const std::int32_t v = static_cast<std::int32_t>(blockIdx.x);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (std::size_t i0 = 0; i0 < count; i0 += embedding_threads) {
    const std::size_t i = i0 + threadIdx.x;
    const bool match = i < count && tokens[i] == v;
    if (__syncthreads_count(match) == 0) continue;  // uniform across the block
    const unsigned ballot = __ballot_sync(0xffffffffu, match);
    if (lane == 0) warp_base[warp + 1] = __popc(ballot);
    __syncthreads();
    if (threadIdx.x == 0) {
      warp_base[0] = 0;
      for (int w = 1; w <= embedding_threads / 32; ++w) warp_base[w] += warp_base[w - 1];
    }
    __syncthreads();
    if (match) positions[warp_base[warp] + __popc(ballot & ((1u << lane) - 1u))] = i;
    __syncthreads();
    const int found = warp_base[embedding_threads / 32];
    for (int c = threadIdx.x; c < channels; c += embedding_threads) {
      float acc = dwte[static_cast<std::size_t>(v) * channels + c];
      for (int p = 0; p < found; ++p) acc += dy[positions[p] * channels + c];
      dwte[static_cast<std::size_t>(v) * channels + c] = acc;
    }
    __syncthreads();  // positions and warp_base are rewritten by the next chunk
  }
}

// dwpe[t, c] += Σ_b dy[b, t, c], b in order; one thread per (t, c).
__global__ void embedding_backward_wpe_kernel(const float* dy, float* dwpe, std::size_t batch, std::size_t len,
                                              std::size_t channels) {
  const std::size_t n = len * channels;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    float acc = dwpe[i];
    for (std::size_t b = 0; b < batch; ++b) acc += dy[b * n + i];
    dwpe[i] = acc;
  }
}

// ---- head layouts

// q, k, v: (batch, heads, len, head_dim) -> qkv: (batch, len, 3, heads, head_dim); one thread
// per output element.
__global__ void merge_qkv_kernel(const float* q, const float* k, const float* v, float* qkv, std::size_t len,
                                 std::size_t heads, std::size_t head_dim, std::size_t n) {
  const std::size_t channels = heads * head_dim;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t d = i % head_dim;
    const std::size_t h = (i / head_dim) % heads;
    const std::size_t which = (i / channels) % 3;
    const std::size_t bt = i / (3 * channels);
    const std::size_t t = bt % len, b = bt / len;
    const float* src = which == 0 ? q : which == 1 ? k : v;
    qkv[i] = src[((b * heads + h) * len + t) * head_dim + d];
  }
}

// x: (batch, len, heads·head_dim) -> y: (batch, heads, len, head_dim); one thread per input element.
__global__ void split_heads_kernel(const float* x, float* y, std::size_t len, std::size_t heads,
                                   std::size_t head_dim, std::size_t n) {
  const std::size_t channels = heads * head_dim;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t d = i % head_dim;
    const std::size_t h = (i / head_dim) % heads;
    const std::size_t bt = i / channels;
    const std::size_t t = bt % len, b = bt / len;
    y[((b * heads + h) * len + t) * head_dim + d] = x[i];
  }
}

// ---- cross-entropy

// One block per row. logits and dlogits may alias: the target's logit is read into a register
// before the first barrier, and each thread rewrites only the elements it read itself.
__global__ void softmax_cross_entropy_kernel(const float* logits, const std::int32_t* targets, float* losses,
                                             float* dlogits, int vocab, float grad_scale) {
  const std::size_t row = blockIdx.x;
  const float* x = logits + row * vocab;
  const std::int32_t target = targets[row];
  if (target < 0) {  // uniform across the block
    if (threadIdx.x == 0) losses[row] = 0.0f;
    if (dlogits != nullptr)
      for (int j = threadIdx.x; j < vocab; j += blockDim.x) dlogits[row * vocab + j] = 0.0f;
    return;
  }
  const float target_logit = x[target];
  float max = -INFINITY;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) max = fmaxf(max, x[j]);
  max = block_reduce(max, Max{}, -INFINITY);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) sum += expf(x[j] - max);
  sum = block_reduce(sum, Sum{}, 0.0f);
  if (threadIdx.x == 0) losses[row] = logf(sum) + max - target_logit;
  if (dlogits == nullptr) return;
  const float inv = 1.0f / sum;
  float* g = dlogits + row * vocab;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float p = expf(x[j] - max) * inv;
    g[j] = (p - (j == target ? 1.0f : 0.0f)) * grad_scale;
  }
}

}  // namespace

// ---- launchers

void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* rstd,
                       std::size_t rows, std::size_t hidden, float eps, void* stream) {
  if (rows == 0 || hidden == 0) return;
  const int width = checked_width(hidden, "layernorm_forward");
  layernorm_forward_kernel<<<row_blocks(rows), row_block_threads(hidden, 1), 0, as_stream(stream)>>>(
      x, gamma, beta, y, mean, rstd, width, eps);
  CUDA_CHECK_LAUNCH();
}

void layernorm_backward(const float* dy, const float* x, const float* gamma, const float* mean, const float* rstd,
                        float* dx, float* dgamma, float* dbeta, std::size_t rows, std::size_t hidden,
                        void* stream) {
  if (rows == 0 || hidden == 0) return;
  const int width = checked_width(hidden, "layernorm_backward");
  layernorm_backward_dx_kernel<<<row_blocks(rows), row_block_threads(hidden, 1), 0, as_stream(stream)>>>(
      dy, x, gamma, mean, rstd, dx, width);
  CUDA_CHECK_LAUNCH();
  column_sums(LayerNormTerms{dy, x, mean, rstd}, rows, hidden, dgamma, dbeta, as_stream(stream),
              "layernorm_backward");
}

void gelu_tanh_backward(const float* x, const float* dy, float* dx, std::size_t n, void* stream) {
  if (n == 0) return;
  gelu_tanh_backward_kernel<<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(x, dy, dx, n);
  CUDA_CHECK_LAUNCH();
}

void embedding_backward(const std::int32_t* tokens, const float* dy, float* dwte, float* dwpe, std::size_t batch,
                        std::size_t len, std::size_t vocab, std::size_t channels, void* stream) {
  if (batch * len == 0 || channels == 0) return;
  const int width = checked_width(channels, "embedding_backward");
  if (vocab > 0x7fffffffu) throw std::invalid_argument("embedding_backward: vocab exceeds 2^31 - 1");
  embedding_backward_wte_kernel<<<static_cast<unsigned>(vocab), embedding_threads, 0, as_stream(stream)>>>(
      tokens, dy, dwte, batch * len, width);
  CUDA_CHECK_LAUNCH();
  embedding_backward_wpe_kernel<<<elementwise_blocks(len * channels), 256, 0, as_stream(stream)>>>(dy, dwpe, batch,
                                                                                                 len, channels);
  CUDA_CHECK_LAUNCH();
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

void softmax_cross_entropy(const float* logits, const std::int32_t* targets, float* losses, float* dlogits,
                           std::size_t rows, std::size_t vocab, float grad_scale, void* stream) {
  if (rows == 0) return;
  if (vocab == 0) throw std::invalid_argument("softmax_cross_entropy: vocab must be positive");
  const int width = checked_width(vocab, "softmax_cross_entropy");
  softmax_cross_entropy_kernel<<<row_blocks(rows), row_block_threads(vocab, 1), 0, as_stream(stream)>>>(
      logits, targets, losses, dlogits, width, grad_scale);
  CUDA_CHECK_LAUNCH();
}

void bias_backward(const float* dy, float* db, std::size_t rows, std::size_t n, void* stream) {
  if (rows == 0 || n == 0) return;
  column_sums(BiasTerms{dy}, rows, n, db, nullptr, as_stream(stream), "bias_backward");
}

void round_through(DType dtype, float* x, std::size_t n, void* stream) {
  if (dtype != DType::f32 && dtype != DType::f16 && dtype != DType::bf16)
    throw std::invalid_argument("round_through: dtype must be f32, f16 or bf16, not " + to_string(dtype));
  if (dtype == DType::f32 || n == 0) return;
  if (dtype == DType::f16) {
    round_f16_kernel<<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(x, n);
  } else {
    round_bf16_kernel<<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(x, n);
  }
  CUDA_CHECK_LAUNCH();
}

void value_census(const float* x, std::size_t n, unsigned long long* counts, void* stream) {
  if (n == 0) return;
  value_census_kernel<<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(x, n, counts);
  CUDA_CHECK_LAUNCH();
}

}  // namespace aiopt::kernels::cuda
