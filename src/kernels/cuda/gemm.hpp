#pragma once
// Dense GEMM through cuBLAS, callable from plain C++: device pointers, `stream` a cudaStream_t
// (nullptr: default). One cuBLAS handle per device and host thread, created on first use. Every
// call is checked. Row-major throughout, weights (out, in) as kernels/cpu/gemm.hpp.
#include <cstddef>

#include "core/dtype.hpp"

namespace aiopt::kernels::cuda {

// y = x·Wᵀ (+ b when not null), fp32 (cublasSgemm, no TF32). x: (m, k); w: (n, k); b: (n); y: (m, n).
void linear(const float* x, const float* w, const float* b, float* y, std::size_t m, std::size_t k,
            std::size_t n, void* stream);

// The backward of linear, fp32 as kernels/cpu/gemm.hpp's linear_backward: dx = dy·W (written;
// skipped when null), dW += dyᵀ·x (skipped when null: a frozen weight), db += column sums of dy
// (skipped when null).
void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                     std::size_t m, std::size_t k, std::size_t n, void* stream);

// linear and linear_backward with their products on tensor cores, for mixed-precision training:
// the fp32 operands (x, w, dy; values the training pass has already rounded to `dtype`) are
// converted to `dtype` (f16 or bf16, else std::invalid_argument) in scratch buffers from the
// tracked allocator and multiplied by cublasGemmEx with fp32 accumulation and fp32 results.
void linear_half(const float* x, const float* w, const float* b, float* y, std::size_t m, std::size_t k,
                 std::size_t n, DType dtype, void* stream);
void linear_backward_half(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                          std::size_t m, std::size_t k, std::size_t n, DType dtype, void* stream);

// C = alpha·op(A)·op(B) + beta·C, row-major with leading dimensions in elements, A, B, C stored
// as `dtype` (f32, f16 or bf16), fp32 accumulation and alpha/beta (cublasGemmEx; f16/bf16 on
// tensor cores). Other dtypes throw std::invalid_argument.
void gemm(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
          const void* a, std::size_t lda, const void* b, std::size_t ldb, float beta, void* c,
          std::size_t ldc, DType dtype, void* stream);

// fp32, with the arguments of cpu::sgemm.
inline void sgemm(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
                  const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
                  std::size_t ldc, void* stream) {
  gemm(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, DType::f32, stream);
}

// `batch` products, matrix i at a + i·stride_a etc. (strides in elements)
// (cublasGemmStridedBatchedEx).
void gemm_strided_batched(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n,
                          std::size_t k, float alpha, const void* a, std::size_t lda,
                          std::size_t stride_a, const void* b, std::size_t ldb, std::size_t stride_b,
                          float beta, void* c, std::size_t ldc, std::size_t stride_c,
                          std::size_t batch, DType dtype, void* stream);

}  // namespace aiopt::kernels::cuda
