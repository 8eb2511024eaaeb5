#include "report/regression.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "report/comparison.hpp"
#include "report/number_text.hpp"
#include "report/printers.hpp"

namespace aiopt {

namespace {

std::string params_text(const ojson& params) {
  std::string out;
  for (const auto& w : param_words(params)) {
    if (!out.empty()) out += ' ';
    out += w;
  }
  return out;
}

std::string described(const Result& r) {
  return r.technique + " " + r.variant + " " + r.device + " " + params_text(r.params);
}

// IQR relative to the median: robust to the odd slow sample that a shared machine produces,
// unlike the standard deviation.
double relative_iqr(const Timing& t) { return t.median > 0 ? t.iqr / t.median : 0; }

std::map<std::string, const Result*> by_key(const Report& report) {
  std::map<std::string, const Result*> out;
  for (const auto& r : report.results) out[r.key()] = &r;
  return out;
}

void compare_timing(const Timing& b, const Timing& n, double threshold, Verdict& v) {
  v.base_ms = in_milliseconds(b.median, b.unit);
  v.new_ms = in_milliseconds(n.median, n.unit);
  // A non-finite median (read back from null) has no verdict, rather than a NaN change that
  // would fall through to SLOWER.
  if (!(*v.base_ms > 0) || !std::isfinite(*v.base_ms) || !std::isfinite(*v.new_ms)) return;
  v.change = (*v.new_ms - *v.base_ms) / *v.base_ms;
  v.noise = std::max(relative_iqr(b), relative_iqr(n));
  if (std::fabs(v.change) <= std::max(threshold, v.noise))
    v.timing = "SAME";
  else
    v.timing = v.change < 0 ? "FASTER" : "SLOWER";
}

MetricChange compare_metric(const Metric& b, const Metric& n, double threshold) {
  MetricChange c{n.name, b.value, n.value, "same"};
  const bool moved = b.value == 0 ? n.value != 0
                                  : std::fabs(n.value - b.value) / std::fabs(b.value) > threshold;
  if (moved) {
    const bool better = n.better == Better::higher ? n.value > b.value : n.value < b.value;
    c.verdict = better ? "better" : "worse";
  }
  return c;
}

std::string duration(std::optional<double> ms) {
  if (!ms) return "-";
  const double a = std::fabs(*ms);
  return printed(a < 10 ? "%.3f ms" : a < 1000 ? "%.1f ms" : "%.0f ms", *ms);
}

std::string status_note(const Verdict& v) {
  if (v.base_status == v.new_status && v.base_status == Status::ok) return "";
  if (v.base_status == Status::ok)
    return to_string(v.new_status) + " in NEW" + (v.new_message.empty() ? "" : ": " + v.new_message);
  if (v.new_status == Status::ok) return to_string(v.base_status) + " in BASE, ok in NEW";
  return to_string(v.base_status) + " in BASE, " + to_string(v.new_status) + " in NEW";
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
  const auto base_results = by_key(base);
  const auto new_results = by_key(now);
  for (const auto& r : base.results)
    if (!new_results.count(r.key()) && base_results.at(r.key()) == &r)
      out.only_in_base.push_back(described(r));
  for (const auto& n : now.results) {
    if (new_results.at(n.key()) != &n) continue;
    const auto it = base_results.find(n.key());
    if (it == base_results.end()) {
      out.only_in_new.push_back(described(n));
      continue;
    }
    const Result& b = *it->second;
    Verdict v;
    v.technique = n.technique;
    v.variant = n.variant;
    v.device = n.device;
    v.params = n.params;
    v.base_status = b.status;
    v.new_status = n.status;
    v.new_message = n.message;
    if (b.status == Status::ok && n.status == Status::ok) {
      if (b.timing && n.timing) compare_timing(*b.timing, *n.timing, threshold, v);
      for (const auto& m : n.metrics)
        if (const Metric* bm = b.metric(m.name);
            bm && std::isfinite(bm->value) && std::isfinite(m.value))
          v.metrics.push_back(compare_metric(*bm, m, threshold));
    }
    out.verdicts.push_back(std::move(v));
  }
  return out;
}

bool any_regression(const Regressions& regressions) {
  return std::any_of(regressions.verdicts.begin(), regressions.verdicts.end(),
                     [](const Verdict& v) { return v.regressed(); });
}

std::string render_regressions(const Regressions& regressions) {
  TextTable table({"technique", "variant", "device", "params", "base", "new", "change", "verdict",
                   "metrics"});
  std::size_t same = 0, faster = 0, slower = 0, worse = 0, failed = 0;
  for (const auto& v : regressions.verdicts) {
    TextTable::Cell metrics;
    for (const auto& m : v.metrics)
      if (m.verdict != "same")
        metrics.push_back(m.name + " " + m.verdict + " (" + printed("%.4g", m.base) + " -> " +
                          printed("%.4g", m.now) + ")");
    std::string verdict = v.timing;
    const auto note = status_note(v);
    if (!note.empty()) verdict = note;
    const bool timed = !v.timing.empty();
    std::string change = "-";
    if (timed) {
      change = printed("%+.1f%%", 100 * v.change);
      if (v.noise > regressions.threshold) change += printed(" (noise %.0f%%)", 100 * v.noise);
    }
    if (v.regressed()) verdict += "  <- regression";
    table.add({{v.technique}, {v.variant}, {v.device}, TextTable::packed(param_words(v.params), 24),
               {duration(v.base_ms)}, {duration(v.new_ms)}, {change}, {verdict}, metrics});
    same += v.timing == "SAME";
    faster += v.timing == "FASTER";
    slower += v.timing == "SLOWER";
    worse += std::count_if(v.metrics.begin(), v.metrics.end(),
                           [](const MetricChange& m) { return m.verdict == "worse"; });
    failed += v.base_status == Status::ok && v.new_status == Status::failed;
  }
  std::string out = table.str();
  for (const auto& r : regressions.only_in_base) out += "only in BASE: " + r + "\n";
  for (const auto& r : regressions.only_in_new) out += "only in NEW: " + r + "\n";
  out += std::to_string(regressions.verdicts.size()) + " matched (threshold " +
         printed("%.0f%%", 100 * regressions.threshold) + "): " + std::to_string(same) +
         " same, " + std::to_string(faster) + " faster, " + std::to_string(slower) + " slower, " +
         std::to_string(worse) + " worse metrics, " + std::to_string(failed) + " newly failed; " +
         (any_regression(regressions) ? "REGRESSION" : "no regression") + "\n";
  return out;
}

}  // namespace aiopt
