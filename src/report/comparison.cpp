#include "report/comparison.hpp"

#include <cmath>
#include <cstdio>
#include <map>

#include "core/error.hpp"
#include "report/number_text.hpp"

namespace aiopt {

namespace {

// "1.15x", "7.9x", "120x": two significant digits where the difference is small.
std::string times(double r) {
  if (r < 2) return printed("%.2fx", r);
  if (r < 100) return printed("%.1fx", r);
  return printed("%.0fx", r);
}

// A relative change as "+0.4%" or "-38%".
std::string percent(double change) {
  const double pct = 100 * change;
  return printed(std::fabs(pct) < 10 ? "%+.1f%%" : "%+.0f%%", pct);
}

// How a quantity moved: a multiple once it at least doubled, a percentage otherwise.
std::string moved(double ratio, double change) {
  return ratio >= 2 ? times(ratio) : percent(change);
}

void add_speed(const Result& base, const Result& var, Comparison& c) {
  if (!base.timing || !var.timing || !(var.timing->median > 0) || !(base.timing->median > 0))
    return;
  const double s = in_milliseconds(base.timing->median, base.timing->unit) /
                   in_milliseconds(var.timing->median, var.timing->unit);
  c.speedup = s;
  if (std::fabs(s - 1) <= same_within) return;
  if (s > 1)
    c.gains.push_back(times(s) + " faster");
  else
    c.costs.push_back(times(1 / s) + " slower");
}

void add_memory(const Result& base, const Result& var, Comparison& c) {
  if (!base.memory || !var.memory) return;
  const double b = static_cast<double>(base.memory->peak_bytes);
  const double v = static_cast<double>(var.memory->peak_bytes);
  if (b == 0) {
    if (v > 0) c.costs.push_back(byte_text(v, true) + " memory");
    return;
  }
  const double ratio = v / b;
  c.memory_ratio = ratio;
  if (std::fabs(ratio - 1) <= same_within) return;
  (v < b ? c.gains : c.costs)
      .push_back(moved(ratio, ratio - 1) + " memory (" + byte_text(v - b, true) + ")");
}

void add_metric(const Metric& b, const Metric& v, Comparison& c) {
  if (!std::isfinite(b.value) || !std::isfinite(v.value)) return;
  const Movement judged = movement(b.value, v.value, v.better, same_within);
  auto& side = judged == Movement::better ? c.gains : c.costs;
  if (b.value == 0) {
    // No ratio to 0; the absolute difference still says what changed, a size in binary units.
    if (judged != Movement::same)
      side.push_back((v.unit == "B" ? byte_text(v.value, true) : printed("%+.2g", v.value)) + " " + v.name);
    return;
  }
  const double ratio = v.value / b.value;
  if (judged == Movement::same) {
    c.metrics.push_back({v.name, ratio, "same"});
    return;
  }
  c.metrics.push_back({v.name, ratio, judged == Movement::better ? "gain" : "cost"});
  // Relative to |baseline| so that the sign of the change stays right for negative values.
  const double change = (v.value - b.value) / std::fabs(b.value);
  // A multiple reads as growth, which only a positive baseline can show: -1 -> -3 is a ratio of
  // 3 but a fall, so it is worded "-200%".
  side.push_back((b.value > 0 ? moved(ratio, change) : percent(change)) + " " + v.name);
}

}  // namespace

double in_milliseconds(double value, const std::string& unit) {
  if (unit == "ms") return value;
  if (unit == "s") return value * 1e3;
  if (unit == "us") return value * 1e-3;
  if (unit == "ns") return value * 1e-6;
  throw InputError("timing unit \"" + unit + "\" is not known; allowed: ns, us, ms, s");
}

std::vector<Comparison> compare_to_baselines(const std::vector<Result>& results) {
  std::map<std::string, const Result*> baselines;
  for (const auto& r : results)
    if (r.baseline && r.status == Status::ok) baselines.emplace(r.case_key(), &r);

  std::vector<Comparison> out;
  for (const auto& var : results) {
    if (var.baseline || var.status != Status::ok) continue;
    const auto it = baselines.find(var.case_key());
    if (it == baselines.end()) continue;
    const Result& base = *it->second;
    Comparison c;
    static_cast<CaseIdentity&>(c) = var;
    c.baseline = base.variant;
    add_speed(base, var, c);
    add_memory(base, var, c);
    for (const auto& m : var.metrics)
      if (const Metric* bm = base.metric(m.name); bm && m.compared) add_metric(*bm, m, c);
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace aiopt
