// The embedding on CUDA (kernels/cuda/embedding.hpp). The forward is data movement plus one add,
// so it equals the CPU bit for bit; the backward adds in the CPU's order.
#include "kernels/cuda/embedding.hpp"

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

namespace {

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
  add_row<V>(wte + id * channels, wpe + (pos0 + t) * channels, y + row * channels, channels);
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

}  // namespace

// ---- launchers

void embedding(const std::int32_t* tokens, const float* wte, const float* wpe, float* y, std::size_t batch,
               std::size_t len, std::size_t pos0, std::size_t vocab, std::size_t positions, std::size_t channels,
               void* stream) {
  if (pos0 + len > positions)
    throw std::out_of_range("embedding: positions " + std::to_string(pos0) + " + " + std::to_string(len) +
                            " exceed the " + std::to_string(positions) + " learned positions");
  if (batch * len == 0 || channels == 0) return;
  const unsigned rows = row_blocks(batch * len);
  const int c = static_cast<int>(channels);
  launch_vectorized(use_vector4(channels, wte, wpe, y), [&]<int V>() {
    embedding_kernel<V><<<rows, row_block_threads(channels, V), 0, as_stream(stream)>>>(tokens, wte, wpe, y, len,
                                                                                        pos0, vocab, c);
  });
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

}  // namespace aiopt::kernels::cuda
