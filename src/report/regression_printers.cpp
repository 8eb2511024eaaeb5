// `aiopt compare` output: the verdicts of regression.hpp as a terminal table, Markdown or JSON.
#include <algorithm>
#include <cmath>
#include <optional>

#include "core/error.hpp"
#include "report/number_text.hpp"
#include "report/regression.hpp"

namespace aiopt {

namespace {

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

std::string verdict_text(const Verdict& v) {
  const auto note = status_note(v);
  std::string text = note.empty() ? v.timing : note;
  if (text == "UNJUDGED") text += " (too few samples: noise unknown)";
  if (v.regressed()) text += "  <- regression";
  return text;
}

// The change, with the measured noise beside it when that, not the threshold, set the allowance,
// and the fastest sample's change when that alone kept a large change SAME.
std::string change_text(const Verdict& v, double threshold) {
  if (v.timing.empty()) return "-";
  std::string text = printed("%+.1f%%", 100 * v.change);
  if (v.noise > threshold) text += printed(" (noise %.0f%%)", 100 * v.noise);
  if (v.timing == "SAME" && std::fabs(v.change) > v.allowance)
    text += printed(" (fastest %+.0f%%)", 100 * v.min_change);
  return text;
}

// The judged metrics that moved; metrics from time are left to the JSON.
std::vector<std::string> moved_metrics(const Verdict& v) {
  std::vector<std::string> out;
  for (const auto& m : v.metrics)
    if (m.verdict == "better" || m.verdict == "worse")
      out.push_back(m.name + " " + m.verdict + " (" + printed("%.4g", m.base) + " -> " +
                    printed("%.4g", m.now) + ")");
  return out;
}

std::string contention_warning(const char* which, double contention) {
  return std::string(which) +
         " was measured on a busy machine: other processes competed for the cores (its context's "
         "busy_cores and load_average), which can slow a case by up to " +
         printed("%.0f%%", 100 * contention) +
         "; timing changes within that are SAME, so only a larger slowdown is caught. Rerun both on "
         "an idle machine to judge speed.";
}

std::string drift_warning(double drift) {
  return "The machine's own speed moved by " + printed("%.0f%%", 100 * drift) +
         " across BASE and NEW: a fixed product timed before each case (canary_gflops; the central 95% "
         "of both reports' values) changed that much with no change of code. Timing changes within that "
         "are SAME, so only a larger slowdown is caught; rerun both on a steadier machine to judge smaller ones.";
}

std::vector<std::string> warnings(const Regressions& reg) {
  std::vector<std::string> out;
  for (const auto& d : reg.context_differences)
    out.push_back("BASE and NEW differ in " + d.field + " (BASE: " + d.base + ", NEW: " + d.now +
                  "): compared anyway, but a change may come from the machine, not the code.");
  if (reg.base_contention > 0) out.push_back(contention_warning("BASE", reg.base_contention));
  if (reg.new_contention > 0) out.push_back(contention_warning("NEW", reg.new_contention));
  if (reg.drift > reg.threshold) out.push_back(drift_warning(reg.drift));
  return out;
}

std::string summary_line(const Regressions& reg) {
  const auto c = count_verdicts(reg);
  return std::to_string(c.matched) + " matched (threshold " + printed("%.0f%%", 100 * reg.threshold) +
         "): " + std::to_string(c.same) + " same, " + std::to_string(c.faster) + " faster, " +
         std::to_string(c.slower) + " slower, " + (c.unjudged ? std::to_string(c.unjudged) + " unjudged, " : "") +
         std::to_string(c.worse_metrics) + " worse metrics, " +
         std::to_string(c.newly_failed) + " newly failed; " +
         (any_regression(reg) ? "REGRESSION" : "no regression") + "\n";
}

std::string words(const std::vector<std::string>& parts, const std::string& separator) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : separator) + p;
  return out;
}

std::string render_table(const Regressions& reg) {
  TextTable table({"technique", "variant", "device", "params", "base", "new", "change", "verdict",
                   "metrics"});
  for (const auto& v : reg.verdicts)
    table.add({{v.technique}, {v.variant}, {v.device}, TextTable::packed(param_words(v.params), 24),
               {duration(v.base_ms)}, {duration(v.new_ms)}, {change_text(v, reg.threshold)},
               {verdict_text(v)}, moved_metrics(v)});
  std::string out = table.str();
  for (const auto& r : reg.only_in_base) out += "only in BASE: " + r + "\n";
  for (const auto& r : reg.only_in_new) out += "only in NEW: " + r + "\n";
  for (const auto& w : warnings(reg)) out += "warning: " + w + "\n";
  return out + summary_line(reg);
}

