#pragma once
// `aiopt compare BASE NEW`: match the results of two reports by key() and say, for each, whether
// it got faster, slower or stayed the same within the noise, and which metrics got better or
// worse. Any regression makes the CLI exit with 3 (docs/report-format.md "compare").
#include <optional>
#include <string>
#include <vector>

#include "report/result.hpp"

namespace aiopt {

inline constexpr double default_regression_threshold = 0.05;

struct MetricChange {
  std::string name;
  double base = 0, now = 0;
  std::string verdict;  // "same", "better" or "worse", by the metric's direction
};

struct Verdict {
  std::string technique, variant, device;
  ojson params = ojson::object();
  Status base_status = Status::ok, new_status = Status::ok;
  std::string new_message;         // why NEW failed or was skipped
  std::optional<double> base_ms;   // medians in milliseconds, when both runs are ok and timed
  std::optional<double> new_ms;
  double change = 0;  // (new - base) / base of the medians
  double noise = 0;   // the larger IQR / median of the two sample sets
  std::string timing; // "SAME", "FASTER", "SLOWER"; "" when not both ok and timed
  std::vector<MetricChange> metrics;  // metrics present and finite in both
  // SLOWER, a worse metric, or ok in BASE but failed in NEW.
  bool regressed() const;
};

struct Regressions {
  double threshold = default_regression_threshold;
  std::vector<Verdict> verdicts;        // in NEW's order
  std::vector<std::string> only_in_base;  // "technique variant device k=v ..."
  std::vector<std::string> only_in_new;
};

// Timing is SAME when |new - base| / base <= max(threshold, noise), else FASTER or SLOWER.
// A metric is "same" when |new - base| / |base| <= threshold (for base 0: when new is 0 too),
// else better or worse by its direction. Within a report a later result with the same key wins.
Regressions compare_reports(const Report& base, const Report& now,
                            double threshold = default_regression_threshold);

bool any_regression(const Regressions& regressions);

// The table of verdicts, the unmatched results, and a summary line.
std::string render_regressions(const Regressions& regressions);

}  // namespace aiopt
