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

void csr_linear(const CsrMatrix& w, const float* x, float* y, std::size_t m) {
  const std::int32_t* row_ptr = w.row_ptr.data();
  const std::int32_t* col_idx = w.col_idx.data();
  const float* values = w.values.data();
  const std::size_t rows = w.rows, cols = w.cols;
  // Rows of W outermost: a row's nonzeros are read from memory once and stay in L1 while every
  // one of the m inputs gathers against them (loop order rows → m → nonzeros), and the threads
  // share no output.
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    const std::int32_t begin = row_ptr[r], end = row_ptr[r + 1];
    for (std::size_t i = 0; i < m; ++i) {
      const float* xi = x + i * cols;
      float sum = 0.0f;
      for (std::int32_t p = begin; p < end; ++p) sum += values[p] * xi[col_idx[p]];
      y[i * rows + r] = sum;
    }
  }
}

}  // namespace aiopt::kernels::cpu
