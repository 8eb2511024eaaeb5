#include "cli/parse_error.hpp"

#include <vector>

#include "core/spelling.hpp"

namespace aiopt::cli {

namespace {

// The subcommand that was parsing: the last one chosen, descending from the app.
const CLI::App& parsing(const CLI::App& app) {
  const CLI::App* cmd = &app;
  while (!cmd->get_subcommands().empty()) cmd = cmd->get_subcommands().back();
  return *cmd;
}

// "--technique", ...: the long names of `cmd`'s options, and with `short_names` also "-t", ...
std::vector<std::string> option_names(const CLI::App& cmd, bool short_names) {
  std::vector<std::string> names;
  for (const CLI::Option* option : cmd.get_options()) {
    for (const auto& name : option->get_lnames()) names.push_back("--" + name);
    if (short_names)
      for (const auto& name : option->get_snames()) names.push_back("-" + name);
  }
  return names;
}

// What was wrong with the arguments nobody expected: an unknown option (a value right after it
// is taken as its own, not reported again), or a stray argument.
std::string extras_message(const CLI::App& cmd, const std::vector<std::string>& extras) {
  // A subcommand spelt as an option ("aiopt --bench") is meant as the subcommand.
  auto names = option_names(cmd, true);
  for (const CLI::App* sub : cmd.get_subcommands({})) names.push_back(sub->get_name());
  std::vector<std::string> problems;
  bool after_option = false;
  for (const auto& arg : extras) {
    if (arg.size() > 1 && arg[0] == '-') {
      const std::string name = arg.substr(0, arg.find('='));
      const std::string hint = did_you_mean(name, names);
      problems.push_back("unknown option " + in_quotes(name) +
                         (hint.empty() ? "; options: " + join_names(option_names(cmd, false)) : hint));
      after_option = true;
    } else if (!after_option) {
      problems.push_back("unexpected argument " + in_quotes(arg));
    } else {
      after_option = false;
    }
  }
  std::string message;
  for (const auto& p : problems) message += (message.empty() ? "" : "; ") + p;
  return message;
}

}  // namespace

std::string parse_error_message(const CLI::App& app, const CLI::ParseError& error) {
  const CLI::App& cmd = parsing(app);
  const bool sub = &cmd != &app;
  const std::string where = sub ? cmd.get_name() + ": " : "";
  const std::string help = "see '" + app.get_name() + (sub ? " " + cmd.get_name() : "") + " --help'";
  // Arguments nobody expected say more than what CLI11 checked next ("A subcommand is
  // required" after "aiopt --bench"), so they alone are reported.
  const auto extras = cmd.remaining(false);
  const std::string what = extras.empty() ? std::string(error.what()) : extras_message(cmd, extras);
  return where + what + " (" + help + ")";
}

}  // namespace aiopt::cli
