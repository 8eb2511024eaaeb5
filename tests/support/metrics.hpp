#pragma once
// Looking up a run's metrics by name in the technique tests.
#include <catch2/catch.hpp>

#include <stdexcept>
#include <string>
#include <vector>

#include "harness/technique.hpp"

namespace aiopt::test {

// The metric called `name`, or nullptr when the run did not report it.
inline const Metric* find_metric(const std::vector<Metric>& metrics, const std::string& name) {
  for (const auto& m : metrics)
    if (m.name == name) return &m;
  return nullptr;
}

// The metric called `name`; the test fails when the run did not report it.
inline const Metric& metric(const std::vector<Metric>& metrics, const std::string& name) {
  if (const Metric* m = find_metric(metrics, name)) return *m;
  FAIL("no metric " << name);
  throw std::logic_error("unreachable");
}

}  // namespace aiopt::test
