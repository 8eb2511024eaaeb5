#pragma once
// Runs one planned case: prepare on its device inside memory scopes, warm up, sample with the
// stopping rule, let the technique check itself, and record everything as a Result.
#include <functional>

#include "harness/sampling.hpp"
#include "harness/sweep.hpp"
#include "report/result.hpp"

namespace aiopt {

// Everything besides the case that changes a measurement; repro_command writes all of it.
struct RunSettings {
  Sampling sampling;   // in repro where it differs from the mode's defaults
  int threads = 1;     // OpenMP/OpenBLAS threads in force
  bool quick = false;  // --quick also selects the sampling bounds
};

// Never throws for a failure of the case itself: a case that throws or fails its check is
// `failed` with the message, one whose device is absent is `skipped` with the reason.
Result run_case(const Technique& technique, const PlannedCase& planned, const RunSettings& settings);

// The fields of a Result that identify the case (technique, variant, baseline, device, params,
// seed), before it runs: what resuming matches on.
Result case_record(const PlannedCase& planned);

// A Timing in milliseconds from samples in seconds, with their statistics; `warmup` runs were
// made before them and not kept.
Timing make_timing(const std::vector<double>& seconds, int warmup);

// The command line that reruns exactly this case: technique, variant, device, every parameter,
// seed, threads, --quick, and each sampling flag whose value is not the mode's default.
std::string repro_command(const PlannedCase& planned, const RunSettings& settings);

}  // namespace aiopt
