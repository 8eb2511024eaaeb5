// aiopt report: merge saved reports (shards, resumed runs) and render them again.
#include <spdlog/spdlog.h>

#include "cli/commands.hpp"
#include "cli/output.hpp"
#include "report/report_json.hpp"

namespace aiopt::cli {

void add_report(CLI::App& app, int& exit_code) {
  auto files = std::make_shared<std::vector<std::string>>();
  auto format = std::make_shared<std::string>();
  auto outputs = std::make_shared<std::vector<std::string>>();
  auto* cmd = app.add_subcommand("report", "Merge saved reports (.json or .jsonl) and render them");
  cmd->add_option("files", *files, "Reports to merge; a later result of the same case replaces an earlier one")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("-f,--format", *format, "Format on stdout: table, md, csv, json, jsonl, gbench (default table)")
      ->check(CLI::IsMember(format_names()));
  cmd->add_option("-o,--output", *outputs, "Also write to FILE; the format follows the extension; may repeat");
  cmd->callback([files, format, outputs, &exit_code] {
    check_outputs(*outputs);
    std::vector<Report> reports;
    for (const auto& f : *files) {
      std::vector<std::string> warnings;
      reports.push_back(load_report(f, warnings));
      for (const auto& w : warnings) spdlog::warn("{}", w);
    }
    emit(merge_reports(reports), *format, *outputs);
    exit_code = 0;
  });
}

}  // namespace aiopt::cli
