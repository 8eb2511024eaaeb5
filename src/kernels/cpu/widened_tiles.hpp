#pragma once
// The GEMM of the weight-only formats (16-bit and int4 weights) for m > 1 rows: each thread
// widens a tile of W's rows to fp32 and multiplies it with sgemm, so W is read once whatever m
// is and the product runs at sgemm's speed.
#include <algorithm>
#include <cstddef>

#include "core/memory.hpp"
#include "kernels/cpu/gemm.hpp"

namespace aiopt::kernels::cpu {

// Rows of W widened per tile: 64 rows of k = 4096 are 1 MiB of fp32.
inline constexpr std::size_t widened_tile_rows = 64;

// y (m, n) = x (m, k)·Ŵᵀ (+ b (n) when not null), where widen(row0, rows, tile) writes Ŵ's rows
// [row0, row0 + rows) as fp32 into tile (rows, k).
template <class Widen>
void gemm_widened_tiles(const float* x, const float* b, float* y, std::size_t m, std::size_t n, std::size_t k,
                        const Widen& widen) {
  const std::size_t tiles = (n + widened_tile_rows - 1) / widened_tile_rows;
#pragma omp parallel
  {
    memory::Buffer<float> tile(Device::cpu(), widened_tile_rows * k);  // (tile rows, k), per thread
#pragma omp for schedule(static)
    for (std::size_t t = 0; t < tiles; ++t) {
      const std::size_t row0 = t * widened_tile_rows;
      const std::size_t rows = std::min(widened_tile_rows, n - row0);
      widen(row0, rows, tile.data());
      // y[:, row0:row0+rows] (m, rows) = x (m, k) · tileᵀ; inside the parallel region sgemm runs
      // on this thread alone.
      sgemm(false, true, m, rows, k, 1.0f, x, k, tile.data(), k, 0.0f, y + row0, n);
      if (b)
        for (std::size_t i = 0; i < m; ++i)
          for (std::size_t j = row0; j < row0 + rows; ++j) y[i * n + j] += b[j];
    }
  }
}

}  // namespace aiopt::kernels::cpu
