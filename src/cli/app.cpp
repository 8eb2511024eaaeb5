#include "cli/app.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>

#include "cli/commands.hpp"
#include "cli/parse_error.hpp"
#include "core/build_info.hpp"
#include "core/git_commit.hpp"
#include "core/error.hpp"
#include "core/spelling.hpp"

namespace aiopt::cli {

namespace {

// Logs go to stderr so that stdout carries only the chosen output format.
void setup_logging() {
  auto logger = spdlog::stderr_color_mt("aiopt");
  logger->set_pattern("aiopt: %^%l%$: %v");
  spdlog::set_default_logger(logger);
}

std::vector<std::string> arguments;

}  // namespace

const std::vector<std::string>& command_line() { return arguments; }

int run(int argc, char** argv) {
  arguments.assign(argv, argv + argc);
  setup_logging();
  // Named, so that usage lines say "aiopt" rather than the path the binary was started by.
  CLI::App app{"aiopt: measure what AI optimization techniques buy and what they cost, "
               "on this machine's CPU and CUDA GPUs.",
               "aiopt"};
  app.set_version_flag("--version", std::string("aiopt ") + build::version + " (" +
                                        build::git_commit + ", " + build::build_type + ")");
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 ok, 1 some case failed, 2 bad usage or input, 3 regression (compare).\n"
      "Run 'aiopt list' for the techniques, 'aiopt SUBCOMMAND --help' for each subcommand.");
  int exit_code = 0;
  add_list(app, exit_code);
  add_info(app, exit_code);
  add_bench(app, exit_code);
  add_sweep(app, exit_code);
  add_report(app, exit_code);
  add_compare(app, exit_code);
  add_generate(app, exit_code);
  add_train(app, exit_code);
  try {
    if (argc > 1 && argv[1][0] != '-') {
      // A misspelt subcommand: name it and suggest the one meant, rather than CLI11's
      // "A subcommand is required".
      std::vector<std::string> names;
      for (const auto* sub : app.get_subcommands({})) names.push_back(sub->get_name());
      if (std::find(names.begin(), names.end(), argv[1]) == names.end())
        throw InputError("unknown subcommand '" + std::string(argv[1]) + "'" + did_you_mean(argv[1], names) +
                         " (subcommands: " + join_names(names) + ")");
    }
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version end the parse with exit code 0, and CLI11 prints them.
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "aiopt: error: %s\n", parse_error_message(app, e).c_str());
    return 2;
  } catch (const InputError& e) {
    std::fprintf(stderr, "aiopt: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "aiopt: internal error: %s\n", e.what());
    return 1;
  }
  return exit_code;
}

}  // namespace aiopt::cli
