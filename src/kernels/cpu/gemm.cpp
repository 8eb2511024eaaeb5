#include "kernels/cpu/gemm.hpp"

#include <cblas.h>
#include <omp.h>

#include <limits>
#include <stdexcept>

#include "core/threads.hpp"

namespace aiopt::kernels::cpu {

namespace {

blasint checked_dim(std::size_t v, const char* what) {
  if (v > static_cast<std::size_t>(std::numeric_limits<blasint>::max()))
    throw std::invalid_argument(std::string("sgemm: ") + what + " exceeds the BLAS integer range");
  return static_cast<blasint>(v);
}

CBLAS_TRANSPOSE op(bool transpose) { return transpose ? CblasTrans : CblasNoTrans; }

}  // namespace

void sgemm(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k,
           float alpha, const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta,
           float* c, std::size_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, op(transpose_a), op(transpose_b), checked_dim(m, "m"),
              checked_dim(n, "n"), checked_dim(k, "k"), alpha, a, checked_dim(lda, "lda"), b,
              checked_dim(ldb, "ldb"), beta, c, checked_dim(ldc, "ldc"));
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
  const int workers = threads();
  if (batch < static_cast<std::size_t>(workers) || workers == 1) {
    for (std::size_t i = 0; i < batch; ++i)
      sgemm(transpose_a, transpose_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb,
            beta, c + i * stride_c, ldc);
    return;
  }
  // Dimensions are checked here: an exception may not leave the parallel region.
  for (std::size_t v : {m, n, k, lda, ldb, ldc}) checked_dim(v, "a dimension");
  // One BLAS thread per product, the products spread over our threads; restored afterwards.
  openblas_set_num_threads(1);
#pragma omp parallel for schedule(dynamic, 1) num_threads(workers)
  for (std::size_t i = 0; i < batch; ++i)
    sgemm(transpose_a, transpose_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb,
          beta, c + i * stride_c, ldc);
  openblas_set_num_threads(workers);
}

}  // namespace aiopt::kernels::cpu
