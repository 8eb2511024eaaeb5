#pragma once
// The least time a case can take, from the work one step declares (Work: FLOPs, bytes) and this
// machine's measured peaks, so that a case that would run for hours is skipped with the estimate
// before it starts (Sampling::max_case_s, --max-case-time; --force runs it anyway).
#include <optional>
#include <string>

#include "core/device.hpp"
#include "harness/sample_plan.hpp"
#include "harness/technique.hpp"

namespace aiopt {

struct CaseEstimate {
  double step_s = 0;  // the roofline's bound for one step: max(FLOPs / peak, bytes / peak)
  int steps = 0;      // the fewest steps the runner takes: warm-up, one to size a sample, the minimum samples
  std::string basis;  // what set step_s: "34.4 GFLOP at the measured 181 GFLOP/s"
  double case_s() const { return step_s * steps; }
};

// On the CPU, from the host sgemm and triad peaks; nullopt on a GPU (no FLOP peak is measured
// there) or when the work declares neither FLOPs nor bytes.
std::optional<CaseEstimate> estimate_case(const Work& work, const Device& device, const Sampling& sampling);

// Why the case is skipped when its estimate exceeds sampling.max_case_s and force is off; empty
// when it runs.
std::string too_long_reason(const std::optional<CaseEstimate>& estimate, const Sampling& sampling);

}  // namespace aiopt
