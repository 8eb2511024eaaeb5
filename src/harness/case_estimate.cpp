#include "harness/case_estimate.hpp"

#include "core/peaks.hpp"
#include "report/number_text.hpp"

namespace aiopt {

std::optional<CaseEstimate> estimate_case(const Work& work, const Device& device, const Sampling& sampling) {
  if (!device.is_cpu() || (!work.flops && !work.bytes)) return std::nullopt;
  CaseEstimate e;
  // Without a flush a short step is batched, so a sample takes at least one step; a long step
  // (the only kind this is for) is one step a sample.
  e.steps = sampling.warmup + 1 + sampling.min_samples;
  if (work.flops) {
    const double peak = peaks::host_sgemm_gflops() * 1e9;
    if (peak > 0 && *work.flops / peak > e.step_s) {
      e.step_s = *work.flops / peak;
      e.basis = printed("%.4g GFLOP", *work.flops / 1e9) + printed(" at the measured %.0f GFLOP/s", peak / 1e9);
    }
  }
  if (work.bytes) {
    const double peak = peaks::host_bandwidth().triad_gbs * 1e9;
    if (peak > 0 && *work.bytes / peak > e.step_s) {
      e.step_s = *work.bytes / peak;
      e.basis = printed("%.4g GB", *work.bytes / 1e9) + printed(" at the measured %.0f GB/s", peak / 1e9);
    }
  }
  if (e.basis.empty()) return std::nullopt;
  return e;
}

std::string too_long_reason(const std::optional<CaseEstimate>& estimate, const Sampling& sampling) {
  if (!estimate || sampling.force || estimate->case_s() <= sampling.max_case_s) return {};
  return printed("estimated to take at least %.0f s", estimate->case_s()) + " (" + std::to_string(estimate->steps) +
         printed(" steps of at least %.3g s each: ", estimate->step_s) + estimate->basis +
         printed("), past --max-case-time %.0f s; --force runs it", sampling.max_case_s);
}

}  // namespace aiopt
