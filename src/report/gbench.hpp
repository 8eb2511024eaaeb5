#pragma once
// Google Benchmark's JSON (the --benchmark_format=json output), so dashboards and tools built for
// it read aiopt results unchanged: github-action-benchmark's `googlecpp` tool, Bencher, and
// Google Benchmark's own tools/compare.py. docs/report-format.md "gbench" gives the mapping.
#include <string>

#include "report/result.hpp"

namespace aiopt {

// {"context": {...}, "benchmarks": [...]}: one benchmark per timed result, named
// technique/variant/device/param:value/..., real_time its median step time in ms, iterations the
// steps timed; the result's numeric metrics, peak memory and sample count as counters.
std::string render_gbench(const Report& report);

}  // namespace aiopt
