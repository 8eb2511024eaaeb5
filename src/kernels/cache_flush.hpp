#pragma once
// Evict the caches between samples, for "cold" measurements: write over a buffer larger than
// the last-level cache (host) or the L2 (CUDA), so the next sample reads its inputs from memory.
#include <cstddef>

#include "core/device.hpp"

namespace aiopt::kernels {

class CacheFlush {
 public:
  // `bytes` of 0 picks twice the device's last-level cache (at least 64 MiB on the host).
  explicit CacheFlush(const Device& device, std::size_t bytes = 0);
  ~CacheFlush();
  CacheFlush(const CacheFlush&) = delete;
  CacheFlush& operator=(const CacheFlush&) = delete;

  // Host: writes and reads back the whole buffer. CUDA: a memset on `stream` (a cudaStream_t).
  void flush(void* stream = nullptr);
  std::size_t bytes() const { return bytes_; }

 private:
  Device device_;
  std::size_t bytes_ = 0;
  void* buffer_ = nullptr;  // not tracked: the harness's own memory is no part of a run's peak
};

}  // namespace aiopt::kernels
