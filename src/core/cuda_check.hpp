#pragma once
// Checked CUDA and cuBLAS calls: every call and every launch, with file and line.
// Include only from code compiled with CUDA available.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace aiopt::cuda {

[[noreturn]] inline void fail(const std::string& what, const char* file, int line) {
  throw std::runtime_error(what + " at " + file + ":" + std::to_string(line));
}

inline void check(cudaError_t err, const char* file, int line) {
  if (err != cudaSuccess) fail(std::string("CUDA error: ") + cudaGetErrorString(err), file, line);
}

inline void check(cublasStatus_t status, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS)
    fail(std::string("cuBLAS error: ") + cublasGetStatusString(status), file, line);
}

}  // namespace aiopt::cuda

#define CUDA_CHECK(call) ::aiopt::cuda::check((call), __FILE__, __LINE__)
#define CUBLAS_CHECK(call) ::aiopt::cuda::check((call), __FILE__, __LINE__)
// After every kernel launch: launch-configuration errors surface here.
#define CUDA_CHECK_LAUNCH() ::aiopt::cuda::check(cudaGetLastError(), __FILE__, __LINE__)
