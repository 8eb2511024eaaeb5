#pragma once
// Running the built aiopt binary from a test.
#include <string>
#include <vector>

namespace aiopt::test {

struct ProcessResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs AIOPT_BINARY with `args` (each passed as one argument, no shell expansion), stdin empty.
ProcessResult run_aiopt(const std::vector<std::string>& args);
// The same with that process's environment changed: "NAME=value" sets NAME, "-NAME" unsets it.
ProcessResult run_aiopt(const std::vector<std::string>& args, const std::vector<std::string>& environment);

}  // namespace aiopt::test
