#include "kernels/cpu/gemm.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

#include "core/threads.hpp"
#include "kernels/cpu/over_columns.hpp"

namespace aiopt::kernels::cpu {

namespace {

blasint checked_dim(std::size_t v, const char* what) {
  if (v > static_cast<std::size_t>(std::numeric_limits<blasint>::max()))
    throw std::invalid_argument(std::string("sgemm: ") + what + " exceeds the BLAS integer range");
  return static_cast<blasint>(v);
}

CBLAS_TRANSPOSE op(bool transpose) { return transpose ? CblasTrans : CblasNoTrans; }

}  // namespace

namespace {

void sgemm_one_thread(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k,
                      float alpha, const float* a, std::size_t lda, const float* b, std::size_t ldb,
                      float beta, float* c, std::size_t ldc) {
  if (m == 1) {
    // One row of C (a decode step): a matrix-vector product. OpenBLAS 0.3.21's sgemm packs all
    // of B even for one row, which made a 4096 × 14336 product 3-5× slower than sgemv.
    // c = alpha·op(B)ᵀ·a: with B stored (n, k) that is B·a, with B stored (k, n) it is Bᵀ·a; the
    // elements of a lie lda apart when A is stored transposed (k, 1).
    const blasint inc_a = transpose_a ? static_cast<blasint>(lda) : 1;
    if (transpose_b)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(n), static_cast<blasint>(k), alpha, b,
                  static_cast<blasint>(ldb), a, inc_a, beta, c, 1);
    else
      cblas_sgemv(CblasRowMajor, CblasTrans, static_cast<blasint>(k), static_cast<blasint>(n), alpha, b,
                  static_cast<blasint>(ldb), a, inc_a, beta, c, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, op(transpose_a), op(transpose_b), static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), alpha, a, static_cast<blasint>(lda), b,
              static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

// Below this many multiply-adds a product runs on one thread: a parallel region costs a few
// microseconds, about what a 64³ product takes.
constexpr std::size_t parallel_min_macs = std::size_t{1} << 18;
// Blocks of C are multiples of 16 rows or columns, so each thread's part stays a whole number
// of the BLAS kernel's register tiles.
constexpr std::size_t block_align = 16;

}  // namespace

void check_blas_range(std::initializer_list<std::size_t> dims, const char* who) {
  for (std::size_t dim : dims)
    if (dim > static_cast<std::size_t>(std::numeric_limits<blasint>::max()))
      throw std::invalid_argument(std::string(who) + ": a dimension exceeds the BLAS integer range");
}

void sgemm(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k,
           float alpha, const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta,
           float* c, std::size_t ldc) {
  if (m == 0 || n == 0) return;
  for (std::size_t v : {m, n, k, lda, ldb, ldc}) checked_dim(v, "a dimension");
  const std::size_t workers = static_cast<std::size_t>(threads());
  if (workers == 1 || omp_in_parallel() || m * n * k < parallel_min_macs) {
    sgemm_one_thread(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Split C into one block per thread: by rows when there are enough (A's rows are the block's),
  // else by columns (a decode step's GEMV has m = 1; B's columns are the block's).
  const bool by_rows = m >= workers * block_align;
  const std::size_t extent = by_rows ? m : n;
  const std::size_t per = (extent / workers + block_align - 1) / block_align * block_align;
#pragma omp parallel for schedule(static, 1) num_threads(static_cast<int>(workers))
  for (std::size_t w = 0; w < workers; ++w) {
    const std::size_t begin = std::min(extent, w * per);
    const std::size_t end = w + 1 == workers ? extent : std::min(extent, begin + per);
    if (begin == end) continue;
    if (by_rows) {
      const float* a_block = transpose_a ? a + begin : a + begin * lda;
      sgemm_one_thread(transpose_a, transpose_b, end - begin, n, k, alpha, a_block, lda, b, ldb, beta,
                       c + begin * ldc, ldc);
    } else {
      const float* b_block = transpose_b ? b + begin * ldb : b + begin;
      sgemm_one_thread(transpose_a, transpose_b, m, end - begin, k, alpha, a, lda, b_block, ldb, beta,
                       c + begin, ldc);
    }
  }
}

void linear(const float* x, const float* w, const float* b, float* y, std::size_t m, std::size_t k,
            std::size_t n) {
  if (b != nullptr) {
#pragma omp parallel for schedule(static)
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < n; ++j) y[i * n + j] = b[j];
  }
  sgemm(false, true, m, n, k, 1.0f, x, k, w, k, b != nullptr ? 1.0f : 0.0f, y, n);
}

void linear_reference(const float* x, const float* w, const float* b, float* y, std::size_t m,
                      std::size_t k, std::size_t n) {
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      double sum = b != nullptr ? b[j] : 0.0;
      for (std::size_t p = 0; p < k; ++p) sum += static_cast<double>(x[i * k + p]) * w[j * k + p];
      y[i * n + j] = static_cast<float>(sum);
    }
}

void sgemm_strided_batched(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n,
                           std::size_t k, float alpha, const float* a, std::size_t lda,
                           std::size_t stride_a, const float* b, std::size_t ldb, std::size_t stride_b,
                           float beta, float* c, std::size_t ldc, std::size_t stride_c,
                           std::size_t batch) {
  if (batch == 1 || omp_in_parallel()) {
    for (std::size_t i = 0; i < batch; ++i)
      sgemm(transpose_a, transpose_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb,
            beta, c + i * stride_c, ldc);
    return;
  }
  if (m == 0 || n == 0) return;
  // Dimensions are checked here: an exception may not leave the parallel region.
  for (std::size_t v : {m, n, k, lda, ldb, ldc}) checked_dim(v, "a dimension");
  // The products spread over the threads, each product on one.
#pragma omp parallel for schedule(dynamic, 1)
  for (std::size_t i = 0; i < batch; ++i)
    sgemm_one_thread(transpose_a, transpose_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b,
                     ldb, beta, c + i * stride_c, ldc);
}

void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                     std::size_t m, std::size_t k, std::size_t n) {
  // dx = dy·W: (m, n)·(n, k).
  if (dx != nullptr) sgemm(false, false, m, k, n, 1.0f, dy, n, w, k, 0.0f, dx, k);
  // dW += dyᵀ·x: (n, m)·(m, k).
  if (dw != nullptr) sgemm(true, false, n, k, m, 1.0f, dy, n, x, k, 1.0f, dw, k);
  if (db != nullptr) {
    over_columns(n, [&](std::size_t begin, std::size_t end) {
      for (std::size_t i = 0; i < m; ++i) {
        const float* dyi = dy + i * n;
#pragma omp simd
        for (std::size_t j = begin; j < end; ++j) db[j] += dyi[j];
      }
    });
  }
}

}  // namespace aiopt::kernels::cpu
