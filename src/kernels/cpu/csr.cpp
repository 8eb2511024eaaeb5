// CSR sparse × dense products (csr.hpp).
#include "kernels/cpu/csr.hpp"

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace aiopt::kernels::cpu {

namespace {
constexpr std::size_t int32_max = static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max());
}  // namespace

CsrMatrix csr_from_dense(const float* w, std::size_t rows, std::size_t cols) {
  if (cols > int32_max)
    throw std::invalid_argument("csr_from_dense: cols = " + std::to_string(cols) +
                                " exceeds the int32 index range");
  CsrMatrix out;
  out.rows = rows;
  out.cols = cols;
  out.row_ptr.reserve(rows + 1);
  out.row_ptr.push_back(0);
  for (std::size_t r = 0; r < rows; ++r) {
    const float* row = w + r * cols;
    for (std::size_t c = 0; c < cols; ++c) {
      if (row[c] == 0.0f) continue;
      out.col_idx.push_back(static_cast<std::int32_t>(c));
      out.values.push_back(row[c]);
    }
    if (out.values.size() > int32_max)
      throw std::invalid_argument("csr_from_dense: more than 2^31 - 1 nonzeros (at row " +
                                  std::to_string(r) + ")");
    out.row_ptr.push_back(static_cast<std::int32_t>(out.values.size()));
  }
  return out;
}

namespace {

// One output: Σ_p values[p]·x[col_idx[p]] over begin <= p < end, as 8 interleaved partial sums
// (p mod 8) added in a fixed tree: a single fp32 sum is bound by the add latency (one nonzero
// per ~4 cycles); eight chains keep both FMA units busy.
float row_dot(const float* values, const std::int32_t* col_idx, std::int32_t begin, std::int32_t end,
              const float* x) {
  float acc[8] = {};
  std::int32_t p = begin;
  for (; p + 8 <= end; p += 8)
    for (int t = 0; t < 8; ++t) acc[t] += values[p + t] * x[col_idx[p + t]];
  for (int t = 0; p < end; ++p, ++t) acc[t] += values[p] * x[col_idx[p]];
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

// Four outputs of one row of W for inputs x0..x3 (rows of x): each nonzero and its index is
// loaded once for the four, and each input keeps 2 partial sums (p even, p odd), 8 chains in
// all. The order of each sum differs from row_dot's, so it is its own fixed order.
void row_dot4(const float* values, const std::int32_t* col_idx, std::int32_t begin, std::int32_t end,
              const float* x0, std::size_t cols, float* out) {
  float acc[4][2] = {};
  std::int32_t p = begin;
  for (; p + 2 <= end; p += 2)
    for (int h = 0; h < 2; ++h) {
      const float v = values[p + h];
      const std::int32_t c = col_idx[p + h];
      for (int i = 0; i < 4; ++i) acc[i][h] += v * x0[i * cols + c];
    }
  if (p < end)
    for (int i = 0; i < 4; ++i) acc[i][0] += values[p] * x0[i * cols + col_idx[p]];
  for (int i = 0; i < 4; ++i) out[i] = acc[i][0] + acc[i][1];
}

}  // namespace

void csr_linear(const CsrMatrix& w, const float* x, float* y, std::size_t m) {
  const std::int32_t* row_ptr = w.row_ptr.data();
  const std::int32_t* col_idx = w.col_idx.data();
  const float* values = w.values.data();
  const std::size_t rows = w.rows, cols = w.cols;
  // Rows of W outermost: a row's nonzeros are read from memory once and stay in L1 while the m
  // inputs, four at a time, gather against them; the threads share no output.
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    const std::int32_t begin = row_ptr[r], end = row_ptr[r + 1];
    std::size_t i = 0;
    for (; i + 4 <= m; i += 4) {
      float out[4];
      row_dot4(values, col_idx, begin, end, x + i * cols, cols, out);
      for (int t = 0; t < 4; ++t) y[(i + t) * rows + r] = out[t];
    }
    for (; i < m; ++i) y[i * rows + r] = row_dot(values, col_idx, begin, end, x + i * cols);
  }
}

}  // namespace aiopt::kernels::cpu
