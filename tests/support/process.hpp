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

// AIOPT_BINARY started with `args` and left running, so that a test can signal it. stdout and
// stderr go to files in the child's own temporary folder; wait() collects them. The destructor
// kills a child that was not waited for.
class Child {
 public:
  explicit Child(const std::vector<std::string>& args);
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  void signal(int signal);
  std::string stderr_path() const { return folder_ + "/err"; }  // written as the child runs
  // exit_code is 128 + the signal when the child was killed by one.
  ProcessResult wait();

 private:
  std::string folder_;
  int pid_ = -1;
};

}  // namespace aiopt::test
