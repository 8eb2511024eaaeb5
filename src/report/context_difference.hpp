#pragma once
// What the contexts of two reports say about comparing their times (docs/report-format.md
// "compare"): the differences that make times incomparable, and how busy each machine was.
#include <string>
#include <vector>

#include "report/result.hpp"

namespace aiopt {

struct ContextDifference {
  std::string field;      // "cpu.model", "threads", "blas.core", "devices[0].name"
  std::string base, now;  // the values as text; "absent" where the report has none
};

// The CPU model, thread count and BLAS core of the two contexts, and the name of each GPU in
// `devices` ("cuda:N" of the matched results; "cuda" is device 0), where they differ.
std::vector<ContextDifference> context_differences(const ojson& base, const ojson& now,
                                                   const std::vector<std::string>& devices);

// How much slower than alone a run measured in `context` may have been because other processes
// shared the CPU: 0 unless other processes kept at least half a core busy (busy_cores) and our
// threads did not fit beside them (busy_cores + threads > cores), as the busy-machine warning
// says. Then (R + threads) / cores − 1, with R the larger of busy_cores and the 1-minute load
// average (where given), which counts processes waiting for a core as well: the fair-share
// slowdown of our threads among R others on `cores`. 0 where the context lacks the cores, threads
// or busy_cores.
double contention(const ojson& context);

}  // namespace aiopt
