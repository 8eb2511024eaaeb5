#pragma once
// The flags that bench and sweep share: dry run, sampling, threads, seed, outputs, progress,
// verbosity.
#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include "harness/config.hpp"
#include "harness/progress.hpp"
#include "harness/sample_plan.hpp"

namespace aiopt::cli {

struct RunFlags {
  bool dry_run = false;  // print the planned cases, and stop
  bool quick = false;
  std::optional<int> warmup;
  std::optional<int> min_samples;
  std::optional<double> min_time_s;
  std::optional<double> max_noise;
  std::optional<double> timeout_s;
  bool flush_cache = false;
  std::optional<double> max_case_s;
  bool force = false;
  std::optional<int> threads;
  std::optional<std::uint64_t> seed;
  std::string format;  // stdout format; empty: table
  std::vector<std::string> outputs;
  std::string progress = "auto";
  bool verbose = false;
  bool quiet = false;

  void add_to(CLI::App& cmd);

  // Flags win over the file's settings, which win over the defaults (quick or not).
  bool effective_quick(const SettingsOverride& file) const;
  Sampling sampling(const SettingsOverride& file) const;
  std::uint64_t effective_seed(const SettingsOverride& file) const;
  ProgressMode progress_mode() const;
  void apply_verbosity() const;
};

}  // namespace aiopt::cli
