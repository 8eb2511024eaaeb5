#include "cli/device_flag.hpp"

#include "core/cuda_runtime.hpp"
#include "core/error.hpp"

namespace aiopt::cli {

Device parse_device(const std::string& text) {
  Device device = Device::cpu();
  if (text == "cpu") return device;
  if (text == "cuda") {
    device = Device::cuda(0);
  } else if (text.rfind("cuda:", 0) == 0 && text.size() > 5 &&
             text.find_first_not_of("0123456789", 5) == std::string::npos && text.size() < 9) {
    device = Device::cuda(std::stoi(text.substr(5)));
  } else {
    throw InputError("--device '" + text + "' is unknown (allowed: cpu, cuda, cuda:N)");
  }
  try {
    cuda::require_device(device.index);
  } catch (const DeviceUnavailable& e) {
    throw InputError("--device " + text + ": " + e.what());  // asked for by name: bad input here
  }
  return device;
}

}  // namespace aiopt::cli
