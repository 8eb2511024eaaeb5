#include "support/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

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

Child::Child(const std::vector<std::string>& args) {
  char pattern[] = "/tmp/aiopt-child-XXXXXX";
  if (!::mkdtemp(pattern)) throw std::runtime_error("cannot make a temporary folder for a child process");
  folder_ = pattern;
  const std::string out = folder_ + "/out", err = folder_ + "/err";
  std::vector<std::string> argv_text{AIOPT_BINARY};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    const int in = ::open("/dev/null", O_RDONLY);
    const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || o < 0 || e < 0) ::_exit(127);
    ::dup2(in, STDIN_FILENO);
    ::dup2(o, STDOUT_FILENO);
    ::dup2(e, STDERR_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
}

Child::~Child() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  std::error_code ignored;
  std::filesystem::remove_all(folder_, ignored);
}

void Child::signal(int signal) {
  if (pid_ > 0) ::kill(pid_, signal);
}

ProcessResult Child::wait() {
  ProcessResult r;
  int status = 0;
  if (pid_ > 0 && ::waitpid(pid_, &status, 0) == pid_) {
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    pid_ = -1;
  }
  r.out = read_text(folder_ + "/out");
  r.err = read_text(folder_ + "/err");
  return r;
}

}  // namespace aiopt::test
