#pragma once
// Experiment files: YAML or JSON documents that name techniques, their variants and devices,
// and parameter grids, plus optional run settings. Loading validates everything against the
// techniques, so a sweep never starts on a file with a typo in it (docs/configs.md).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "harness/sweep.hpp"
#include "harness/technique.hpp"

namespace aiopt {

struct SettingsOverride {  // optional top-level `settings:` of a file
  std::optional<std::int64_t> warmup, min_samples;
  std::optional<double> min_time_s, max_noise, timeout_s;
  std::optional<std::uint64_t> seed;
  std::optional<bool> quick;
};

struct ExperimentFile {
  std::string path;
  std::vector<Experiment> experiments;
  SettingsOverride settings;
};

// Load and fully validate a YAML or JSON file against the techniques (InputError on any problem).
// The format follows the extension: .json is checked as strict JSON first; .yaml and .yml are YAML.
ExperimentFile load_experiment_file(const std::string& path,
                                    const std::vector<std::unique_ptr<Technique>>& techniques);

// The same, for the text of a file; `path` names it in messages and its extension picks the format.
ExperimentFile parse_experiment_file(std::string_view text, const std::string& path,
                                     const std::vector<std::unique_ptr<Technique>>& techniques);

}  // namespace aiopt
