#include "core/memory.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <fstream>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "core/error.hpp"

#ifdef AIOPT_HAVE_CUDA
#include "core/cuda_error.hpp"
#endif

namespace aiopt::memory {

// Current and peak bytes per device, and the scopes open on each. Allocations are few and
// large (tensor buffers), so one mutex is cheap and keeps every figure exact.
struct Ledger {
  struct Account {
    std::size_t current = 0;
    std::size_t peak = 0;
    std::vector<Scope*> scopes;
  };
  std::mutex mutex;
  std::map<std::pair<int, int>, Account> accounts;

  static Ledger& instance() {
    static Ledger ledger;
    return ledger;
  }
  Account& account(const Device& d) { return accounts[{static_cast<int>(d.kind), d.index}]; }

  void add(const Device& d, std::size_t bytes) {
    std::lock_guard lock(mutex);
    Account& a = account(d);
    a.current += bytes;
    a.peak = std::max(a.peak, a.current);
    for (Scope* s : a.scopes) s->peak_ = std::max(s->peak_, a.current);
  }
  void remove(const Device& d, std::size_t bytes) {
    std::lock_guard lock(mutex);
    Account& a = account(d);
    a.current -= std::min(a.current, bytes);
  }
  void open(Scope* s) {
    std::lock_guard lock(mutex);
    Account& a = account(s->device_);
    s->start_ = a.current;
    s->peak_ = a.current;
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
};

void* allocate(const Device& device, std::size_t bytes) {
  if (bytes == 0) return nullptr;
  void* ptr = nullptr;
  if (device.is_cpu()) {
    const std::size_t rounded = (bytes + host_alignment - 1) / host_alignment * host_alignment;
    ptr = std::aligned_alloc(host_alignment, rounded);
    if (!ptr) throw std::bad_alloc();
  } else {
#ifdef AIOPT_HAVE_CUDA
    cudaError_t err = cudaSetDevice(device.index);
    if (err == cudaSuccess) err = cudaMalloc(&ptr, bytes);
    if (err != cudaSuccess) {
      cudaGetLastError();
      const std::string what = "cannot allocate on " + to_string(device) + ": " + cudaGetErrorString(err);
      switch (cuda::classify(err)) {
        case cuda::ErrorClass::out_of_memory:
          throw std::bad_alloc();
        case cuda::ErrorClass::device_unavailable:
          throw DeviceUnavailable(what);
        case cuda::ErrorClass::failure:
          throw std::runtime_error(what);
      }
    }
#else
    throw DeviceUnavailable("aiopt was built without CUDA");
#endif
  }
  Ledger::instance().add(device, bytes);
  return ptr;
}

void release(const Device& device, void* ptr, std::size_t bytes) noexcept {
  if (!ptr) return;
  if (device.is_cpu()) {
    std::free(ptr);
  } else {
#ifdef AIOPT_HAVE_CUDA
    cudaFree(ptr);
#endif
  }
  Ledger::instance().remove(device, bytes);
}

Usage usage(const Device& device) {
  Ledger& ledger = Ledger::instance();
  std::lock_guard lock(ledger.mutex);
  const auto& a = ledger.account(device);
  return {a.current, a.peak};
}

Scope::Scope(const Device& device) : device_(device) { Ledger::instance().open(this); }
Scope::~Scope() { Ledger::instance().close(this); }
std::size_t Scope::peak_bytes() const { return Ledger::instance().peak_above_start(this); }

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
