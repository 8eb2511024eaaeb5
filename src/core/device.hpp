#pragma once
// Where work runs and where memory lives: the host, or one CUDA device.
#include <optional>
#include <string>
#include <string_view>

namespace aiopt {

enum class DeviceKind { cpu, cuda };

struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;  // CUDA ordinal; 0 for the host

  static Device cpu() { return {DeviceKind::cpu, 0}; }
  static Device cuda(int i = 0) { return {DeviceKind::cuda, i}; }
  bool is_cpu() const { return kind == DeviceKind::cpu; }
  bool is_cuda() const { return kind == DeviceKind::cuda; }
  bool operator==(const Device&) const = default;
};

// "cpu" and "cuda" name device kinds in configs and reports; "cuda:N" names one GPU.
std::string to_string(DeviceKind kind);
std::string to_string(const Device& device);

inline constexpr DeviceKind device_kinds[] = {DeviceKind::cpu, DeviceKind::cuda};

// The device a name gives: "cpu", "cuda" (GPU 0) or "cuda:N"; nullopt for any other text. Whether
// the GPU exists is not asked.
std::optional<Device> device_named(std::string_view name);
// The kind a name gives when it names a kind alone: "cpu" or "cuda", not "cuda:N".
std::optional<DeviceKind> device_kind_named(std::string_view name);

}  // namespace aiopt
