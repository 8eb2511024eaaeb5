#pragma once
// A technique from its parts: the one Technique implementation behind every technique's factory
// (make_<name>, listed by techniques/registry.cpp). Each technique's .cpp defines the parts that
// differ (its summary, parameters, variants, check and runs); the overrides are written once here.
#include <memory>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "harness/technique.hpp"

namespace aiopt {

struct TechniqueParts {
  std::string name;       // the CLI name, snake_case
  std::string trade_off;  // one line: what it trades for what
  std::string (*summary)();
  std::vector<ParamSpec> (*params)();
  std::vector<Variant> (*variants)();
  void (*check)(const Case& c, DeviceKind device);  // Technique::check
  std::unique_ptr<Run> (*start)(const Case& c, const Device& device);  // Technique::start
};

std::unique_ptr<Technique> make_technique(TechniqueParts parts);

}  // namespace aiopt
