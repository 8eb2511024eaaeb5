// The GPT model's layout ops on CUDA: the token + position embedding, and the moves between the
// token-major projections and the head-major attention layout (kernels/cpu/embedding.hpp,
// heads.hpp). Pure data movement: each output element is its input element (or a sum of two),
// so the results equal the CPU's bit for bit. The int8 KV-cache ops are in kv_int8.cu.
#include <cstdint>

#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/transformer_ops.hpp"

namespace aiopt::kernels::cuda {

namespace {

// ---- kernels

// One block per token row; threads over the channels in vectors of V.
// tokens: (batch, len); wte: (vocab, channels); wpe: (positions, channels); y: (batch, len, channels).
template <int V>
__global__ void embedding_kernel(const std::int32_t* tokens, const float* wte, const float* wpe, float* y,
                                 std::size_t len, std::size_t pos0, std::size_t vocab, int channels) {
  const std::size_t row = blockIdx.x;  // b·len + t
  const std::size_t t = row % len;
  const std::int32_t token = tokens[row];
  // The host validates tokens; clamping keeps a bad one from reading outside wte.
  const std::size_t id = token < 0 || static_cast<std::size_t>(token) >= vocab ? vocab - 1 : static_cast<std::size_t>(token);
  const float* e = wte + id * channels;
  const float* p = wpe + (pos0 + t) * channels;
  float* out = y + row * channels;
  for (int j = static_cast<int>(threadIdx.x) * V; j < channels; j += static_cast<int>(blockDim.x) * V) {
    Pack<V> a = load<V>(e + j);
    const Pack<V> b = load<V>(p + j);
    for (int k = 0; k < V; ++k) a.v[k] += b.v[k];
    store<V>(out + j, a);
  }
}

// Grid-stride over the input in vectors of V (V divides head_dim, so a vector stays in one head).
// qkv: (batch, len, 3, heads, head_dim) -> q: (batch, heads, len, head_dim) and
// k_cache, v_cache: (batch, heads, capacity, head_dim) at positions pos0 + t.
template <int V>
__global__ void split_qkv_kernel(const float* qkv, float* q, float* k_cache, float* v_cache, std::size_t len,
                                 std::size_t heads, std::size_t head_dim, std::size_t capacity, std::size_t pos0,
                                 std::size_t n) {
  const std::size_t channels = heads * head_dim;
  for (std::size_t i = (blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x) * V; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x * V) {
    const std::size_t d = i % head_dim;
    const std::size_t h = (i / head_dim) % heads;
    const std::size_t which = (i / channels) % 3;  // 0 q, 1 k, 2 v
    const std::size_t bt = i / (3 * channels);     // b·len + t
    const std::size_t t = bt % len, b = bt / len;
    const std::size_t bh = b * heads + h;
    float* dst = which == 0   ? q + (bh * len + t) * head_dim
                 : which == 1 ? k_cache + (bh * capacity + pos0 + t) * head_dim
                              : v_cache + (bh * capacity + pos0 + t) * head_dim;
    store<V>(dst + d, load<V>(qkv + i));
  }
}

// Grid-stride over the output in vectors of V (V divides head_dim).
// x: (batch, heads, len, head_dim) -> y: (batch, len, heads·head_dim).
template <int V>
__global__ void merge_heads_kernel(const float* x, float* y, std::size_t len, std::size_t heads, std::size_t head_dim,
                                   std::size_t n) {
  const std::size_t channels = heads * head_dim;
  for (std::size_t i = (blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x) * V; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x * V) {
    const std::size_t d = i % head_dim;
    const std::size_t h = (i / head_dim) % heads;
    const std::size_t bt = i / channels;
    const std::size_t t = bt % len, b = bt / len;
    store<V>(y + i, load<V>(x + ((b * heads + h) * len + t) * head_dim + d));
  }
}

}  // namespace

// ---- launchers

void embedding(const std::int32_t* tokens, const float* wte, const float* wpe, float* y, std::size_t batch,
               std::size_t len, std::size_t pos0, std::size_t vocab, std::size_t channels, void* stream) {
  if (batch * len == 0 || channels == 0) return;
  const unsigned rows = row_blocks(batch * len);
  const int c = static_cast<int>(channels);
  if (use_vector4(channels, wte, wpe, y)) {
    embedding_kernel<4><<<rows, row_block_threads(channels, 4), 0, as_stream(stream)>>>(tokens, wte, wpe, y, len,
                                                                                         pos0, vocab, c);
  } else {
    embedding_kernel<1><<<rows, row_block_threads(channels, 1), 0, as_stream(stream)>>>(tokens, wte, wpe, y, len,
                                                                                         pos0, vocab, c);
  }
  CUDA_CHECK_LAUNCH();
}

void split_qkv(const float* qkv, float* q, float* k_cache, float* v_cache, std::size_t batch, std::size_t len,
               std::size_t heads, std::size_t head_dim, std::size_t capacity, std::size_t pos0, void* stream) {
  const std::size_t n = batch * len * 3 * heads * head_dim;
  if (n == 0) return;
  if (use_vector4(head_dim, qkv, q, k_cache, v_cache)) {
    split_qkv_kernel<4><<<elementwise_blocks(n / 4), 256, 0, as_stream(stream)>>>(qkv, q, k_cache, v_cache, len, heads,
                                                                                   head_dim, capacity, pos0, n);
  } else {
    split_qkv_kernel<1><<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(qkv, q, k_cache, v_cache, len, heads,
                                                                               head_dim, capacity, pos0, n);
  }
  CUDA_CHECK_LAUNCH();
}

void merge_heads(const float* x, float* y, std::size_t batch, std::size_t len, std::size_t heads,
                 std::size_t head_dim, void* stream) {
  const std::size_t n = batch * len * heads * head_dim;
  if (n == 0) return;
  if (use_vector4(head_dim, x, y)) {
    merge_heads_kernel<4><<<elementwise_blocks(n / 4), 256, 0, as_stream(stream)>>>(x, y, len, heads, head_dim, n);
  } else {
    merge_heads_kernel<1><<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(x, y, len, heads, head_dim, n);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace aiopt::kernels::cuda
