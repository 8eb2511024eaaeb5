#pragma once
// What a run measures beside its timing: named figures with a unit and a direction, and curves.
// Techniques return them (harness/technique.hpp); reports keep, compare and print them.
#include <string>
#include <utility>
#include <vector>

namespace aiopt {

enum class Better { higher, lower };
std::string to_string(Better better);

// How a figure moved from a base value to a new one: the one rule that both the gains-versus-costs
// summary (report/comparison.hpp) and `aiopt compare` (report/regression.hpp) judge by, each
// writing the outcome in its own words of the report schema.
enum class Movement { same, better, worse };
// `same` when |now - base| / |base| <= within (for a base of 0: when now is 0 too), else better
// or worse by `better`.
Movement movement(double base, double now, Better better, double within);

struct Metric {
  std::string name;  // snake_case: "bytes_moved", "max_abs_error"
  double value = 0.0;
  std::string unit;  // "B", "GB/s", "tok/s", "", ...
  Better better = Better::higher;
  // false for a figure of the run's own efficiency (achieved GB/s, fraction of a peak) rather
  // than an outcome: variants moving different bytes are not better or worse for it, so
  // comparisons with the baseline leave it out. Reports keep it.
  bool compared = true;
  // true for a figure computed from measured times (ms per token, tokens per second, a length
  // found by timing): it moves with the machine's noise as a timing does, but carries no spread
  // of its own to measure that noise by, so `aiopt compare` shows it without judging it and
  // leaves speed to the case's timing median, which has its samples (docs/report-format.md).
  bool from_time = false;
};

// A metric computed from a measured time (Metric::from_time).
inline Metric time_metric(std::string name, double value, std::string unit, Better better) {
  return {std::move(name), value, std::move(unit), better, true, true};
}

// A curve a run records beside its metrics (a loss curve, the LR of a schedule): y at each x.
// Reports keep it for plotting; comparisons and the summary leave it out.
struct Series {
  std::string name;    // snake_case: "train_loss"
  std::string x_unit;  // "step"
  std::string unit;    // y's unit: "nats", "", ...
  std::vector<double> x, y;
};

}  // namespace aiopt
