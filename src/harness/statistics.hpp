#pragma once
// Summary statistics of timing samples, and the stopping rule of adaptive sampling.
#include <cstddef>
#include <span>

#include "report/timing.hpp"

namespace aiopt {

struct SampleStats : SampleSummary {
  // Relative standard error of the mean, stddev / (√n · mean): how well the samples pin the
  // central value down. Unlike the relative spread it shrinks as samples accrue, so a noisy but
  // stable measurement still converges.
  double noise() const;
};

SampleStats summarize(std::span<const double> samples);

// Quantile q in [0, 1] of sorted samples, linear interpolation (Hyndman & Fan type 7).
double quantile_sorted(std::span<const double> sorted, double q);

}  // namespace aiopt
