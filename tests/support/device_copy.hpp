#pragma once
// Host arrays to the device and back, for the GPU tests (CUDA builds only).
#ifdef AIOPT_HAVE_CUDA
#include <vector>

#include "core/cuda_check.hpp"
#include "core/device.hpp"
#include "core/memory.hpp"

namespace aiopt::test {

// A host array copied into a new device buffer (the tracked allocator's).
template <class T>
memory::Buffer<T> upload(const std::vector<T>& host) {
  memory::Buffer<T> device(Device::cuda(), host.size());
  CUDA_CHECK(cudaMemcpy(device.data(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return device;
}

// A device buffer copied back, after the device has finished: a failed kernel shows here, not
// in a later call.
template <class T>
std::vector<T> download(const memory::Buffer<T>& device) {
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<T> host(device.size());
  CUDA_CHECK(cudaMemcpy(host.data(), device.data(), device.size() * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

}  // namespace aiopt::test

#endif  // AIOPT_HAVE_CUDA
