#include "core/memory.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/block_cache.hpp"
#include "core/error.hpp"

#ifdef AIOPT_HAVE_CUDA
#include "core/cuda_error.hpp"
#endif

namespace aiopt::memory {

// Current and peak bytes per device, what the device holds (reserved), and the scopes open on
// each. Allocations are few and large (tensor buffers), so one mutex is cheap and keeps every
// figure exact.
struct Ledger {
  struct Account {
    std::size_t current = 0;
    std::size_t peak = 0;
    std::size_t reserved = 0;
    std::vector<Scope*> scopes;
  };
  std::mutex mutex;
  std::map<std::pair<int, int>, Account> accounts;

  static Ledger& instance() {
    static Ledger ledger;
    return ledger;
  }
  Account& account(const Device& d) { return accounts[{static_cast<int>(d.kind), d.index}]; }

  // `reserved`: what the device holds now; the host holds what is live.
  void add(const Device& d, std::size_t bytes, std::optional<std::size_t> reserved) {
    std::lock_guard lock(mutex);
    Account& a = account(d);
    a.current += bytes;
    a.peak = std::max(a.peak, a.current);
    a.reserved = reserved.value_or(a.current);
    for (Scope* s : a.scopes) {
      s->peak_ = std::max(s->peak_, a.current);
      s->reserved_peak_ = std::max(s->reserved_peak_, a.reserved);
    }
  }
  void remove(const Device& d, std::size_t bytes, std::optional<std::size_t> reserved) {
    std::lock_guard lock(mutex);
    Account& a = account(d);
    a.current -= std::min(a.current, bytes);
    a.reserved = reserved.value_or(a.current);
  }
  void set_reserved(const Device& d, std::size_t reserved) {
    std::lock_guard lock(mutex);
    account(d).reserved = reserved;
  }
  void open(Scope* s) {
    std::lock_guard lock(mutex);
    Account& a = account(s->device_);
    s->start_ = a.current;
    s->peak_ = a.current;
    s->reserved_start_ = a.reserved;
    s->reserved_peak_ = a.reserved;
    a.scopes.push_back(s);
  }
  void close(Scope* s) {
    std::lock_guard lock(mutex);
    auto& scopes = account(s->device_).scopes;
    scopes.erase(std::remove(scopes.begin(), scopes.end(), s), scopes.end());
  }
  std::size_t peak_above_start(const Scope* s) {
    std::lock_guard lock(mutex);
    return s->peak_ - std::min(s->peak_, s->start_);
  }
  std::size_t reserved_peak_above_start(const Scope* s) {
    std::lock_guard lock(mutex);
    return s->reserved_peak_ - std::min(s->reserved_peak_, s->reserved_start_);
  }
};

namespace {

#ifdef AIOPT_HAVE_CUDA
// The CUDA runtime's memory on one device: cudaMalloc, cudaFree, cudaDeviceSynchronize.
class CudaBlocks final : public BlockSource {
 public:
  explicit CudaBlocks(const Device& device) : device_(device) {}

  void* allocate(std::size_t bytes) override {
    void* ptr = nullptr;
    cudaError_t err = cudaSetDevice(device_.index);
    if (err == cudaSuccess) err = cudaMalloc(&ptr, bytes);
    if (err == cudaSuccess) return ptr;
    cudaGetLastError();
    if (cuda::classify(err) == cuda::ErrorClass::out_of_memory) return nullptr;
    fail("cannot allocate on", err);
  }

  // cudaFree waits for the device's queued work itself; under unified addressing it needs no
  // current device.
  void free(void* block) noexcept override { cudaFree(block); }

  void fence() override {
    int current = 0;
    cudaError_t err = cudaGetDevice(&current);
    if (err == cudaSuccess) err = cudaSetDevice(device_.index);
    if (err == cudaSuccess) err = cudaDeviceSynchronize();
    if (err == cudaSuccess) err = cudaSetDevice(current);
    if (err != cudaSuccess) {
      cudaGetLastError();
      fail("cannot synchronize", err);
    }
  }

 private:
  [[noreturn]] void fail(const char* what, cudaError_t err) const {
    const std::string message = std::string(what) + " " + to_string(device_) + ": " + cudaGetErrorString(err);
    if (cuda::classify(err) == cuda::ErrorClass::device_unavailable) throw DeviceUnavailable(message);
    throw std::runtime_error(message);
  }

