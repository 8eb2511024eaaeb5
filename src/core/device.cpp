#include "core/device.hpp"

namespace aiopt {

std::string to_string(DeviceKind kind) { return kind == DeviceKind::cpu ? "cpu" : "cuda"; }

std::string to_string(const Device& device) {
  if (device.is_cpu()) return "cpu";
  return "cuda:" + std::to_string(device.index);
}

std::optional<Device> device_named(std::string_view name) {
  if (name == "cpu") return Device::cpu();
  if (name == "cuda") return Device::cuda(0);
  constexpr std::string_view prefix = "cuda:";
  // At most 8 digits, so that the ordinal fits an int.
  if (!name.starts_with(prefix) || name.size() == prefix.size() || name.size() > prefix.size() + 8)
    return std::nullopt;
  int index = 0;
  for (const char c : name.substr(prefix.size())) {
    if (c < '0' || c > '9') return std::nullopt;
    index = 10 * index + (c - '0');
  }
  return Device::cuda(index);
}

std::optional<DeviceKind> device_kind_named(std::string_view name) {
  for (const DeviceKind kind : device_kinds)
    if (name == to_string(kind)) return kind;
  return std::nullopt;
}

}  // namespace aiopt
