#pragma once
// The result model of schema aiopt-report/1 (docs/report-format.md). One Result per case run;
// one Comparison per non-baseline result that has an ok baseline in the same case.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "report/metric.hpp"
#include "report/timing.hpp"

namespace aiopt {

using ojson = nlohmann::ordered_json;

inline constexpr const char* report_schema = "aiopt-report/1";

// interrupted: the user stopped the run while this case was in progress (SIGINT, SIGTERM).
enum class Status { ok, skipped, failed, interrupted };
std::string to_string(Status status);

struct MemoryRecord {
  std::size_t peak_bytes = 0;      // tracked allocator peak on the run's device during the run
  std::size_t host_peak_bytes = 0; // tracked peak on the host (equals peak_bytes on the CPU)
  // The process's peak RSS from the case's start (its peak reset then); absent where the OS could
  // not reset it, since a peak since the process began says nothing of this case.
  std::optional<std::size_t> peak_rss_bytes;
  // CUDA runs: the most device memory the block cache held during the run, cached blocks included,
  // above what it held at the start (core/block_cache.hpp); absent for the host, which caches nothing.
  std::optional<std::size_t> reserved_peak_bytes;
};

// The working set a run declared (Work::working_set_bytes) and the smallest memory level that
// holds it: a fraction of the DRAM bandwidth peak above 1 means the step ran from that cache.
struct WorkingSet {
  std::size_t bytes = 0;
  std::string fits;             // "L1d", "L2", "L3" or "DRAM"
  std::size_t level_bytes = 0;  // the size of that level (one cache of it, or the memory)
  bool cache_flushed = false;   // --flush-cache evicted the caches before every sample
};

// Which case a record is about: what a Result, a Comparison and a compare Verdict each carry.
struct CaseIdentity {
  std::string technique;
  std::string variant;
  std::string device;  // "cpu" or "cuda:N"
  ojson params = ojson::object();

  // technique|variant|device|params: how sweeps resume and how compare matches results.
  std::string key() const;
  // technique|device|params: the case a baseline and its variants share.
  std::string case_key() const;
};

struct Result : CaseIdentity {
  bool baseline = false;
  std::uint64_t seed = 0;
  Status status = Status::ok;
  std::string message;
  std::optional<Timing> timing;
  std::optional<MemoryRecord> memory;
  std::optional<WorkingSet> working_set;
  // The machine's speed just before the case (core/canary.hpp), GFLOP/s; CPU cases only.
  std::optional<double> canary_gflops;
  std::vector<Metric> metrics;  // in the order the technique returned them
  std::vector<Series> series;   // curves, in the order the technique returned them
  std::string repro;            // the command line that reruns this one case

  const Metric* metric(const std::string& name) const;
};

struct MetricRatio {
  std::string name;
  double ratio = 0;     // variant value / baseline value
  std::string verdict;  // "gain", "cost" or "same"
};

// variant: the compared variant; baseline: the variant it is compared with.
struct Comparison : CaseIdentity {
  std::string baseline;
  std::optional<double> speedup;       // baseline median / variant median
  std::optional<double> memory_ratio;  // variant peak_bytes / baseline peak_bytes
  std::vector<MetricRatio> metrics;
  std::vector<std::string> gains;
  std::vector<std::string> costs;
};

struct Report {
  ojson context = ojson::object();
  std::vector<Result> results;
  std::vector<Comparison> comparisons;
};

}  // namespace aiopt
