// L2 flush for cold GPU measurements: a memset over twice the device's L2.
#include <algorithm>
#include <cstddef>

#include "core/cuda_check.hpp"

namespace aiopt::kernels {

void* cuda_flush_allocate(int device, std::size_t& bytes) {
  CUDA_CHECK(cudaSetDevice(device));
  if (bytes == 0) {
    int l2 = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
    bytes = std::max<std::size_t>(2 * static_cast<std::size_t>(l2), 32u << 20);
  }
  void* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, bytes));
  return p;
}

void cuda_flush_release(void* buffer) { cudaFree(buffer); }

void cuda_flush(void* buffer, std::size_t bytes, void* stream) {
  CUDA_CHECK(cudaMemsetAsync(buffer, 0, bytes, static_cast<cudaStream_t>(stream)));
}

}  // namespace aiopt::kernels
