#include "harness/case_estimate.hpp"

#include <cstdio>

#include "core/peaks.hpp"

namespace aiopt {

namespace {

std::string printed(const char* format, double a, double b) {
  char buf[96];
  std::snprintf(buf, sizeof buf, format, a, b);
  return buf;
}

}  // namespace

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
      e.basis = printed("%.4g GFLOP at the measured %.0f GFLOP/s", *work.flops / 1e9, peak / 1e9);
    }
  }
  if (work.bytes) {
    const double peak = peaks::host_bandwidth().triad_gbs * 1e9;
    if (peak > 0 && *work.bytes / peak > e.step_s) {
      e.step_s = *work.bytes / peak;
      e.basis = printed("%.4g GB at the measured %.0f GB/s", *work.bytes / 1e9, peak / 1e9);
    }
  }
  if (e.basis.empty()) return std::nullopt;
  return e;
}

std::string too_long_reason(const std::optional<CaseEstimate>& estimate, const Sampling& sampling) {
  if (!estimate || sampling.force || estimate->case_s() <= sampling.max_case_s) return {};
  char head[160], tail[96];
  std::snprintf(head, sizeof head, "estimated to take at least %.0f s (%d steps of at least %.3g s each: ",
                estimate->case_s(), estimate->steps, estimate->step_s);
  std::snprintf(tail, sizeof tail, "), past --max-case-time %.0f s; --force runs it", sampling.max_case_s);
  return head + estimate->basis + tail;
}

}  // namespace aiopt
