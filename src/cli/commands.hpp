#pragma once
// Each subcommand adds itself to the app and, when chosen, stores its exit code in `exit_code`.
#include <CLI/CLI.hpp>

namespace aiopt::cli {

void add_list(CLI::App& app, int& exit_code);
void add_info(CLI::App& app, int& exit_code);
void add_bench(CLI::App& app, int& exit_code);
void add_sweep(CLI::App& app, int& exit_code);
void add_report(CLI::App& app, int& exit_code);
void add_compare(CLI::App& app, int& exit_code);
void add_generate(CLI::App& app, int& exit_code);
void add_train(CLI::App& app, int& exit_code);

}  // namespace aiopt::cli
