#include "harness/interrupt.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>

namespace aiopt {

namespace {

// Lock-free atomics only: they are touched from the signal handler.
std::atomic<bool> requested{false};
std::atomic<int> requesting_signal{0};
static_assert(std::atomic<bool>::is_always_lock_free && std::atomic<int>::is_always_lock_free);

struct sigaction previous_int{}, previous_term{};

void on_signal(int signal) {
  if (requested.load()) {
    // The second signal: the default action, now (for SIGINT and SIGTERM, the process ends).
    ::signal(signal, SIG_DFL);
    ::raise(signal);
    return;
  }
  requesting_signal.store(signal);
  requested.store(true);
  constexpr char note[] =
      "\naiopt: stopping after the case in progress, then writing the reports (signal again to abort)\n";
  [[maybe_unused]] const auto written = ::write(STDERR_FILENO, note, sizeof note - 1);
}

}  // namespace

StopOnSignals::StopOnSignals() {
  requested.store(false);
  requesting_signal.store(0);
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, &previous_int);
  sigaction(SIGTERM, &action, &previous_term);
}

StopOnSignals::~StopOnSignals() {
  sigaction(SIGINT, &previous_int, nullptr);
  sigaction(SIGTERM, &previous_term, nullptr);
  requested.store(false);
  requesting_signal.store(0);
}

bool stop_requested() { return requested.load(); }
int stop_signal() { return requesting_signal.load(); }

std::string stop_signal_name() {
  switch (stop_signal()) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    default: return "a stop request";
  }
}

void request_stop(int signal) {
  requesting_signal.store(signal);
  requested.store(true);
}

}  // namespace aiopt
