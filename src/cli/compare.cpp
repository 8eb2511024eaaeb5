// aiopt compare: regressions between two reports; exit 3 when anything got worse.
#include <spdlog/spdlog.h>

#include <iostream>

#include "cli/commands.hpp"
#include "core/error.hpp"
#include "report/regression.hpp"
#include "report/report_json.hpp"

namespace aiopt::cli {

void add_compare(CLI::App& app, int& exit_code) {
  auto base = std::make_shared<std::string>();
  auto now = std::make_shared<std::string>();
  auto threshold_pct = std::make_shared<double>(default_regression_threshold * 100);
  auto format = std::make_shared<std::string>("table");
  auto* cmd = app.add_subcommand(
      "compare", "Compare two reports case by case: SAME within the noise or threshold, else FASTER/SLOWER");
  cmd->add_option("base", *base, "The reference report (.json or .jsonl)")->required()->check(CLI::ExistingFile);
  cmd->add_option("new", *now, "The report to judge (.json or .jsonl)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--threshold", *threshold_pct,
                  "Changes up to this many percent (or the measured noise, a busy machine's contention or the "
                  "machine's measured drift, if larger) are SAME (default 5)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-f,--format", *format, "Format on stdout: table, md, json (default table)")
      ->check(CLI::IsMember({"table", "md", "json"}));
  cmd->footer(
      "Exit 3 when a case got SLOWER, a metric got worse, or a case that was ok failed; exit 2 when "
      "no case of NEW matches one of BASE.");
  cmd->callback([base, now, threshold_pct, format, &exit_code] {
    std::vector<std::string> warnings;
    const Report a = load_report(*base, warnings);
    const Report b = load_report(*now, warnings);
    for (const auto& w : warnings) spdlog::warn("{}", w);
    Regressions r;
    try {
      r = compare_reports(a, b, *threshold_pct / 100.0);
    } catch (const InputError& e) {
      throw InputError("compare " + *base + " " + *now + ": " + e.what());
    }
    std::cout << render_regressions(r, format_from_name(*format));
    exit_code = any_regression(r) ? 3 : 0;
  });
}

}  // namespace aiopt::cli
