// Sparse weight kernels (kernels/cpu/csr, kernels/cpu/sparse_2_4): the CSR and 2:4 layouts, 2:4
// pruning, and both products against x·(masked W)ᵀ in double on fresh random inputs.
//
// Tolerance, per output y_j, with u = 2^-24 (the unit roundoff of fp32) and B_j = Σ_p |w_jp·x_p|
// over the stored entries of row j: a kernel sums n stored products in fp32 (n = the row's
// nonzeros for CSR, cols / 2 for 2:4), with or without fused multiply-adds, so its error is
// within γ_n·B_j (Higham 2002, §3.1); the tests allow (n + 2)·u·B_j. An output whose row has no
// nonzeros must be exactly 0. A NaN fails (the checks are written as `err <= tol`).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "core/rng.hpp"
#include "core/threads.hpp"
#include "kernels/cpu/csr.hpp"
#include "kernels/cpu/sparse_2_4.hpp"
#include "support/linear_double.hpp"
#include "support/random.hpp"

using namespace aiopt;
using namespace aiopt::kernels::cpu;

namespace {

constexpr double u = 1.0 / 16777216.0;

// w (rows, cols) uniform in [−1, 1) with each entry zeroed with probability `sparsity`.
std::vector<float> sparse_weights(std::size_t rows, std::size_t cols, double sparsity, std::uint64_t seed) {
  std::vector<float> w = test::random_vector(rows * cols, seed);
  rng::Stream mask(seed ^ 0x5eed);
  for (auto& v : w)
    if (mask.uniform() < sparsity) v = 0.0f;
  return w;
}

// Checks y (m, n) against x·wᵀ in double, with the tolerance above, n_of(j) the stored
// products of row j.
template <typename StoredCount>
void check_product(const std::vector<float>& y, const std::vector<float>& w, const std::vector<float>& x,
                   std::size_t m, std::size_t n, std::size_t k, StoredCount n_of) {
  const std::vector<double> ref = test::linear_double(w, x, nullptr, m, n, k);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      double bound = 0.0;
      for (std::size_t p = 0; p < k; ++p) bound += std::fabs(static_cast<double>(w[j * k + p]) * x[i * k + p]);
      const double tol = (static_cast<double>(n_of(j)) + 2.0) * u * bound;
      const double err = std::fabs(static_cast<double>(y[i * n + j]) - ref[i * n + j]);
      INFO("i = " << i << " j = " << j << " y = " << y[i * n + j] << " ref = " << ref[i * n + j]);
      REQUIRE(err <= tol);
    }
}

std::vector<float> csr_to_dense(const CsrMatrix& c) {
  std::vector<float> d(c.rows * c.cols, 0.0f);
  for (std::size_t r = 0; r < c.rows; ++r)
    for (std::int32_t p = c.row_ptr[r]; p < c.row_ptr[r + 1]; ++p) d[r * c.cols + c.col_idx[p]] = c.values[p];
  return d;
}

void check_csr(const std::vector<float>& w, std::size_t rows, std::size_t cols, const std::vector<float>& x,
               std::size_t m) {
  const CsrMatrix c = csr_from_dense(w.data(), rows, cols);
  std::size_t dense_nonzeros = 0;
  for (float v : w) dense_nonzeros += v != 0.0f;
  REQUIRE(c.rows == rows);
  REQUIRE(c.cols == cols);
  REQUIRE(c.row_ptr.size() == rows + 1);
  REQUIRE(c.row_ptr.front() == 0);
  REQUIRE(c.nonzeros() == dense_nonzeros);
  REQUIRE(c.col_idx.size() == dense_nonzeros);
  REQUIRE(static_cast<std::size_t>(c.row_ptr.back()) == dense_nonzeros);
  REQUIRE(c.bytes() == 4 * (2 * dense_nonzeros + rows + 1));
  for (std::size_t r = 0; r < rows; ++r)
    for (std::int32_t p = c.row_ptr[r]; p + 1 < c.row_ptr[r + 1]; ++p) REQUIRE(c.col_idx[p] < c.col_idx[p + 1]);
  for (float v : c.values) REQUIRE(v != 0.0f);
  REQUIRE(csr_to_dense(c) == w);

  std::vector<float> y(m * rows, -7.0f);
  csr_linear(c, x.data(), y.data(), m);
  check_product(y, w, x, m, rows, cols,
                [&](std::size_t j) { return static_cast<std::size_t>(c.row_ptr[j + 1] - c.row_ptr[j]); });
  for (std::size_t j = 0; j < rows; ++j)
    if (c.row_ptr[j] == c.row_ptr[j + 1])
      for (std::size_t i = 0; i < m; ++i) REQUIRE(y[i * rows + j] == 0.0f);

  // The same bits on one thread: each output is one sum in a fixed order.
  const int saved = threads();
  set_threads(1);
  std::vector<float> y1(m * rows, -7.0f);
  csr_linear(c, x.data(), y1.data(), m);
  set_threads(saved);
  REQUIRE(y1 == y);
}

}  // namespace

