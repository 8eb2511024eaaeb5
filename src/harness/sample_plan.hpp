#pragma once
// The sample plan: how many times a case is run (README "What a result means"). Warm up, then
// sample until both a minimum count and a minimum time are reached and the noise is under a
// bound, or a time limit.
#include <span>

namespace aiopt {

struct Sampling {
  int warmup = 1;            // runs before sampling; not kept
  int min_samples = 5;
  double min_time_s = 0.5;   // total measured time before stopping is allowed
  double max_noise = 0.03;   // bound on SampleStats::noise()
  double timeout_s = 10.0;   // stop sampling after this long whatever the noise (≥ 1 sample)
  bool flush_cache = false;  // evict caches before every sample (cold measurement)
  // A case whose least possible time (case_estimate.hpp) exceeds this is skipped with the
  // estimate, unless `force`.
  double max_case_s = 600.0;
  bool force = false;

  // The bounds `--quick` uses: enough to show a trade-off, fast enough for CI.
  static Sampling quick();
};

// The stopping rule. `samples` are the times kept so far in seconds; `elapsed_s` is the
// wall time spent sampling (including any cache flushes).
bool sampling_done(const Sampling& policy, std::span<const double> samples, double elapsed_s);

}  // namespace aiopt