  Device device_;
};
#endif

// Each CUDA device's block cache, made at its first allocation. Never destroyed: a static
// Buffer may be released after the caches' destructor would have run, and cudaFree after the
// CUDA runtime has unloaded fails; the driver takes the blocks back when the process ends.
class DeviceCaches {
 public:
  static DeviceCaches& instance() {
    static auto* caches = new DeviceCaches;
    return *caches;
  }

  BlockCache& cache(const Device& device) {
    std::lock_guard lock(mutex_);
    auto& entry = entries_[device.index];
    if (!entry.cache) {
#ifdef AIOPT_HAVE_CUDA
      entry.owned = std::make_unique<CudaBlocks>(device);
      entry.cache = std::make_unique<BlockCache>(*entry.owned);
#else
      entries_.erase(device.index);
      throw DeviceUnavailable("aiopt was built without CUDA");
#endif
    }
    return *entry.cache;
  }

  BlockCache* find(const Device& device) {
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(device.index);
    return it == entries_.end() ? nullptr : it->second.cache.get();
  }

  void serve_from(const Device& device, BlockSource& source) {
    std::lock_guard lock(mutex_);
    auto& entry = entries_[device.index];
    if (entry.cache) throw std::logic_error("memory::serve_from: " + to_string(device) + " already has a cache");
    entry.cache = std::make_unique<BlockCache>(source);
  }

 private:
  struct Entry {
    std::unique_ptr<BlockSource> owned;  // the CUDA runtime's, unless serve_from gave a source
    std::unique_ptr<BlockCache> cache;
  };
  std::mutex mutex_;
  std::map<int, Entry> entries_;
};

}  // namespace

void* allocate(const Device& device, std::size_t bytes) {
  if (bytes == 0) return nullptr;
  if (device.is_cpu()) {
    const std::size_t rounded = (bytes + host_alignment - 1) / host_alignment * host_alignment;
    void* ptr = std::aligned_alloc(host_alignment, rounded);
    if (!ptr) throw std::bad_alloc();
    Ledger::instance().add(device, bytes, std::nullopt);
    return ptr;
  }
  BlockCache& cache = DeviceCaches::instance().cache(device);
  void* ptr = cache.allocate(bytes);
  Ledger::instance().add(device, bytes, cache.reserved_bytes());
  return ptr;
}

void release(const Device& device, void* ptr, std::size_t bytes) noexcept {
  if (!ptr) return;
  if (device.is_cpu()) {
    std::free(ptr);
    Ledger::instance().remove(device, bytes, std::nullopt);
    return;
  }
  // The device's cache exists: it handed out `ptr`.
  BlockCache& cache = *DeviceCaches::instance().find(device);
  cache.release(ptr);
  Ledger::instance().remove(device, bytes, cache.reserved_bytes());
}

Usage usage(const Device& device) {
  Ledger& ledger = Ledger::instance();
  std::lock_guard lock(ledger.mutex);
  const auto& a = ledger.account(device);
  return {a.current, a.peak, a.reserved};
}

void release_cached(const Device& device) {
  if (device.is_cpu()) return;
  BlockCache* cache = DeviceCaches::instance().find(device);
  if (!cache) return;
  cache->trim();
  Ledger::instance().set_reserved(device, cache->reserved_bytes());
}

void serve_from(const Device& device, BlockSource& source) {
  if (device.is_cpu()) throw std::logic_error("memory::serve_from: the host has no block cache");
  DeviceCaches::instance().serve_from(device, source);
}

Scope::Scope(const Device& device) : device_(device) { Ledger::instance().open(this); }
Scope::~Scope() { Ledger::instance().close(this); }
std::size_t Scope::peak_bytes() const { return Ledger::instance().peak_above_start(this); }
std::size_t Scope::reserved_peak_bytes() const { return Ledger::instance().reserved_peak_above_start(this); }

bool reset_peak_rss() {
  std::ofstream clear_refs("/proc/self/clear_refs");
  clear_refs << "5";
  clear_refs.flush();
  return static_cast<bool>(clear_refs);
}

std::size_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;  // "VmHWM:  2028 kB"
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<std::size_t>(ru.ru_maxrss) * 1024;  // Linux reports KiB
}

}  // namespace aiopt::memory
