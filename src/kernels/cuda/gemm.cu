// Dense GEMM through cuBLAS. cuBLAS is column-major; a row-major (r, c) matrix with leading
// dimension ld is, read column-major, its transpose (c, r) with the same ld. So the row-major
// product C = op(A)·op(B) is computed as the column-major product Cᵀ = op(B)ᵀ·op(A)ᵀ: the
// operands swap places, m and n swap, and each keeps its own transpose flag.
#include "kernels/cuda/gemm.hpp"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "core/cuda_check.hpp"
#include "core/memory.hpp"
#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/elementwise.hpp"

namespace aiopt::kernels::cuda {

namespace {

// ---- the handle: one per (device, host thread)

// A cuBLAS handle belongs to the device current at its creation and must not be used by two host
// threads at once; keeping one per thread and device needs no locking. They are destroyed when
// their thread exits; a failure there is ignored, since the CUDA context may already be gone.
struct Handles {
  std::map<int, cublasHandle_t> by_device;
  ~Handles() {
    for (auto& [device, handle] : by_device) cublasDestroy(handle);
  }
};

cublasHandle_t handle_for(void* stream) {
  thread_local Handles handles;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  auto it = handles.by_device.find(device);
  if (it == handles.by_device.end()) {
    cublasHandle_t h = nullptr;
    CUBLAS_CHECK(cublasCreate(&h));
    it = handles.by_device.emplace(device, h).first;
  }
  CUBLAS_CHECK(cublasSetStream(it->second, as_stream(stream)));
  return it->second;
}

// fp32 stays fp32: pedantic math forbids TF32 tensor cores even under NVIDIA_TF32_OVERRIDE.
// f16/bf16: tensor cores with fp32 accumulation, and split-K partial sums reduced in fp32 rather
// than in the 16-bit output type.
void set_math_mode(cublasHandle_t h, DType dtype) {
  const auto mode = dtype == DType::f32
                        ? CUBLAS_PEDANTIC_MATH
                        : static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  CUBLAS_CHECK(cublasSetMathMode(h, mode));
}

// ---- arguments

int checked_int(std::size_t v, const char* what) {
  if (v > static_cast<std::size_t>(INT_MAX))
    throw std::invalid_argument(std::string("cuda gemm: ") + what + " = " + std::to_string(v) +
                                " exceeds cuBLAS's int range");
  return static_cast<int>(v);
}

long long checked_stride(std::size_t v, const char* what) {
  if (v > static_cast<std::size_t>(LLONG_MAX))
    throw std::invalid_argument(std::string("cuda gemm: ") + what + " exceeds cuBLAS's stride range");
  return static_cast<long long>(v);
}

cudaDataType_t data_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return CUDA_R_32F;
    case DType::f16: return CUDA_R_16F;
    case DType::bf16: return CUDA_R_16BF;
    default:
      throw std::invalid_argument("cuda gemm: dtype " + to_string(dtype) + " is not supported (f32, f16, bf16)");
  }
}

cublasComputeType_t compute_type(DType dtype) {
  return dtype == DType::f32 ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F;
}

cublasOperation_t op(bool transpose) { return transpose ? CUBLAS_OP_T : CUBLAS_OP_N; }

// The row-major call's dimensions, checked, in the order of the column-major call: m and n swap,
// and the first operand is B (leading dimension first_ld = ldb), the second A (second_ld = lda).
struct ColumnMajor {
  int m, n, k, first_ld, second_ld, ldc;
  ColumnMajor(std::size_t row_m, std::size_t row_n, std::size_t row_k, std::size_t lda, std::size_t ldb,
              std::size_t ldc_)
      : m(checked_int(row_n, "n")), n(checked_int(row_m, "m")), k(checked_int(row_k, "k")),
        first_ld(checked_int(ldb, "ldb")), second_ld(checked_int(lda, "lda")), ldc(checked_int(ldc_, "ldc")) {}
};

// ---- bias broadcast for linear

// y (m, n) = b (n) in every row, so that the GEMM adds x·Wᵀ with beta 1.
__global__ void broadcast_rows_kernel(const float* b, float* y, std::size_t m, std::size_t n) {
  const std::size_t count = m * n;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    y[i] = b[i % n];
}

