#include "harness/memory_level.hpp"

#include <stdexcept>

#include "core/cuda_runtime.hpp"
#include "core/hardware.hpp"

namespace aiopt {

std::vector<MemoryLevel> memory_levels(const Device& device) {
  std::vector<MemoryLevel> levels;
  auto add = [&levels](const char* name, std::size_t bytes) {
    if (bytes > 0) levels.push_back({name, bytes});
  };
  if (device.is_cpu()) {
    const auto& cpu = hardware::cpu();
    add("L1d", cpu.l1d_bytes);
    add("L2", cpu.l2_bytes);
    add("L3", cpu.l3_bytes);
    levels.push_back({"DRAM", cpu.memory_bytes});
    return levels;
  }
  for (const auto& gpu : cuda::devices())
    if (gpu.index == device.index) {
      add("L2", gpu.l2_bytes);
      levels.push_back({"DRAM", gpu.memory_bytes});
    }
  if (levels.empty()) levels.push_back({"DRAM", 0});
  return levels;
}

MemoryLevel fitting_level(double working_set_bytes, const std::vector<MemoryLevel>& levels) {
  if (levels.empty()) throw std::logic_error("fitting_level: no memory levels");
  for (const auto& level : levels)
    if (working_set_bytes <= static_cast<double>(level.bytes)) return level;
  return levels.back();
}

}  // namespace aiopt
