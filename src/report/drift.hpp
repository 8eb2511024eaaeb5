#pragma once
// How much the machine's own speed moved across two reports: the spread of their CPU results'
// canary_gflops (core/canary.hpp), a fixed product timed before each case, pooled from both.
// No code change moves that product, so when it moves the machine did; compare widens its timing
// allowance by the drift, because a change within it may be the machine's rather than the code's.
#include "report/result.hpp"

namespace aiopt {

inline constexpr std::size_t min_canaries_for_drift = 5;

// The k-th largest over the k-th smallest, minus 1, of the canaries of both reports together, with
// k = ceil(n / 40): the central 95% of the machine's speed over the two runs. 0 with fewer than
// min_canaries_for_drift finite values, as for reports written before the canary existed.
//
// Why pooled, and why so wide: on a shared 2-core VM, three quick CI sweeps of one build moved
// cases between runs by up to 63% in median and fastest sample alike, beyond their own noise.
// A one-thread canary fell short of that (each run's p90/p10 32-48%; pooled, its central 95%
// still left a 60% move in one pair of six); timed on the run's threads, as the cases run, the
// pooled central 95% read 57-105% and covered every pair (largest move 66%).
double drift(const Report& base, const Report& now);

}  // namespace aiopt
