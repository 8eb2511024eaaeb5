#pragma once
// 2:4 semi-structured sparsity (TECHNIQUES.md §9; NVIDIA's Ampere sparse tensor cores, Mishra et
// al. 2021): of every four consecutive inputs of an output row (a group), two weights are kept
// and two are zero, so the compressed weights take half the values plus a small index.
//
// Layout of the compressed W (rows, cols), cols % 4 == 0, G = cols / 4 groups a row:
//   values  (rows, 2·G) fp32: the two kept values of group g of row r at r·2G + 2g (the lower
//                             position first) and r·2G + 2g + 1;
//   indices (rows, G) uint8:  one byte a group: the lower kept position (0..3) in bits 0–1,
//                             the higher in bits 2–3, bits 4–7 zero. The positions differ.
// Bytes per weight: (2·4 + 1) / 4 = 2.25, against 4 for fp32.
// A group with fewer than two nonzeros still stores two positions (its nonzero ones first, then
// the lowest free ones), with value 0 for those that are zero.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace aiopt::kernels::cpu {

// masked (rows, cols) = w with, in each group of 4 of a row, the 2 largest |w| kept and the
// other 2 set to 0 (ties: the lower index is kept). masked may alias w. std::invalid_argument
// when cols % 4 != 0 or, naming its row and column, when an entry is NaN.
void prune_2_4(const float* w, float* masked, std::size_t rows, std::size_t cols);

struct Sparse24Matrix {
  std::size_t rows = 0, cols = 0;
  std::vector<float> values;          // (rows, cols / 2)
  std::vector<std::uint8_t> indices;  // (rows, cols / 4)

  // Storage as held: 4·rows·cols/2 + rows·cols/4.
  std::size_t bytes() const { return values.size() * sizeof(float) + indices.size(); }
};

// The compressed form of masked (rows, cols), which has at most 2 nonzeros in each group of 4.
// std::invalid_argument when cols % 4 != 0, or naming the row and group that has more than 2.
Sparse24Matrix compress_2_4(const float* masked, std::size_t rows, std::size_t cols);

// dense (rows, cols) = the masked weights that w was compressed from (the zeros included).
void decompress_2_4(const Sparse24Matrix& w, float* dense);

// y (m, rows) = x (m, cols) · Wᵀ, no bias. Each output is an fp32 sum of its row's cols / 2
// stored products as a few interleaved partial sums in a fixed order (sparse_2_4.cpp), so it is
// within (cols / 2)·u·Σ|w·x| of exact (u = 2^-24), the same for any thread count. Outputs are split over the OpenMP threads by rows of W;
// nothing is allocated.
void sparse_2_4_linear(const Sparse24Matrix& w, const float* x, float* y, std::size_t m);

}  // namespace aiopt::kernels::cpu
