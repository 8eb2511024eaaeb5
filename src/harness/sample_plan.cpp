#include "harness/sample_plan.hpp"

#include <numeric>

#include "harness/statistics.hpp"

namespace aiopt {

Sampling Sampling::quick() {
  Sampling s;
  s.warmup = 1;
  s.min_samples = 3;
  s.min_time_s = 0.05;
  s.max_noise = 0.10;
  s.timeout_s = 2.0;
  return s;
}

bool sampling_done(const Sampling& policy, std::span<const double> samples, double elapsed_s) {
  if (samples.empty()) return false;
  if (elapsed_s >= policy.timeout_s) return true;
  if (static_cast<int>(samples.size()) < policy.min_samples) return false;
  const double measured = std::accumulate(samples.begin(), samples.end(), 0.0);
  if (measured < policy.min_time_s) return false;
  return summarize(samples).noise() <= policy.max_noise;
}

}  // namespace aiopt
