#include "kernels/cache_flush.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "core/error.hpp"

namespace aiopt::kernels {

namespace {

std::size_t host_last_level_cache() {
  long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  return static_cast<std::size_t>(std::max({l3, l2, 0L}));
}

}  // namespace

// CUDA flushes live in kernels/cuda/cache_flush.cu; these hooks are defined there when CUDA
// is built, and refuse otherwise.
#ifdef AIOPT_HAVE_CUDA
void* cuda_flush_allocate(int device, std::size_t& bytes);
void cuda_flush_release(void* buffer);
void cuda_flush(void* buffer, std::size_t bytes, void* stream);
#endif

CacheFlush::CacheFlush(const Device& device, std::size_t bytes) : device_(device), bytes_(bytes) {
  if (device.is_cpu()) {
    if (bytes_ == 0) bytes_ = std::max<std::size_t>(2 * host_last_level_cache(), 64u << 20);
    bytes_ = (bytes_ + 63) / 64 * 64;
    buffer_ = std::aligned_alloc(64, bytes_);
    if (!buffer_) throw std::bad_alloc();
  } else {
#ifdef AIOPT_HAVE_CUDA
    buffer_ = cuda_flush_allocate(device.index, bytes_);
#else
    throw DeviceUnavailable("aiopt was built without CUDA");
#endif
  }
}

CacheFlush::~CacheFlush() {
  if (device_.is_cpu()) {
    std::free(buffer_);
  } else {
#ifdef AIOPT_HAVE_CUDA
    cuda_flush_release(buffer_);
#endif
  }
}

void CacheFlush::flush(void* stream) {
  if (device_.is_cpu()) {
    // Write then read every line, so both dirty and clean lines of earlier data are evicted.
    auto* p = static_cast<volatile std::uint64_t*>(buffer_);
    const std::size_t n = bytes_ / sizeof(std::uint64_t);
    for (std::size_t i = 0; i < n; i += 8) p[i] = i;
    std::uint64_t sink = 0;
    for (std::size_t i = 0; i < n; i += 8) sink += p[i];
    p[0] = sink;
  } else {
#ifdef AIOPT_HAVE_CUDA
    cuda_flush(buffer_, bytes_, stream);
#else
    (void)stream;
#endif
  }
}

}  // namespace aiopt::kernels
