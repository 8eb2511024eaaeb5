#include "support/technique_run.hpp"

#include <catch2/catch.hpp>

#include <stdexcept>

#include "core/fault.hpp"
#include "harness/runner.hpp"
#include "support/process.hpp"
#include "support/schema.hpp"

namespace aiopt::test {

Case quick_case(const Technique& technique, const std::string& variant, const std::map<std::string, Value>& changes,
                std::uint64_t seed) {
  Case c;
  c.technique = technique.name();
  c.variant = variant;
  for (const auto& spec : technique.params()) c.params.set(spec.name, spec.quick_value.value_or(spec.default_value));
  for (const auto& [k, v] : changes) c.params.set(k, v);
  c.seed = seed;
  return c;
}

std::vector<Metric> run_case(const Technique& technique, const Case& c, const Device& device, int steps,
                             std::vector<Series>* series) {
  technique.validate(c, device.kind);
  auto run = technique.prepare(c, device);
  for (int i = 0; i < steps; ++i) run->step();
  std::vector<Metric> m;
  REQUIRE_NOTHROW(m = run->finish());
  if (series) *series = run->series();
  return m;
}

Result run_through_runner(const Technique& technique, const Case& c) {
  const RunSettings settings{
      .sampling = {.warmup = 1, .min_samples = 1, .min_time_s = 0, .max_noise = 1e9, .timeout_s = 60},
      .threads = 1,
      .quick = true};
  return aiopt::run_case(technique, PlannedCase{c, DeviceKind::cpu, c.variant == technique.baseline()}, settings);
}

Result broken_run(const Technique& technique, const Case& c, const std::string& fault_name) {
  const Result ok = run_through_runner(technique, c);
  INFO(ok.message);
  CHECK(ok.status == Status::ok);
  const fault::Scope fault(fault_name);
  Result broken = run_through_runner(technique, c);
  CHECK(broken.status == Status::failed);
  return broken;
}

const Series& find_series(const std::vector<Series>& all, const std::string& name) {
  for (const auto& s : all)
    if (s.name == name) return s;
  FAIL("no series " << name);
  throw std::logic_error("unreachable");
}

nlohmann::json quick_report(const std::string& technique, std::size_t variants) {
  auto r = run_aiopt({"bench", "--technique", technique, "--quick", "--device", "cpu", "--format", "json",
                      "--progress", "never", "--min-time", "0"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const nlohmann::json report = nlohmann::json::parse(r.out);
  const auto errors = schema_errors(report);
  for (const auto& e : errors) UNSCOPED_INFO(e);
  REQUIRE(errors.empty());
  const auto& results = report.at("results");
  REQUIRE(results.size() == variants);
  for (const auto& res : results) CHECK(res.at("status") == "ok");
  return report;
}

}  // namespace aiopt::test
