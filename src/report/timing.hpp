#pragma once
// A case's timing (docs/report-format.md "timing") and the one list of its summary fields, in the
// order reports write them: the JSON writer and reader and the CSV printer all walk it.
#include <cstddef>
#include <string>
#include <vector>

namespace aiopt {

// The summary statistics of timing samples (harness/statistics.hpp computes them).
struct SampleSummary {
  std::size_t count = 0;
  double median = 0, mean = 0, min = 0, max = 0;
  double stddev = 0;  // sample standard deviation (n − 1)
  double iqr = 0;     // 75th − 25th percentile, linear interpolation between order statistics
};

struct Timing : SampleSummary {
  std::string unit = "ms";   // of the times and the samples; count is samples.size()
  std::size_t warmup = 0;    // warmup runs before sampling, not kept
  std::size_t steps_per_sample = 1;  // steps each sample timed back to back; samples are per step
  // false when the sampling timeout stopped the case before its minimum count of samples: too few
  // to measure the noise by, so compare does not judge the timing.
  bool noise_known = true;
  std::vector<double> samples;
};

template <class T>
struct TimingField {
  const char* name;
  T Timing::*member;
};

// The times, in `unit`: JSON keys after "unit", CSV columns "<name>_ms".
inline constexpr TimingField<double> timing_times[] = {
    {"median", &Timing::median}, {"mean", &Timing::mean},     {"min", &Timing::min},
    {"max", &Timing::max},       {"stddev", &Timing::stddev}, {"iqr", &Timing::iqr}};
// The counts that follow the times in JSON and CSV alike.
inline constexpr TimingField<std::size_t> timing_counts[] = {{"count", &Timing::count},
                                                             {"warmup", &Timing::warmup}};

}  // namespace aiopt
