#pragma once
// The technique contract (docs/adding-a-technique.md). A technique declares who it is,
// its parameters and variants, and prepares runs; the harness times runs, scopes their memory,
// and turns declared work into achieved rates. A technique never prints and never times itself.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "harness/param.hpp"
#include "report/metric.hpp"

namespace aiopt {

struct Variant {
  std::string name;
  std::string summary;
  bool baseline = false;
  std::vector<DeviceKind> devices;
  bool runs_on(DeviceKind kind) const;
};

// Work done by one step of a run, when the technique can count it. The harness divides by the
// median step time to report achieved GB/s and FLOP/s and their fraction of measured peaks, and
// records which memory level the working set fits (harness/memory_level.hpp).
struct Work {
  std::optional<double> bytes;  // bytes read and written by one step
  std::optional<double> flops;  // floating-point operations in one step
  // Bytes of the distinct data one step touches (weights, inputs, outputs, intermediates), each
  // counted once however often it is read: what has to stay in a cache for the next step to run
  // from it.
  std::optional<double> working_set_bytes;
};

// One case of a technique: its variant and parameter values. The device is given separately.
struct Case {
  std::string technique;
  std::string variant;
  Params params;
  std::uint64_t seed = 0;
};

// A prepared case on a device. Built by Technique::prepare (inputs allocated, weights made);
// the harness then calls step() repeatedly and times each call.
class Run {
 public:
  virtual ~Run() = default;

  // The measured region: one repetition of the work. On CUDA it enqueues on stream() and
  // need not synchronize; the harness times it with events on that stream.
  virtual void step() = 0;

  // The CUDA stream step() enqueues on (a cudaStream_t); nullptr means the default stream.
  virtual void* stream() { return nullptr; }

  // Counted work of one step, for roofline figures.
  virtual Work work() const { return {}; }

  // After sampling: check the result against the baseline computation and return metrics.
  // Throws CheckFailed when the result is wrong beyond the stated tolerance.
  virtual std::vector<Metric> finish() = 0;
  // Curves recorded by the run (after finish()), in the order they should be shown.
  virtual std::vector<Series> series() const { return {}; }
};

class Technique {
 public:
  virtual ~Technique() = default;
  virtual std::string name() const = 0;       // the CLI name, snake_case
  virtual std::string summary() const = 0;    // one line: what it does
  virtual std::string trade_off() const = 0;  // one line: what it trades for what
  virtual std::vector<ParamSpec> params() const = 0;
  virtual std::vector<Variant> variants() const = 0;  // exactly one baseline (harness/variant_table.hpp)

  // Checks `c` before anything runs: its variant is declared and every parameter it carries has
  // its spec's type and lies within its bounds or choices (InputError naming the closest name or
  // what is allowed), then the technique's own check().
  void validate(const Case& c, DeviceKind device) const;

  // Prepares `c` on `device`: validate(), InputError when the variant does not run on the
  // device, then start(). Throws DeviceUnavailable when the device is absent, anything else as
  // a failure of the case.
  std::unique_ptr<Run> prepare(const Case& c, const Device& device) const;

 protected:
  // What the declarations cannot say, for a case whose variant and values validate() accepted:
  // throws InputError for parameter combinations that make no sense (the command exits 2 before
  // the first case), NotApplicable for a variant that does not run with them on `device` (the
  // case is skipped with the reason).
  virtual void check(const Case& c, DeviceKind device) const;

  // Builds the run of a validated case (inputs allocated, weights made).
  virtual std::unique_ptr<Run> start(const Case& c, const Device& device) const = 0;

 public:
  // Conveniences over the declarations above.
  std::optional<Variant> find_variant(const std::string& name) const;
  std::string baseline() const;  // the baseline variant's name
};

}  // namespace aiopt
