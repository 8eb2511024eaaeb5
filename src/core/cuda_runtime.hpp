#pragma once
// What the CUDA runtime offers this process, asked without requiring CUDA headers, so that
// CPU-only code (and a build without CUDA) can ask whether a GPU is there.
#include <cstddef>
#include <string>
#include <vector>

namespace aiopt::cuda {

bool built_with_cuda();

// Why no CUDA device can be used ("built without CUDA", "no CUDA device: ..."); empty when one can.
std::string unavailable_reason();
int device_count();  // 0 when unavailable

// Throws DeviceUnavailable with the reason when CUDA device `index` cannot be used: no CUDA in
// this build, no GPU, or an index this machine does not have.
void require_device(int index);

struct DeviceInfo {
  int index = 0;
  std::string name;
  int sm_major = 0, sm_minor = 0;
  int multiprocessors = 0;
  std::size_t memory_bytes = 0;
  std::size_t l2_bytes = 0;
  double memory_clock_khz = 0;
  int memory_bus_bits = 0;
  double peak_bandwidth_gbs = 0;  // 2 × memory clock × bus width (DDR), from the properties
};
std::vector<DeviceInfo> devices();

int runtime_version();  // e.g. 13000; 0 when unavailable
int driver_version();   // the newest CUDA the driver supports, e.g. 12080; 0 when no driver

// A driver is loaded but older than this build's (static) CUDA runtime needs: a GPU is there and
// cannot be used, which a GPU check must report as a failure, not as a machine without a GPU.
bool driver_too_old();
// "CUDA runtime 13.0, driver 12.8" ("driver none" when no driver is loaded).
std::string versions();

}  // namespace aiopt::cuda
