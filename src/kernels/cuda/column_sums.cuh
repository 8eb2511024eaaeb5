#pragma once
// Column sums of a (rows, n) matrix's per-element terms in a fixed order, shared by
// layernorm_backward (dgamma, dbeta) and bias_backward: no float atomics, so results repeat bit
// for bit.
#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>
#include <string>

#include "core/cuda_check.hpp"
#include "core/memory.hpp"
#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

// Stage 1: block (x: column tile, y: chunk of `column_chunk_rows` rows) with 32 × 8 threads;
// thread (tx, ty) sums rows ty, ty + 8, ... of its chunk for column tile·32 + tx, then the 8
// partials are added in order of ty. partial: (chunks, terms, n). Stage 2: one thread per
// column adds the chunks in order onto the output. Each partial has the same operands in the
// same order on every run.

constexpr int column_tile = 32, column_lanes = 8, column_chunk_rows = 64;

// A Terms type gives `count` terms per element: at(r, c, n, t) writes t[0..count) for row r,
// column c.

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
template <int terms>
__global__ void column_finish_kernel(const float* partial, std::size_t chunks, int n, float* out0, float* out1) {
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
  column_finish_kernel<Terms::count>
      <<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(partial.data(), chunks, width, out0, out1);
  CUDA_CHECK_LAUNCH();
}

}  // namespace aiopt::kernels::cuda
