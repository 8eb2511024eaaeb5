#pragma once
// Running a plan of cases, shared by bench and sweep: shard, resume, progress, stream JSONL as
// each case finishes, then write every requested rendering. Returns the exit code.
#include <optional>
#include <string>
#include <vector>

#include "cli/run_flags.hpp"
#include "harness/sweep.hpp"

namespace aiopt::cli {

struct PlanEntry {
  const Technique* technique = nullptr;
  PlannedCase planned;
};

// "i/N": run only shard i (0 ≤ i < N) of the plan. Cases of one parameter combination
// (a baseline and its variants) stay in one shard so each shard can compare them.
struct Shard {
  int index = 0;
  int count = 1;
  static Shard parse(const std::string& text);  // InputError on anything but i/N, 0 ≤ i < N
};

struct Execution {
  std::vector<PlanEntry> plan;
  Sampling sampling;
  bool quick = false;
  std::optional<Shard> shard;
  std::string resume_path;  // a .jsonl of an earlier run: its cases are skipped, new ones appended
};

// The plan of `experiments` (validated, expansion order kept) with the sampling and quick mode
// that `flags` and a file's settings choose.
Execution plan_execution(const std::vector<Experiment>& experiments, const RunFlags& flags,
                         const SettingsOverride& settings);

// 0 when every case ran ok or was skipped, 1 when any case failed.
// `argv` is recorded in the report's context.
int execute(const Execution& execution, const RunFlags& flags, const std::vector<std::string>& argv);

// The devices a case runs on when none are named: the CPU, and CUDA when a GPU is present.
std::vector<DeviceKind> default_devices();

}  // namespace aiopt::cli
