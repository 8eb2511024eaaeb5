#pragma once
// Dense matrix products through OpenBLAS (cblas_sgemm), row-major, fp32. The weight layout is
// that of a linear layer: W is (out, in), so a layer computes y = x·Wᵀ + b. GPT-2's Conv1D
// checkpoints store (in, out) and are transposed on load (nn/checkpoint).
#include <cstddef>
#include <initializer_list>

namespace aiopt::kernels::cpu {

// y = x·Wᵀ (+ b when b is not null). x: (m, k); w: (n, k); b: (n); y: (m, n).
void linear(const float* x, const float* w, const float* b, float* y, std::size_t m, std::size_t k,
            std::size_t n);
// The same with a triple loop accumulating in double; the tests' reference.
void linear_reference(const float* x, const float* w, const float* b, float* y, std::size_t m,
                      std::size_t k, std::size_t n);

// C = alpha·op(A)·op(B) + beta·C, row-major, with leading dimensions in elements: op(A) is
// (m, k), op(B) is (k, n), C is (m, n). Over cblas_sgemm, which runs single-threaded
// (core/threads.hpp): C is split into one block of rows (or of columns, for a GEMV-like m) per
// OpenMP thread. Inside a parallel region, or for a small product, one call on this thread.
void sgemm(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k,
           float alpha, const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta,
           float* c, std::size_t ldc);

// The backward of linear: dx = dy·W (written; skipped when dx is null), dW += dyᵀ·x (skipped when
// dw is null: a frozen weight) and db += the column sums of dy (skipped when db is null). x, dx: (m, k); w, dw: (n, k); dy: (m, n);
// db: (n). The column sums split the columns over threads and walk the rows in order, so they
// are bit-identical for any thread count.
void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                     std::size_t m, std::size_t k, std::size_t n);

// `batch` independent sgemm calls, matrix i at a + i·stride_a, b + i·stride_b, c + i·stride_c
// (strides in elements), spread over the OpenMP threads, one product per thread at a time; for
// the many small products of attention, where splitting each one would cost more than it gains.
void sgemm_strided_batched(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n,
                           std::size_t k, float alpha, const float* a, std::size_t lda,
                           std::size_t stride_a, const float* b, std::size_t ldb, std::size_t stride_b,
                           float beta, float* c, std::size_t ldc, std::size_t stride_c,
                           std::size_t batch);

// Throws std::invalid_argument, naming who, when a dimension exceeds BLAS's int range: for the
// kernels that call sgemm inside a parallel region, which an exception may not leave.
void check_blas_range(std::initializer_list<std::size_t> dims, const char* who);

}  // namespace aiopt::kernels::cpu
