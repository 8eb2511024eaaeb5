#include "report/context_difference.hpp"

#include <algorithm>
#include <optional>
#include <set>

#include "core/device.hpp"
#include "report/json_path.hpp"

namespace aiopt {

namespace {

std::string text_of(const ojson& v) {
  if (v.is_null()) return "absent";
  return v.is_string() ? v.get<std::string>() : v.dump();
}

ojson device_name(const ojson& context, std::size_t index) {
  const ojson devices = at_path(context, {"devices"});
  if (!devices.is_array()) return nullptr;
  for (const auto& d : devices)
    if (d.is_object() && d.value("index", -1) == static_cast<int>(index)) return at_path(d, {"name"});
  return nullptr;
}

std::optional<double> number_at(const ojson& v) {
  if (!v.is_number()) return std::nullopt;
  return v.get<double>();
}

}  // namespace

std::vector<ContextDifference> context_differences(const ojson& base, const ojson& now,
                                                   const std::vector<std::string>& devices) {
  std::vector<ContextDifference> out;
  const auto differ = [&out](const std::string& field, const ojson& a, const ojson& b) {
    if (a != b) out.push_back({field, text_of(a), text_of(b)});
  };
  differ("cpu.model", at_path(base, {"cpu", "model"}), at_path(now, {"cpu", "model"}));
  differ("threads", at_path(base, {"threads"}), at_path(now, {"threads"}));
  differ("blas.core", at_path(base, {"blas", "core"}), at_path(now, {"blas", "core"}));
  std::set<std::size_t> indices;
  for (const auto& d : devices)
    if (const auto device = device_named(d); device && device->is_cuda())
      indices.insert(static_cast<std::size_t>(device->index));
  for (const std::size_t i : indices)
    differ("devices[" + std::to_string(i) + "].name", device_name(base, i), device_name(now, i));
  return out;
}

double contention(const ojson& context) {
  const auto cores = number_at(at_path(context, {"cpu", "cores", "logical"}));
  const auto threads = number_at(at_path(context, {"threads"}));
  const auto busy = number_at(at_path(context, {"busy_cores"}));
  const ojson load = at_path(context, {"load_average"});
  const auto load1 = load.is_array() && !load.empty() ? number_at(load[0]) : std::nullopt;
  if (!cores || !threads || !busy || *cores < 1) return 0;
  if (*busy < 0.5 || *busy + *threads <= *cores) return 0;
  const double others = std::max(*busy, load1.value_or(0.0));
  return (others + *threads) / *cores - 1;
}

}  // namespace aiopt