// ---- 16-bit operands for the tensor-core products

__global__ void to_16bit_kernel(const float* x, std::uint16_t* y, std::size_t n, bool bf16) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    y[i] = bf16 ? __bfloat16_as_ushort(__float2bfloat16_rn(x[i])) : __half_as_ushort(__float2half_rn(x[i]));
}

// x (n) as `dtype` bits in a device buffer from the tracked allocator.
memory::Buffer<std::uint16_t> to_16bit(const float* x, std::size_t n, DType dtype, void* stream) {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  memory::Buffer<std::uint16_t> out(Device::cuda(device), n);
  if (n > 0) {
    to_16bit_kernel<<<elementwise_blocks(n), 256, 0, as_stream(stream)>>>(x, out.data(), n, dtype == DType::bf16);
    CUDA_CHECK_LAUNCH();
  }
  return out;
}

void check_half(DType dtype) {
  if (dtype != DType::f16 && dtype != DType::bf16)
    throw std::invalid_argument("cuda linear_half: dtype " + to_string(dtype) + " is not f16 or bf16");
}

}  // namespace

// ---- launchers

void linear(const float* x, const float* w, const float* b, float* y, std::size_t m, std::size_t k,
            std::size_t n, void* stream) {
  if (m == 0 || n == 0) return;
  // Row-major y (m, n) = x (m, k) · W (n, k)ᵀ; column-major yᵀ (n, m) = W·xᵀ: W read transposed.
  // Leading dimensions must be >= 1 even when k is 0 (y is then b, or zeros).
  const std::size_t ld = k > 0 ? k : 1;
  const ColumnMajor cm(m, n, k, ld, ld, n);
  if (b != nullptr) {
    broadcast_rows_kernel<<<elementwise_blocks(m * n), 256, 0, as_stream(stream)>>>(b, y, m, n);
    CUDA_CHECK_LAUNCH();
  }
  const float alpha = 1.0f, beta = b != nullptr ? 1.0f : 0.0f;
  cublasHandle_t h = handle_for(stream);
  set_math_mode(h, DType::f32);
  CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, cm.m, cm.n, cm.k, &alpha, w, cm.first_ld, x, cm.second_ld,
                           &beta, y, cm.ldc));
}

void linear_half(const float* x, const float* w, const float* b, float* y, std::size_t m, std::size_t k,
                 std::size_t n, DType dtype, void* stream) {
  check_half(dtype);
  if (m == 0 || n == 0 || k == 0) return linear(x, w, b, y, m, k, n, stream);
  const auto x16 = to_16bit(x, m * k, dtype, stream), w16 = to_16bit(w, n * k, dtype, stream);
  const ColumnMajor cm(m, n, k, k, k, n);
  if (b != nullptr) {
    broadcast_rows_kernel<<<elementwise_blocks(m * n), 256, 0, as_stream(stream)>>>(b, y, m, n);
    CUDA_CHECK_LAUNCH();
  }
  const float alpha = 1.0f, beta = b != nullptr ? 1.0f : 0.0f;
  const cudaDataType_t type = data_type(dtype);
  cublasHandle_t h = handle_for(stream);
  set_math_mode(h, dtype);
  // As linear: column-major yᵀ (n, m) = W·xᵀ, W read transposed; fp32 y.
  CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, cm.m, cm.n, cm.k, &alpha, w16.data(), type, cm.first_ld,
                            x16.data(), type, cm.second_ld, &beta, y, CUDA_R_32F, cm.ldc, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
}

