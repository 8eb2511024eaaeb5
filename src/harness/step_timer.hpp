#pragma once
// Times one step of a run: a monotonic clock on the host; CUDA events on the run's stream on a
// GPU, so the figure is the device time of exactly the work step() enqueued.
#include <functional>
#include <memory>

#include "core/device.hpp"

namespace aiopt {

class StepTimer {
 public:
  // `stream` is the run's cudaStream_t (nullptr: the default stream); ignored on the host.
  StepTimer(const Device& device, void* stream);
  ~StepTimer();
  StepTimer(const StepTimer&) = delete;
  StepTimer& operator=(const StepTimer&) = delete;

  // Runs `step` once and returns its time in seconds (on a GPU, after the stream finishes it).
  double time(const std::function<void()>& step);
  // Waits until the device has finished all work of the run (no-op on the host).
  void synchronize();

 private:
  Device device_;
  void* stream_ = nullptr;
  void* start_ = nullptr;  // cudaEvent_t
  void* stop_ = nullptr;   // cudaEvent_t
};

}  // namespace aiopt
