#pragma once
// A child process that keeps one core busy for as long as the object lives: "another process"
// for the busy-machine measurement. The child does nothing but spin; the destructor kills it.
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdexcept>

namespace aiopt::test {

class SpinningProcess {
 public:
  SpinningProcess() : pid_(fork()) {
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0)
      for (;;) {
      }
  }
  ~SpinningProcess() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  SpinningProcess(const SpinningProcess&) = delete;
  SpinningProcess& operator=(const SpinningProcess&) = delete;

 private:
  pid_t pid_;
};

}  // namespace aiopt::test
