#pragma once
// The tracked allocator: every tensor buffer, on the host or a CUDA device, is allocated here,
// so each device's current and peak bytes are exact, and a Scope gives the peak of one region.
// A CUDA device's blocks come through a caching allocator (core/block_cache.hpp), which keeps
// released blocks for reuse: the ledger still counts exactly the bytes callers hold, and counts
// apart what the device holds for the cache ("reserved": blocks in use, rounded up, and cached).
#include <cstddef>
#include <utility>

#include "core/device.hpp"

namespace aiopt::memory {

class BlockSource;  // core/block_cache.hpp

inline constexpr std::size_t host_alignment = 64;  // one cache line; a full AVX-512 vector

// Host memory is `host_alignment`-aligned; CUDA memory comes from the device's block cache
// (cudaMalloc underneath; at least 256-byte aligned).
// Throws std::bad_alloc when the device has no room (for CUDA, after the cache gave back its
// unused blocks), DeviceUnavailable when it is absent, and std::runtime_error for any other CUDA
// error (a fault left by an earlier kernel: cuda_error.hpp).
void* allocate(const Device& device, std::size_t bytes);
// For CUDA the block goes back to the cache, for reuse once the device has finished the work
// queued so far.
void release(const Device& device, void* ptr, std::size_t bytes) noexcept;

struct Usage {
  std::size_t current = 0;   // bytes live now
  std::size_t peak = 0;      // most bytes live at once since the process started
  std::size_t reserved = 0;  // bytes held from the device now: on the host `current`; on CUDA the
                             // cache's blocks, in use (at their rounded sizes) and cached
};
Usage usage(const Device& device);

// Gives a CUDA device's cached blocks (those not in use) back to the device, so that what it
// holds is what is in use; a no-op for the host and for a CUDA device not used yet.
void release_cached(const Device& device);

// Serves a CUDA device's allocations from `source`, through a block cache, instead of the CUDA
// runtime: a stand-in device for tests of the cache under the ledger. The source must outlive
// every allocation. Throws std::logic_error when the device is the host or already has a cache.
void serve_from(const Device& device, BlockSource& source);

// The peak of tracked bytes on one device from construction on, above what was live at
// construction. Scopes nest: an inner scope does not disturb the outer one's peak.
class Scope {
 public:
  explicit Scope(const Device& device);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

  std::size_t peak_bytes() const;  // most bytes above the start level live at once so far
  // The same for the bytes held from the device (Usage::reserved): peak_bytes() on the host.
  std::size_t reserved_peak_bytes() const;
  const Device& device() const { return device_; }

 private:
  friend struct Ledger;
  Device device_;
  std::size_t start_ = 0;
  std::size_t peak_ = 0;  // absolute peak seen while the scope is open
  std::size_t reserved_start_ = 0;
  std::size_t reserved_peak_ = 0;
};

// An owning, typed, uninitialized buffer of `count` elements on one device.
template <class T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(const Device& device, std::size_t count)
      : device_(device), count_(count),
        data_(count ? static_cast<T*>(allocate(device, count * sizeof(T))) : nullptr) {}
  ~Buffer() { reset(); }
  Buffer(Buffer&& o) noexcept { swap(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      swap(o);
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return count_; }
  std::size_t bytes() const { return count_ * sizeof(T); }
  const Device& device() const { return device_; }
  // Element access; host buffers only.
  T& operator[](std::size_t i) { return data_[i]; }
  const T& operator[](std::size_t i) const { return data_[i]; }
  T* begin() { return data_; }
  T* end() { return data_ + count_; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + count_; }

  void reset() noexcept {
    if (data_) release(device_, data_, bytes());
    data_ = nullptr;
    count_ = 0;
  }

 private:
  void swap(Buffer& o) noexcept {
    std::swap(device_, o.device_);
    std::swap(count_, o.count_);
    std::swap(data_, o.data_);
  }
  Device device_{};
  std::size_t count_ = 0;
  T* data_ = nullptr;
};

// Resets the process's peak resident set size to its current size (Linux: "5" written to
// /proc/self/clear_refs), so that peak_rss_bytes() then measures from here; false where the OS
// does not allow it.
bool reset_peak_rss();
// Peak resident set size in bytes since the last reset_peak_rss(), or since the process began:
// VmHWM of /proc/self/status, else getrusage's ru_maxrss (which no reset moves).
std::size_t peak_rss_bytes();

}  // namespace aiopt::memory
