#pragma once
// `aiopt compare BASE NEW`: match the results of two reports by key() and say, for each, whether
// it got faster, slower or stayed the same within the noise, and which metrics got better or
// worse. Any regression makes the CLI exit with 3 (docs/report-format.md "compare").
#include <optional>
#include <string>
#include <vector>

#include "report/context_difference.hpp"
#include "report/printers.hpp"
#include "report/result.hpp"

namespace aiopt {

inline constexpr double default_regression_threshold = 0.05;

struct MetricChange {
  std::string name;
  std::string unit;
  double base = 0, now = 0;
  // "same", "better" or "worse" by the metric's direction; "unjudged" for a metric computed from
  // measured times (Metric::from_time), whose speed the case's timing median judges instead.
  std::string verdict;
};

struct Verdict : CaseIdentity {
  Status base_status = Status::ok, new_status = Status::ok;
  std::string new_message;         // why NEW failed or was skipped
  std::optional<double> base_ms;   // medians in milliseconds, when both runs are ok and timed
  std::optional<double> new_ms;
  double change = 0;      // (new - base) / base of the medians
  double min_change = 0;  // the same of the fastest samples
  double noise = 0;       // the larger IQR / median of the two sample sets
  double allowance = 0;   // max(threshold, noise, contention, drift)
  // "SLOWER" when both changes exceed the allowance, "FASTER" when both are below minus it,
  // else "SAME"; "UNJUDGED" when either side's noise is unknown (Timing::noise_known); "" when
  // not both ok and timed.
  std::string timing;
  // Metrics present and finite in both and compared (Metric::compared), in NEW's order.
  std::vector<MetricChange> metrics;
  // SLOWER, a worse metric, or ok in BASE but failed in NEW.
  bool regressed() const;
};

struct Regressions {
  double threshold = default_regression_threshold;
  std::vector<ContextDifference> context_differences;
  // Each report's machine contention (context_difference.hpp); the larger widens every allowance.
  double base_contention = 0, new_contention = 0;
  // How far the machine's own speed moved across both reports (drift.hpp); widens every allowance.
  double drift = 0;
  std::vector<Verdict> verdicts;          // in NEW's order
  std::vector<std::string> only_in_base;  // "technique variant device k=v ..."
  std::vector<std::string> only_in_new;
};

// Timing is SLOWER when the median and the fastest sample both got slower by more than the
// allowance = max(threshold, noise, contention of either report, drift), FASTER when both got faster by
// more, else SAME. A metric is "same" when |new - base| / |base| <= threshold (for base 0: when
// new is 0 too), else better or worse by its direction; a metric from time is "unjudged". Within
// a report a later result with the same key wins. InputError when no result of NEW matches one
// of BASE: a comparison of nothing must not pass.
Regressions compare_reports(const Report& base, const Report& now,
                            double threshold = default_regression_threshold);

bool any_regression(const Regressions& regressions);

struct VerdictCounts {
  std::size_t matched = 0, same = 0, faster = 0, slower = 0, unjudged = 0;  // the last four: timing verdicts
  std::size_t worse_metrics = 0, newly_failed = 0;
};
VerdictCounts count_verdicts(const Regressions& regressions);

// table (the default): the verdicts, warnings about the contexts, the unmatched results and a
// summary line. md: the same as Markdown. json: the shape of docs/report-format.md "compare".
// InputError for the other formats.
std::string render_regressions(const Regressions& regressions, Format format = Format::table);
ojson to_json(const Regressions& regressions);

}  // namespace aiopt