TEST_CASE("csr_linear matches the masked dense product in double", "[sparse]") {
  const std::size_t shapes[][2] = {{256, 512}, {37, 13}};
  const double sparsities[] = {0.0, 0.5, 0.9, 0.99, 1.0};
  const std::size_t ms[] = {1, 5, 64};
  std::uint64_t seed = 100;
  for (const auto& shape : shapes)
    for (double s : sparsities)
      for (std::size_t m : ms) {
        const std::size_t rows = shape[0], cols = shape[1];
        INFO("out = " << rows << " in = " << cols << " sparsity = " << s << " m = " << m);
        std::vector<float> w = sparse_weights(rows, cols, s, ++seed);
        // All-zero rows among nonzero ones: the first, one inside and the last.
        for (std::size_t r : {std::size_t{0}, rows / 2, rows - 1})
          for (std::size_t c = 0; c < cols; ++c) w[r * cols + c] = 0.0f;
        const std::vector<float> x = test::random_vector(m * cols, ++seed);
        check_csr(w, rows, cols, x, m);
      }
}

TEST_CASE("csr_linear with a few huge weights and inputs of mixed magnitudes", "[sparse]") {
  const std::size_t rows = 64, cols = 96, m = 7;
  std::vector<float> w = sparse_weights(rows, cols, 0.7, 7);
  rng::Stream s(8);
  for (int t = 0; t < 12; ++t) w[s.next_bits() % w.size()] = s.uniform() < 0.5f ? 3.0e4f : -5.0e4f;
  std::vector<float> x = test::random_vector(m * cols, 9);
  for (std::size_t p = 0; p < x.size(); ++p) x[p] *= (p % 3 == 0) ? 1.0e3f : (p % 3 == 1 ? 1.0e-6f : 1.0f);
  check_csr(w, rows, cols, x, m);
}

TEST_CASE("csr_from_dense of an all-zero matrix", "[sparse]") {
  const std::vector<float> w(5 * 9, 0.0f);
  const CsrMatrix c = csr_from_dense(w.data(), 5, 9);
  REQUIRE(c.nonzeros() == 0);
  REQUIRE(c.row_ptr == std::vector<std::int32_t>(6, 0));
  REQUIRE(c.bytes() == 4 * 6);
  const std::vector<float> x = test::random_vector(3 * 9, 11);
  std::vector<float> y(3 * 5, -7.0f);
  csr_linear(c, x.data(), y.data(), 3);
  REQUIRE(y == std::vector<float>(3 * 5, 0.0f));
}

TEST_CASE("prune_2_4 keeps the two largest magnitudes of each group", "[sparse]") {
  const std::size_t rows = 33, cols = 64;
  const std::vector<float> w = test::random_vector(rows * cols, 21);
  std::vector<float> masked(w.size(), -7.0f);
  prune_2_4(w.data(), masked.data(), rows, cols);
  for (std::size_t g = 0; g < w.size(); g += 4) {
    INFO("group at " << g);
    int kept = 0;
    float min_kept = INFINITY, max_dropped = 0.0f;
    for (std::size_t i = g; i < g + 4; ++i) {
      REQUIRE((masked[i] == w[i] || masked[i] == 0.0f));
      if (masked[i] != 0.0f) {
        ++kept;
        min_kept = std::fmin(min_kept, std::fabs(w[i]));
      } else {
        max_dropped = std::fmax(max_dropped, std::fabs(w[i]));
      }
    }
    REQUIRE(kept == 2);
    REQUIRE(min_kept >= max_dropped);
  }
  // In place gives the same.
  std::vector<float> inplace = w;
  prune_2_4(inplace.data(), inplace.data(), rows, cols);
  REQUIRE(inplace == masked);
}

TEST_CASE("prune_2_4 breaks ties toward the lower index", "[sparse]") {
  const std::vector<float> w = {1.0f, -1.0f, 1.0f, 0.5f,   0.5f, 2.0f, -2.0f, 2.0f,
                                3.0f, 3.0f,  3.0f, 3.0f,   0.1f, 0.2f, -0.2f, 0.1f};
  std::vector<float> masked(w.size());
  prune_2_4(w.data(), masked.data(), 2, 8);
  const std::vector<float> expected = {1.0f, -1.0f, 0.0f, 0.0f,   0.0f, 2.0f, -2.0f, 0.0f,
                                       3.0f, 3.0f,  0.0f, 0.0f,   0.0f, 0.2f, -0.2f, 0.0f};
  REQUIRE(masked == expected);
  REQUIRE_THROWS_AS(prune_2_4(w.data(), masked.data(), 1, 6), std::invalid_argument);
  std::vector<float> with_nan = w;
  with_nan[8 + 5] = NAN;
  REQUIRE_THROWS_WITH(prune_2_4(with_nan.data(), masked.data(), 2, 8), Catch::Contains("row 1 column 5"));
}

