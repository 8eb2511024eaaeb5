#pragma once
#include <string>
#include <vector>
// The aiopt command line: builds the CLI11 app with every subcommand and runs it.

namespace aiopt::cli {

// Parses argv, runs the chosen subcommand, returns the process exit code:
// 0 ok, 1 some case failed, 2 bad usage or bad input, 3 regression (compare).
int run(int argc, char** argv);

// The process's arguments, as recorded in reports.
const std::vector<std::string>& command_line();

}  // namespace aiopt::cli
