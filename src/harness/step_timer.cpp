#include "harness/step_timer.hpp"

#include <chrono>
#include <stdexcept>
#include <string>

#include "core/error.hpp"

#ifdef AIOPT_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace aiopt {

#ifdef AIOPT_HAVE_CUDA
namespace {
void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}
}  // namespace
#endif

StepTimer::StepTimer(const Device& device, void* stream) : device_(device), stream_(stream) {
  if (device.is_cpu()) return;
#ifdef AIOPT_HAVE_CUDA
  check(cudaSetDevice(device.index), "cudaSetDevice");
  cudaEvent_t a = nullptr, b = nullptr;
  check(cudaEventCreate(&a), "cudaEventCreate");
  check(cudaEventCreate(&b), "cudaEventCreate");
  start_ = a;
  stop_ = b;
#else
  throw DeviceUnavailable("aiopt was built without CUDA");
#endif
}

StepTimer::~StepTimer() {
#ifdef AIOPT_HAVE_CUDA
  if (start_) cudaEventDestroy(static_cast<cudaEvent_t>(start_));
  if (stop_) cudaEventDestroy(static_cast<cudaEvent_t>(stop_));
#endif
}

double StepTimer::time(const std::function<void()>& step) {
  if (device_.is_cpu()) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    const auto t1 = std::chrono::steady_clock::now();
    return std::chrono::duration<double>(t1 - t0).count();
  }
#ifdef AIOPT_HAVE_CUDA
  auto stream = static_cast<cudaStream_t>(stream_);
  check(cudaEventRecord(static_cast<cudaEvent_t>(start_), stream), "cudaEventRecord");
  step();
  check(cudaEventRecord(static_cast<cudaEvent_t>(stop_), stream), "cudaEventRecord");
  check(cudaEventSynchronize(static_cast<cudaEvent_t>(stop_)), "cudaEventSynchronize");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start_), static_cast<cudaEvent_t>(stop_)),
        "cudaEventElapsedTime");
  return ms * 1e-3;
#else
  return 0.0;
#endif
}

void StepTimer::synchronize() {
#ifdef AIOPT_HAVE_CUDA
  if (device_.is_cuda())
    check(cudaStreamSynchronize(static_cast<cudaStream_t>(stream_)), "cudaStreamSynchronize");
#endif
}

}  // namespace aiopt
