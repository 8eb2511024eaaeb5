#pragma once
// Stopping a run cleanly on SIGINT or SIGTERM. While a StopOnSignals lives, the first signal only
// asks the run to stop: the case in progress ends at its next sample (or before it starts
// sampling) and is recorded as `interrupted`, no further case starts, and the caller writes every
// report with what finished. A second signal ends the process at once, as if no handler were set.
#include <string>

namespace aiopt {

// Installs the handlers; the destructor puts back the ones it replaced and clears the request.
class StopOnSignals {
 public:
  StopOnSignals();
  ~StopOnSignals();
  StopOnSignals(const StopOnSignals&) = delete;
  StopOnSignals& operator=(const StopOnSignals&) = delete;
};

bool stop_requested();
int stop_signal();        // the signal that asked (SIGINT, SIGTERM), 0 when none did
std::string stop_signal_name();  // "SIGINT", "SIGTERM", or "a stop request" when no signal asked
void request_stop(int signal);  // what the handler does; tests call it directly

}  // namespace aiopt
