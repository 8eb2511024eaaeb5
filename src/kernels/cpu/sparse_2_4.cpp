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
    for (int i = 0; i < 4; ++i) {
      // A NaN compares false both ways and would be kept beside the two largest.
      if (std::isnan(w[g + i]))
        throw std::invalid_argument("prune_2_4: w is NaN at row " + std::to_string((g + i) / cols) +
                                    " column " + std::to_string((g + i) % cols));
      a[i] = std::fabs(w[g + i]);
    }
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

namespace {

// One output: the 2·groups stored products, as 8 partial sums (the two values of groups g mod 4)
// added in a fixed tree, so the adds of a single fp32 sum do not serialize the row.
float row_dot(const float* v, const std::uint8_t* idx, std::size_t groups, const float* x) {
  float acc[8] = {};
  std::size_t g = 0;
  for (; g + 4 <= groups; g += 4)
    for (std::size_t t = 0; t < 4; ++t) {
      const int b = idx[g + t];
      const float* xg = x + 4 * (g + t);
      acc[2 * t] += v[2 * (g + t)] * xg[b & 3];
      acc[2 * t + 1] += v[2 * (g + t) + 1] * xg[(b >> 2) & 3];
    }
  for (std::size_t t = 0; g < groups; ++g, ++t) {
    const int b = idx[g];
    acc[2 * t] += v[2 * g] * x[4 * g + (b & 3)];
    acc[2 * t + 1] += v[2 * g + 1] * x[4 * g + ((b >> 2) & 3)];
  }
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

// Four outputs of one row for inputs x0..x3 (rows of x, cols apart): each index byte and value
// loaded once for the four; each input keeps 2 partial sums (the group's first and second kept
// value), 8 chains in all.
void row_dot4(const float* v, const std::uint8_t* idx, std::size_t groups, const float* x0,
              std::size_t cols, float* out) {
  float acc[4][2] = {};
  for (std::size_t g = 0; g < groups; ++g) {
    const int b = idx[g];
    const std::size_t c0 = 4 * g + (b & 3), c1 = 4 * g + ((b >> 2) & 3);
    const float v0 = v[2 * g], v1 = v[2 * g + 1];
    for (std::size_t i = 0; i < 4; ++i) {
      acc[i][0] += v0 * x0[i * cols + c0];
      acc[i][1] += v1 * x0[i * cols + c1];
    }
  }
  for (int i = 0; i < 4; ++i) out[i] = acc[i][0] + acc[i][1];
}

}  // namespace

void sparse_2_4_linear(const Sparse24Matrix& w, const float* x, float* y, std::size_t m) {
  const std::size_t rows = w.rows, cols = w.cols, groups = cols / 4;
  // As csr_linear: rows of W outermost, so a row's values and indices (cols/2·4 + cols/4 bytes)
  // stay in L1 while the m inputs, four at a time, are multiplied against them.
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    const float* v = w.values.data() + r * groups * 2;
    const std::uint8_t* idx = w.indices.data() + r * groups;
    std::size_t i = 0;
    for (; i + 4 <= m; i += 4) {
      float out[4];
      row_dot4(v, idx, groups, x + i * cols, cols, out);
      for (std::size_t t = 0; t < 4; ++t) y[(i + t) * rows + r] = out[t];
    }
    for (; i < m; ++i) y[i * rows + r] = row_dot(v, idx, groups, x + i * cols);
  }
}

}  // namespace aiopt::kernels::cpu
