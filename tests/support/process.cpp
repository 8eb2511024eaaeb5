#include "support/process.hpp"

#include <sys/wait.h>

#include <cstdlib>

#include "support/files.hpp"

namespace aiopt::test {

namespace {

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char ch : s) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

}  // namespace

ProcessResult run_aiopt(const std::vector<std::string>& args) { return run_aiopt(args, {}); }

ProcessResult run_aiopt(const std::vector<std::string>& args, const std::vector<std::string>& environment) {
  TempDir tmp;
  // env takes its options (-u NAME) before the assignments.
  std::string cmd = "env";
  for (const auto& e : environment)
    if (e.starts_with('-')) cmd += " -u " + shell_quote(e.substr(1));
  for (const auto& e : environment)
    if (!e.starts_with('-')) cmd += " " + shell_quote(e);
  cmd += " " + shell_quote(AIOPT_BINARY);
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " >" + shell_quote(tmp.file("out")) + " 2>" + shell_quote(tmp.file("err")) + " </dev/null";
  const int status = std::system(cmd.c_str());
  ProcessResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_text(tmp.file("out"));
  r.err = read_text(tmp.file("err"));
  return r;
}

}  // namespace aiopt::test
