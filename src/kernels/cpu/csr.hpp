#pragma once
// Compressed sparse row (CSR) weights for unstructured pruning (TECHNIQUES.md §9): a linear
// layer's W (out, in) keeps only its nonzero entries, row by row, so a product reads and
// multiplies nonzeros() weights instead of out·in.
//
// Layout (the usual CSR, as in scipy.sparse.csr_matrix and cuSPARSE):
//   row_ptr (rows + 1): the nonzeros of row r are entries row_ptr[r] .. row_ptr[r + 1] − 1;
//   col_idx (nnz):      their input index, increasing within a row;
//   values  (nnz):      their value.
// Indices are int32, so a matrix holds at most 2^31 − 1 nonzeros and columns.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace aiopt::kernels::cpu {

struct CsrMatrix {
  std::size_t rows = 0, cols = 0;
  std::vector<std::int32_t> row_ptr, col_idx;
  std::vector<float> values;

  std::size_t nonzeros() const { return values.size(); }
  // Storage as held: 4·nnz (values) + 4·nnz (col_idx) + 4·(rows + 1) (row_ptr).
  std::size_t bytes() const {
    return values.size() * sizeof(float) + col_idx.size() * sizeof(std::int32_t) +
           row_ptr.size() * sizeof(std::int32_t);
  }
};

// The CSR form of the dense w (rows, cols), row-major, keeping exactly the entries != 0 (so
// −0.0 is dropped and a NaN is kept). std::invalid_argument when cols or the count of nonzeros
// exceeds the int32 range.
CsrMatrix csr_from_dense(const float* w, std::size_t rows, std::size_t cols);

// y (m, rows) = x (m, cols) · Wᵀ, no bias (a pruned layer adds its dense bias itself). m = 1 is
// a decode step's GEMV, m > 1 a prefill GEMM. Each output is an fp32 sum of its row's
// nonzeros as a few interleaved partial sums, in an order fixed by the row and by whether the
// input is one of a block of four (csr.cpp), so it is within nnz_r·u·Σ|w·x| of exact
// (u = 2^-24) and the same for any thread count. The outputs are split over the OpenMP threads by rows of W; nothing is
// allocated.
void csr_linear(const CsrMatrix& w, const float* x, float* y, std::size_t m);

}  // namespace aiopt::kernels::cpu
