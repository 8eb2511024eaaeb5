#pragma once
// What a failed CUDA runtime call means for the case that made it. Only an absent device (no
// GPU, a driver older than the runtime, an index the machine does not have) is a reason to skip;
// any other error, such as the sticky error a faulting kernel leaves behind, must fail the case,
// or a fault would quietly skip every case after it.
#include <cuda_runtime_api.h>

namespace aiopt::cuda {

enum class ErrorClass {
  out_of_memory,       // std::bad_alloc: the device is there but full
  device_unavailable,  // DeviceUnavailable: the case is skipped
  failure,             // std::runtime_error: the case fails
};

constexpr ErrorClass classify(cudaError_t err) {
  switch (err) {
    case cudaErrorMemoryAllocation:
      return ErrorClass::out_of_memory;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
      return ErrorClass::device_unavailable;
    default:
      return ErrorClass::failure;
  }
}

}  // namespace aiopt::cuda
