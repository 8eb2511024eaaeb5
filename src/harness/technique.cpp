#include "harness/technique.hpp"

#include <algorithm>
#include <stdexcept>

#include "core/cuda_runtime.hpp"
#include "core/error.hpp"
#include "core/spelling.hpp"
#include "harness/sweep.hpp"

namespace aiopt {

bool Variant::runs_on(DeviceKind kind) const {
  return std::find(devices.begin(), devices.end(), kind) != devices.end();
}

void Technique::check(const Case&, DeviceKind) const {}

void Technique::validate(const Case& c, DeviceKind device) const {
  const std::string where = name();
  (void)aiopt::find_variant(*this, c.variant, where);
  for (const ParamSpec& spec : params())
    if (c.params.has(spec.name)) check_value(spec, c.params.at(spec.name), where);
  check(c, device);
}

std::unique_ptr<Run> Technique::prepare(const Case& c, const Device& device) const {
  validate(c, device.kind);
  const Variant variant = *find_variant(c.variant);
  if (!variant.runs_on(device.kind)) {
    std::vector<std::string> kinds;
    for (DeviceKind k : variant.devices) kinds.push_back(to_string(k));
    throw InputError(name() + ": variant " + in_quotes(c.variant) + " does not run on " + to_string(device.kind) +
                     "; it runs on: " + join_names(kinds));
  }
  if (device.is_cuda()) cuda::require_device(device.index);
  return start(c, device);
}

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
