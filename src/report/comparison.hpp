#pragma once
// Gains versus costs: every ok variant against the ok baseline of its case (docs/report-format.md
// → comparisons). The metric's direction alone decides gain or cost, so no technique
// writes summary code.
#include <string>
#include <vector>

#include "report/result.hpp"

namespace aiopt {

// A relative difference at or below this counts as "same": neither a gain nor a cost.
inline constexpr double same_within = 0.01;

// A duration in `unit` ("ns", "us", "ms" or "s"; the units a report allows) in milliseconds.
// Throws InputError for any other unit.
double in_milliseconds(double value, const std::string& unit);

// One Comparison per ok non-baseline result that has an ok baseline with the same case_key(),
// in the order of the results. speedup = baseline median / variant median; memory_ratio =
// variant peak_bytes / baseline peak_bytes; a metric gets a ratio when both have it, both values
// are finite and the baseline's is nonzero. Gains and costs are phrases such as "7.9x faster",
// "-38% memory (-24 MiB)", "+0.4% perplexity"; a metric whose baseline is 0 and whose variant is
// not gets no ratio but a phrase with the absolute difference ("+3.1e-06 max_abs_error").
std::vector<Comparison> compare_to_baselines(const std::vector<Result>& results);

}  // namespace aiopt
