#include "cli/device_flag.hpp"

#include "core/cuda_runtime.hpp"
#include "core/error.hpp"

namespace aiopt::cli {

Device parse_device(const std::string& text) {
  const std::optional<Device> device = device_named(text);
  if (!device) throw InputError("--device '" + text + "' is unknown (allowed: cpu, cuda, cuda:N)");
  if (device->is_cpu()) return *device;
  try {
    cuda::require_device(device->index);
  } catch (const DeviceUnavailable& e) {
    throw InputError("--device " + text + ": " + e.what());  // asked for by name: bad input here
  }
  return *device;
}

}  // namespace aiopt::cli
