#pragma once
// Summary statistics of timing samples, and the stopping rule of adaptive sampling.
#include <cstddef>
#include <span>

namespace aiopt {

struct SampleStats {
  std::size_t count = 0;
  double median = 0, mean = 0, min = 0, max = 0;
  double stddev = 0;  // sample standard deviation (n − 1)
  double iqr = 0;     // 75th − 25th percentile, linear interpolation between order statistics
  // Relative standard error of the mean, stddev / (√n · mean): how well the samples pin the
  // central value down. Unlike the relative spread it shrinks as samples accrue, so a noisy but
  // stable measurement still converges.
  double noise() const;
};

SampleStats summarize(std::span<const double> samples);

// Quantile q in [0, 1] of sorted samples, linear interpolation (Hyndman & Fan type 7).
double quantile_sorted(std::span<const double> sorted, double q);

}  // namespace aiopt
