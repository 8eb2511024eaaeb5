#pragma once
// Runs one planned case: prepare on its device inside memory scopes, warm up, sample with the
// stopping rule, let the technique check itself, and record everything as a Result.
#include <functional>

#include "harness/sampling.hpp"
#include "harness/sweep.hpp"
#include "report/result.hpp"

namespace aiopt {

struct RunSettings {
  Sampling sampling;
  int threads = 1;     // OpenMP/OpenBLAS threads in force (recorded in repro)
  bool quick = false;  // recorded in repro: --quick also selects the sampling bounds
};

// Never throws for a failure of the case itself: a case that throws or fails its check is
// `failed` with the message, one whose device is absent is `skipped` with the reason.
Result run_case(const Technique& technique, const PlannedCase& planned, const RunSettings& settings);

// The fields of a Result that identify the case (technique, variant, baseline, device, params,
// seed), before it runs: what resuming matches on.
Result case_record(const PlannedCase& planned);

// The command line that reruns exactly this case.
std::string repro_command(const PlannedCase& planned, const RunSettings& settings);

}  // namespace aiopt
