#pragma once
// The aiopt command line: builds the CLI11 app with every subcommand and runs it.

namespace aiopt::cli {

// Parses argv, runs the chosen subcommand, returns the process exit code:
// 0 ok, 1 some case failed, 2 bad usage or bad input, 3 regression (compare).
int run(int argc, char** argv);

}  // namespace aiopt::cli
