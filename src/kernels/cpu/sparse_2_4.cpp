// 2:4 pruning, its compressed layout and product (sparse_2_4.hpp).
#include "kernels/cpu/sparse_2_4.hpp"

#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>

namespace aiopt::kernels::cpu {

namespace {

void check_cols(std::size_t cols, const char* who) {
  if (cols % 4 != 0)
    throw std::invalid_argument(std::string(who) + ": cols = " + std::to_string(cols) +
                                " is not a multiple of 4");
}

}  // namespace

void prune_2_4(const float* w, float* masked, std::size_t rows, std::size_t cols) {
  check_cols(cols, "prune_2_4");
  for (std::size_t g = 0; g < rows * cols; g += 4) {
    // Rank each entry by how many of the other three beat it (larger |w|, or equal |w| at a
    // lower index); the two with rank 0 and 1 are kept.
    float a[4];
    for (int i = 0; i < 4; ++i) a[i] = std::fabs(w[g + i]);
    bool keep[4];
    for (int i = 0; i < 4; ++i) {
      int beaten_by = 0;
      for (int j = 0; j < 4; ++j)
        if (j != i && (a[j] > a[i] || (a[j] == a[i] && j < i))) ++beaten_by;
      keep[i] = beaten_by < 2;
    }
    for (int i = 0; i < 4; ++i) masked[g + i] = keep[i] ? w[g + i] : 0.0f;
  }
}

Sparse24Matrix compress_2_4(const float* masked, std::size_t rows, std::size_t cols) {
  check_cols(cols, "compress_2_4");
  const std::size_t groups = cols / 4;
  Sparse24Matrix out;
  out.rows = rows;
  out.cols = cols;
  out.values.resize(rows * groups * 2);
  out.indices.resize(rows * groups);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t g = 0; g < groups; ++g) {
      const float* src = masked + r * cols + 4 * g;
      int pos[2], n = 0;
      for (int i = 0; i < 4; ++i) {
        if (src[i] == 0.0f) continue;
        if (n == 2)
          throw std::invalid_argument("compress_2_4: row " + std::to_string(r) + " group " +
                                      std::to_string(g) + " (columns " + std::to_string(4 * g) +
                                      ".." + std::to_string(4 * g + 3) +
                                      ") has more than 2 nonzeros");
        pos[n++] = i;
      }
      // Fill the missing positions with the lowest free ones, then order them.
      for (int i = 0; n < 2; ++i)
        if (n == 0 || pos[0] != i) pos[n++] = i;
      if (pos[0] > pos[1]) std::swap(pos[0], pos[1]);
      out.values[(r * groups + g) * 2] = src[pos[0]];
      out.values[(r * groups + g) * 2 + 1] = src[pos[1]];
      out.indices[r * groups + g] = static_cast<std::uint8_t>(pos[0] | (pos[1] << 2));
    }
  return out;
}

void decompress_2_4(const Sparse24Matrix& w, float* dense) {
  const std::size_t groups = w.cols / 4;
  for (std::size_t r = 0; r < w.rows; ++r)
    for (std::size_t g = 0; g < groups; ++g) {
      float* dst = dense + r * w.cols + 4 * g;
      for (int i = 0; i < 4; ++i) dst[i] = 0.0f;
      const int idx = w.indices[r * groups + g];
      dst[idx & 3] = w.values[(r * groups + g) * 2];
      dst[(idx >> 2) & 3] = w.values[(r * groups + g) * 2 + 1];
    }
}

void sparse_2_4_linear(const Sparse24Matrix& w, const float* x, float* y, std::size_t m) {
  const std::size_t rows = w.rows, cols = w.cols, groups = cols / 4;
  // As csr_linear: rows of W outermost, so a row's values and indices (cols/2·4 + cols/4 bytes)
  // stay in L1 while the m inputs are multiplied against them.
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    const float* v = w.values.data() + r * groups * 2;
    const std::uint8_t* idx = w.indices.data() + r * groups;
    for (std::size_t i = 0; i < m; ++i) {
      const float* xg = x + i * cols;
      float sum = 0.0f;
      for (std::size_t g = 0; g < groups; ++g, xg += 4) {
        const int b = idx[g];
        sum += v[2 * g] * xg[b & 3];
        sum += v[2 * g + 1] * xg[(b >> 2) & 3];
      }
      y[i * rows + r] = sum;
    }
  }
}

}  // namespace aiopt::kernels::cpu
