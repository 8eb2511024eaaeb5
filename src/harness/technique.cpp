#include "harness/technique.hpp"

#include <algorithm>
#include <stdexcept>

namespace aiopt {

bool Variant::runs_on(DeviceKind kind) const {
  return std::find(devices.begin(), devices.end(), kind) != devices.end();
}

void Technique::validate(const Case&, DeviceKind) const {}

std::optional<Variant> Technique::find_variant(const std::string& name) const {
  for (auto& v : variants())
    if (v.name == name) return v;
  return std::nullopt;
}

std::string Technique::baseline() const {
  for (auto& v : variants())
    if (v.baseline) return v.name;
  throw std::logic_error("technique '" + name() + "' declares no baseline variant");
}

}  // namespace aiopt
