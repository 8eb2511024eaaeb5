#pragma once
// Running a technique in its tests: one case directly (prepare, step, finish), and the whole
// --quick sweep through the CLI.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/device.hpp"
#include "harness/runner.hpp"
#include "harness/technique.hpp"
#include "report/result.hpp"

namespace aiopt::test {

// A case of `technique`'s `variant` with every parameter at its --quick value (its default where
// it has none), then `changes`.
Case quick_case(const Technique& technique, const std::string& variant, const std::map<std::string, Value>& changes,
                std::uint64_t seed);

// Validates and prepares `c` on `device`, steps it `steps` times and finishes it; the test fails
// when finish() throws. The run's series go to *series when given.
std::vector<Metric> run_case(const Technique& technique, const Case& c, const Device& device, int steps,
                             std::vector<Series>* series = nullptr);

// `c` on the CPU through the harness's runner (harness/runner.hpp), as `aiopt bench` runs a case,
// with one warmup step and one sample: a technique's failed check comes back as a `failed` Result
// with the check's message.
Result run_through_runner(const Technique& technique, const Case& c);

// A fault-injection test's two runs of `c` through the runner: without the fault it must pass
// (the check does not fail honest work), then with the fault `fault_name` open it must come back
// `failed` from the technique's own check. Returns that broken run, for its message.
Result broken_run(const Technique& technique, const Case& c, const std::string& fault_name);

// The series called `name`; the test fails when the run did not record it.
const Series& find_series(const std::vector<Series>& all, const std::string& name);

// `aiopt bench --technique <technique> --quick` on the CPU with a JSON report: requires exit 0, a
// report the schema accepts and `variants` results, checks that each result's status is ok, and
// returns the report.
nlohmann::json quick_report(const std::string& technique, std::size_t variants);

}  // namespace aiopt::test