TEST_CASE("compress_2_4 and decompress_2_4 round trip", "[sparse]") {
  const std::size_t rows = 19, cols = 40;
  std::vector<float> masked(rows * cols);
  const std::vector<float> w = test::random_vector(rows * cols, 31);
  prune_2_4(w.data(), masked.data(), rows, cols);
  // Groups with one and with no nonzeros.
  masked[3 * cols + 4 * 2 + 1] = masked[3 * cols + 4 * 2 + 2] = masked[3 * cols + 4 * 2 + 3] = 0.0f;
  for (std::size_t i = 0; i < 4; ++i) masked[7 * cols + 4 * 5 + i] = 0.0f;
  for (std::size_t i = 0; i < 4; ++i) masked[(rows - 1) * cols + 4 * 9 + i] = 0.0f;
  const Sparse24Matrix c = compress_2_4(masked.data(), rows, cols);
  REQUIRE(c.values.size() == rows * cols / 2);
  REQUIRE(c.indices.size() == rows * cols / 4);
  REQUIRE(c.bytes() == 4 * rows * cols / 2 + rows * cols / 4);
  for (std::uint8_t b : c.indices) {
    REQUIRE((b >> 4) == 0);
    REQUIRE((b & 3) < (b >> 2));
  }
  std::vector<float> back(rows * cols, -7.0f);
  decompress_2_4(c, back.data());
  REQUIRE(back == masked);
}

TEST_CASE("compress_2_4 rejects a group of three nonzeros and cols not a multiple of 4", "[sparse]") {
  std::vector<float> masked(4 * 12, 0.0f);
  masked[2 * 12 + 4 + 0] = 1.0f;
  masked[2 * 12 + 4 + 2] = -0.5f;
  REQUIRE_NOTHROW(compress_2_4(masked.data(), 4, 12));
  masked[2 * 12 + 4 + 3] = 0.25f;
  REQUIRE_THROWS_AS(compress_2_4(masked.data(), 4, 12), std::invalid_argument);
  REQUIRE_THROWS_WITH(compress_2_4(masked.data(), 4, 12), Catch::Contains("row 2 group 1"));
  REQUIRE_THROWS_AS(compress_2_4(masked.data(), 4, 13), std::invalid_argument);
  REQUIRE_THROWS_WITH(compress_2_4(masked.data(), 4, 13), Catch::Contains("cols = 13"));
}

TEST_CASE("sparse_2_4_linear matches the masked dense product in double", "[sparse]") {
  const std::size_t shapes[][2] = {{256, 512}, {37, 52}};
  const std::size_t ms[] = {1, 5, 64};
  std::uint64_t seed = 300;
  for (const auto& shape : shapes)
    for (std::size_t m : ms)
      for (bool structured : {false, true}) {
        const std::size_t rows = shape[0], cols = shape[1];
        INFO("out = " << rows << " in = " << cols << " m = " << m << " structured = " << structured);
        std::vector<float> w = test::random_vector(rows * cols, ++seed);
        std::vector<float> x = test::random_vector(m * cols, ++seed);
        if (structured) {
          rng::Stream s(++seed);
          for (int t = 0; t < 10; ++t) w[s.next_bits() % w.size()] = s.uniform() < 0.5f ? 4.0e4f : -6.0e4f;
          for (std::size_t p = 0; p < x.size(); ++p)
            x[p] *= (p % 3 == 0) ? 1.0e3f : (p % 3 == 1 ? 1.0e-6f : 1.0f);
        }
        std::vector<float> masked(w.size());
        prune_2_4(w.data(), masked.data(), rows, cols);
        const Sparse24Matrix c = compress_2_4(masked.data(), rows, cols);
        std::vector<float> y(m * rows, -7.0f);
        sparse_2_4_linear(c, x.data(), y.data(), m);
        check_product(y, masked, x, m, rows, cols, [&](std::size_t) { return cols / 2; });

        const int saved = threads();
        set_threads(1);
        std::vector<float> y1(m * rows, -7.0f);
        sparse_2_4_linear(c, x.data(), y1.data(), m);
        set_threads(saved);
        REQUIRE(y1 == y);
      }
}