void linear_backward_half(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                          std::size_t m, std::size_t k, std::size_t n, DType dtype, void* stream) {
  check_half(dtype);
  if (m == 0 || k == 0 || n == 0) return linear_backward(x, w, dy, dx, dw, db, m, k, n, stream);
  const auto dy16 = to_16bit(dy, m * n, dtype, stream);
  const cudaDataType_t type = data_type(dtype);
  cublasHandle_t h = handle_for(stream);
  set_math_mode(h, dtype);
  const float one = 1.0f, zero = 0.0f;
  if (dx != nullptr) {
    const auto w16 = to_16bit(w, n * k, dtype, stream);
    const ColumnMajor cm(m, k, n, n, k, k);  // as linear_backward's dx
    CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, cm.m, cm.n, cm.k, &one, w16.data(), type, cm.first_ld,
                              dy16.data(), type, cm.second_ld, &zero, dx, CUDA_R_32F, cm.ldc, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
  }
  if (dw != nullptr) {
    const auto x16 = to_16bit(x, m * k, dtype, stream);
    const ColumnMajor cm(n, k, m, n, k, k);  // as linear_backward's dW, accumulated in fp32
    CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_T, cm.m, cm.n, cm.k, &one, x16.data(), type, cm.first_ld,
                              dy16.data(), type, cm.second_ld, &one, dw, CUDA_R_32F, cm.ldc, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
  }
  if (db != nullptr) bias_backward(dy, db, m, n, stream);
}

void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                     std::size_t m, std::size_t k, std::size_t n, void* stream) {
  if (m == 0 || k == 0 || n == 0) {
    if (dx != nullptr && m * k > 0) CUDA_CHECK(cudaMemsetAsync(dx, 0, m * k * sizeof(float), as_stream(stream)));
    if (db != nullptr && n > 0) bias_backward(dy, db, m, n, stream);
    return;
  }
  cublasHandle_t h = handle_for(stream);
  set_math_mode(h, DType::f32);
  const float one = 1.0f, zero = 0.0f;
  if (dx != nullptr) {
    // Row-major dx (m, k) = dy (m, n)·W (n, k); column-major dxᵀ (k, m) = Wᵀ (k, n)·dyᵀ (n, m),
    // both read as stored.
    const ColumnMajor cm(m, k, n, n, k, k);
    CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, cm.m, cm.n, cm.k, &one, w, cm.first_ld, dy, cm.second_ld,
                             &zero, dx, cm.ldc));
  }
  // Row-major dW (n, k) += dyᵀ (n, m)·x (m, k); column-major dWᵀ (k, n) += xᵀ (k, m)·dy (m, n):
  // x as stored, dy read transposed.
  if (dw != nullptr) {
    const ColumnMajor cm(n, k, m, n, k, k);
    CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, cm.m, cm.n, cm.k, &one, x, cm.first_ld, dy, cm.second_ld,
                             &one, dw, cm.ldc));
  }
  if (db != nullptr) bias_backward(dy, db, m, n, stream);
}

void gemm(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
          const void* a, std::size_t lda, const void* b, std::size_t ldb, float beta, void* c,
          std::size_t ldc, DType dtype, void* stream) {
  const cudaDataType_t type = data_type(dtype);
  if (m == 0 || n == 0) return;
  const ColumnMajor cm(m, n, k, lda, ldb, ldc);
  cublasHandle_t h = handle_for(stream);
  set_math_mode(h, dtype);
  CUBLAS_CHECK(cublasGemmEx(h, op(transpose_b), op(transpose_a), cm.m, cm.n, cm.k, &alpha, b, type, cm.first_ld, a,
                            type, cm.second_ld, &beta, c, type, cm.ldc, compute_type(dtype), CUBLAS_GEMM_DEFAULT));
}

void gemm_strided_batched(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n,
                          std::size_t k, float alpha, const void* a, std::size_t lda,
                          std::size_t stride_a, const void* b, std::size_t ldb, std::size_t stride_b,
                          float beta, void* c, std::size_t ldc, std::size_t stride_c,
                          std::size_t batch, DType dtype, void* stream) {
  const cudaDataType_t type = data_type(dtype);
  if (m == 0 || n == 0 || batch == 0) return;
  const ColumnMajor cm(m, n, k, lda, ldb, ldc);
  const int count = checked_int(batch, "batch");
  cublasHandle_t h = handle_for(stream);
  set_math_mode(h, dtype);
  CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, op(transpose_b), op(transpose_a), cm.m, cm.n, cm.k, &alpha, b, type,
                                          cm.first_ld, checked_stride(stride_b, "stride_b"), a, type, cm.second_ld,
                                          checked_stride(stride_a, "stride_a"), &beta, c, type, cm.ldc,
                                          checked_stride(stride_c, "stride_c"), count, compute_type(dtype),
                                          CUBLAS_GEMM_DEFAULT));
}

}  // namespace aiopt::kernels::cuda
