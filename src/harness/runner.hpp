#pragma once
// Runs one planned case: prepare on its device inside memory scopes, warm up, sample with the
// stopping rule, let the technique check itself, and record everything as a Result.
#include <functional>

#include "harness/sample_plan.hpp"
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
// made before them and not kept. Each sample timed `steps_per_sample` steps back to back; the
// Timing holds the time of one step (sample / steps_per_sample).
inline constexpr double min_sample_seconds = 1e-3;

Timing make_timing(const std::vector<double>& seconds, int warmup, std::size_t steps_per_sample = 1);

// How many steps one sample times so that it lasts at least `min_sample_s`: 1 for a step that
// long or longer, at most 10,000. `time_steps(n)` runs n steps back to back and returns their
// seconds; the count grows from 1 until a batch lasts long enough, so a slow first step (cold
// caches, first allocations) cannot leave the batch short. Shorter samples are mostly clock
// reads and scheduler jitter (a 2 µs GEMV moved ±26% from sample to sample on a shared VM).
std::size_t steps_per_sample(const std::function<double(std::size_t)>& time_steps,
                             double min_sample_s = min_sample_seconds);

// The command line that reruns exactly this case: technique, variant, device, every parameter,
// seed, threads, --quick, and each sampling flag whose value is not the mode's default.
std::string repro_command(const PlannedCase& planned, const RunSettings& settings);

}  // namespace aiopt
