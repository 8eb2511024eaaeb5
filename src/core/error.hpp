#pragma once
// Error kinds that decide the process exit code (see README "Exit codes").
#include <stdexcept>
#include <string>

namespace aiopt {

// Bad usage or bad input (config, CLI, checkpoint, data file): exit code 2.
// The message names the file, the key, the bad value and what is allowed.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A variant's result disagrees with its baseline beyond the stated tolerance.
// The harness records the case as failed with this message.
class CheckFailed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A variant that does not run with a case's parameters (a causal linformer, fp16 on the CPU).
// The harness records the case as skipped with this message, so a grid over the parameters
// runs every case that makes sense.
class NotApplicable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The device a case asks for is not present (no CUDA build, no GPU).
// The harness records the case as skipped with this message.
class DeviceUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The user asked the run to stop (SIGINT, SIGTERM: harness/interrupt.hpp) while a case was in
// progress. The harness records the case as interrupted with this message.
class Interrupted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace aiopt
