#include "core/cuda_runtime.hpp"

#include "core/error.hpp"

#ifdef AIOPT_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace aiopt::cuda {

#ifdef AIOPT_HAVE_CUDA

bool built_with_cuda() { return true; }

namespace {
cudaError_t device_count_error(int& count) {
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) cudaGetLastError();  // clear the error so later queries start clean
  return err;
}
}  // namespace

std::string unavailable_reason() {
  int count = 0;
  const cudaError_t err = device_count_error(count);
  if (err != cudaSuccess) {
    if (driver_version() == 0) return "no CUDA device: no NVIDIA driver is loaded on this machine";
    if (err == cudaErrorInsufficientDriver)
      return "no CUDA device: the NVIDIA driver is older than this build's CUDA runtime needs (" + versions() + ")";
    return std::string("no CUDA device: ") + cudaGetErrorString(err);
  }
  if (count == 0) return "no CUDA device: cudaGetDeviceCount found none";
  return {};
}

int device_count() {
  int count = 0;
  return device_count_error(count) == cudaSuccess ? count : 0;
}

bool driver_too_old() {
  int count = 0;
  return device_count_error(count) == cudaErrorInsufficientDriver && driver_version() > 0;
}

std::vector<DeviceInfo> devices() {
  std::vector<DeviceInfo> out;
  const int count = device_count();
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    DeviceInfo d;
    d.index = i;
    d.name = p.name;
    d.sm_major = p.major;
    d.sm_minor = p.minor;
    d.multiprocessors = p.multiProcessorCount;
    d.memory_bytes = p.totalGlobalMem;
    d.l2_bytes = static_cast<std::size_t>(p.l2CacheSize);
    int clock_khz = 0, bus_bits = 0;
    cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, i);
    cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, i);
    d.memory_clock_khz = clock_khz;
    d.memory_bus_bits = bus_bits;
    d.peak_bandwidth_gbs = 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
    out.push_back(d);
  }
  return out;
}

int runtime_version() {
  int v = 0;
  return cudaRuntimeGetVersion(&v) == cudaSuccess ? v : 0;
}

int driver_version() {
  int v = 0;
  return cudaDriverGetVersion(&v) == cudaSuccess ? v : 0;
}

#else

bool built_with_cuda() { return false; }
std::string unavailable_reason() { return "aiopt was built without CUDA (AIOPT_CUDA=OFF or no nvcc)"; }
int device_count() { return 0; }
std::vector<DeviceInfo> devices() { return {}; }
int runtime_version() { return 0; }
int driver_version() { return 0; }
bool driver_too_old() { return false; }

#endif

std::string versions() {
  // CUDA writes version X.Y as 1000·X + 10·Y.
  const auto text = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
  const int runtime = runtime_version(), driver = driver_version();
  return "CUDA runtime " + (runtime ? text(runtime) : std::string("none")) + ", driver " +
         (driver ? text(driver) : std::string("none"));
}

void require_device(int index) {
  if (const std::string why = unavailable_reason(); !why.empty())
    throw DeviceUnavailable("cuda:" + std::to_string(index) + ": " + why);
  if (const int count = device_count(); index < 0 || index >= count)
    throw DeviceUnavailable("cuda:" + std::to_string(index) + " does not exist; this machine has " +
                            std::to_string(count) + " CUDA device(s)" +
                            (count > 0 ? ", cuda:0 to cuda:" + std::to_string(count - 1) : std::string()));
}

}  // namespace aiopt::cuda