std::string render_md(const Regressions& reg) {
  std::string out =
      "| technique | variant | device | params | base | new | change | verdict | metrics |\n"
      "|---|---|---|---|---:|---:|---:|---|---|\n";
  for (const auto& v : reg.verdicts) {
    const std::vector<std::string> cells{
        v.technique, v.variant, v.device, words(param_words(v.params), " "), duration(v.base_ms),
        duration(v.new_ms), change_text(v, reg.threshold), verdict_text(v),
        words(moved_metrics(v), ", ")};
    out += "|";
    for (const auto& cell : cells) out.append(" ").append(md_cell(cell)).append(" |");
    out += "\n";
  }
  std::string notes;
  const auto bullet = [&notes](const std::string& lead, const std::string& text) {
    notes.append("- ").append(lead).append(md_cell(text)).append("\n");
  };
  for (const auto& r : reg.only_in_base) bullet("only in BASE: ", r);
  for (const auto& r : reg.only_in_new) bullet("only in NEW: ", r);
  for (const auto& w : warnings(reg)) bullet("**warning:** ", w);
  if (!notes.empty()) out.append("\n").append(notes);
  return out + "\n" + summary_line(reg);
}

// A number, or null where it is not finite (JSON has no NaN).
ojson number(double v) { return std::isfinite(v) ? ojson(v) : ojson(nullptr); }

ojson verdict_json(const Verdict& v) {
  ojson j{{"technique", v.technique}, {"variant", v.variant},   {"device", v.device},
          {"params", v.params},       {"base_status", to_string(v.base_status)},
          {"new_status", to_string(v.new_status)}, {"message", v.new_message}};
  if (!v.timing.empty())
    j["timing"] = ojson{{"base_ms", number(*v.base_ms)}, {"new_ms", number(*v.new_ms)},
                        {"change", number(v.change)},    {"min_change", number(v.min_change)},
                        {"noise", number(v.noise)},
                        {"allowance", number(v.allowance)}, {"verdict", v.timing}};
  ojson metrics = ojson::array();
  for (const auto& m : v.metrics)
    metrics.push_back(ojson{{"name", m.name}, {"unit", m.unit}, {"base", number(m.base)},
                            {"new", number(m.now)}, {"verdict", m.verdict}});
  j["metrics"] = metrics;
  j["regression"] = v.regressed();
  return j;
}

}  // namespace

ojson to_json(const Regressions& reg) {
  ojson verdicts = ojson::array();
  for (const auto& v : reg.verdicts) verdicts.push_back(verdict_json(v));
  ojson differences = ojson::array();
  for (const auto& d : reg.context_differences)
    differences.push_back(ojson{{"field", d.field}, {"base", d.base}, {"new", d.now}});
  const auto c = count_verdicts(reg);
  return ojson{{"schema", "aiopt-compare/1"},
               {"threshold", reg.threshold},
               {"context_differences", differences},
               {"contention", {{"base", reg.base_contention}, {"new", reg.new_contention}}},
               {"drift", reg.drift},
               {"warnings", warnings(reg)},
               {"verdicts", verdicts},
               {"only_in_base", reg.only_in_base},
               {"only_in_new", reg.only_in_new},
               {"summary",
                {{"matched", c.matched},
                 {"same", c.same},
                 {"faster", c.faster},
                 {"slower", c.slower},
                 {"unjudged", c.unjudged},
                 {"worse_metrics", c.worse_metrics},
                 {"newly_failed", c.newly_failed}}},
               {"regression", any_regression(reg)}};
}

std::string render_regressions(const Regressions& regressions, Format format) {
  switch (format) {
    case Format::table: return render_table(regressions);
    case Format::md: return render_md(regressions);
    case Format::json: return to_json(regressions).dump(2) + "\n";
    default:
      throw InputError("compare --format " + to_string(format) + ": allowed: table, md, json");
  }
}

}  // namespace aiopt
