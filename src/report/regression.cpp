#include "report/regression.hpp"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/error.hpp"
#include "report/comparison.hpp"
#include "report/drift.hpp"
#include "report/printers.hpp"

namespace aiopt {

namespace {

std::string described(const Result& r) {
  std::string out = r.technique + " " + r.variant + " " + r.device;
  for (const auto& w : param_words(r.params)) out += " " + w;
  return out;
}

// "3 results, the first kv_caching recompute cpu ...", "no results".
std::string results_text(const Report& report) {
  if (report.results.empty()) return "no results";
  const auto n = report.results.size();
  return std::to_string(n) + (n == 1 ? " result: " : " results, the first ") + described(report.results.front());
}

// IQR relative to the median: robust to the odd slow sample that a shared machine produces,
// unlike the standard deviation.
double relative_iqr(const Timing& t) { return t.median > 0 ? t.iqr / t.median : 0; }

std::map<std::string, const Result*> by_key(const Report& report) {
  std::map<std::string, const Result*> out;
  for (const auto& r : report.results) out[r.key()] = &r;
  return out;
}

void compare_timing(const Timing& b, const Timing& n, double floor, Verdict& v) {
  v.base_ms = in_milliseconds(b.median, b.unit);
  v.new_ms = in_milliseconds(n.median, n.unit);
  // A non-finite median (read back from null) has no verdict, rather than a NaN change that
  // would fall through to SLOWER.
  if (!(*v.base_ms > 0) || !std::isfinite(*v.base_ms) || !std::isfinite(*v.new_ms)) return;
  v.change = (*v.new_ms - *v.base_ms) / *v.base_ms;
  // Without a usable minimum, the median's change stands for it.
  const bool have_min = b.min > 0 && std::isfinite(b.min) && std::isfinite(n.min);
  v.min_change = have_min ? (n.min - b.min) / b.min : v.change;
  v.noise = std::max(relative_iqr(b), relative_iqr(n));
  v.allowance = std::max(floor, v.noise);
  if (!b.noise_known || !n.noise_known) {
    v.timing = "UNJUDGED";  // too few samples on a side to tell noise from change
    return;
  }
  // Interference only adds time (Chen & Revels, "Robust benchmarking in noisy environments",
  // 2016): a process that takes the core for a few of the samples, or for every other one, moves
  // the median but leaves the fastest sample where it was, while code that got slower moves both.
  if (v.change > v.allowance && v.min_change > v.allowance)
    v.timing = "SLOWER";
  else if (v.change < -v.allowance && v.min_change < -v.allowance)
    v.timing = "FASTER";
  else
    v.timing = "SAME";
}

MetricChange compare_metric(const Metric& b, const Metric& n, double threshold) {
  MetricChange c{n.name, n.unit, b.value, n.value, "same"};
  if (n.from_time || b.from_time) {
    c.verdict = "unjudged";
    return c;
  }
  const Movement moved = movement(b.value, n.value, n.better, threshold);
  if (moved != Movement::same) c.verdict = moved == Movement::better ? "better" : "worse";
  return c;
}

Verdict verdict_of(const Result& b, const Result& n, double threshold, double timing_floor) {
  Verdict v;
  static_cast<CaseIdentity&>(v) = n;
  v.base_status = b.status;
  v.new_status = n.status;
  v.new_message = n.message;
  if (b.status != Status::ok || n.status != Status::ok) return v;
  if (b.timing && n.timing) compare_timing(*b.timing, *n.timing, timing_floor, v);
  // Efficiency figures (Metric::compared false: achieved GB/s, fractions of a peak measured
  // afresh in each run) are left out, as comparisons with the baseline leave them out.
  for (const auto& m : n.metrics)
    if (const Metric* bm = b.metric(m.name); bm && m.compared && bm->compared &&
                                             std::isfinite(bm->value) && std::isfinite(m.value))
      v.metrics.push_back(compare_metric(*bm, m, threshold));
  return v;
}

}  // namespace

bool Verdict::regressed() const {
  if (base_status == Status::ok && new_status == Status::failed) return true;
  if (timing == "SLOWER") return true;
  return std::any_of(metrics.begin(), metrics.end(),
                     [](const MetricChange& m) { return m.verdict == "worse"; });
}

Regressions compare_reports(const Report& base, const Report& now, double threshold) {
  Regressions out;
  out.threshold = threshold;
  out.base_contention = contention(base.context);
  out.new_contention = contention(now.context);
  out.drift = drift(base, now);
  const double timing_floor = std::max({threshold, out.base_contention, out.new_contention, out.drift});
  const auto base_results = by_key(base);
  const auto new_results = by_key(now);
  for (const auto& r : base.results)
    if (!new_results.count(r.key()) && base_results.at(r.key()) == &r)
      out.only_in_base.push_back(described(r));
  std::vector<std::string> devices;
  for (const auto& n : now.results) {
    if (new_results.at(n.key()) != &n) continue;
    const auto it = base_results.find(n.key());
    if (it == base_results.end()) {
      out.only_in_new.push_back(described(n));
      continue;
    }
    out.verdicts.push_back(verdict_of(*it->second, n, threshold, timing_floor));
    devices.push_back(n.device);
  }
  if (out.verdicts.empty())
    throw InputError("no result of NEW matches one of BASE by technique, variant, device and params, so "
                     "there is nothing to compare (BASE has " + results_text(base) + "; NEW has " +
                     results_text(now) + ")");
  out.context_differences = context_differences(base.context, now.context, devices);
  return out;
}

bool any_regression(const Regressions& regressions) {
  return std::any_of(regressions.verdicts.begin(), regressions.verdicts.end(),
                     [](const Verdict& v) { return v.regressed(); });
}

VerdictCounts count_verdicts(const Regressions& regressions) {
  VerdictCounts c;
  for (const auto& v : regressions.verdicts) {
    ++c.matched;
    c.same += v.timing == "SAME";
    c.faster += v.timing == "FASTER";
    c.slower += v.timing == "SLOWER";
    c.unjudged += v.timing == "UNJUDGED";
    c.worse_metrics += static_cast<std::size_t>(std::count_if(
        v.metrics.begin(), v.metrics.end(), [](const MetricChange& m) { return m.verdict == "worse"; }));
    c.newly_failed += v.base_status == Status::ok && v.new_status == Status::failed;
  }
  return c;
}

}  // namespace aiopt
