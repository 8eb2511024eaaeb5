#pragma once
// Where `aiopt sweep NAME` finds its experiment file: NAME as a path, else, for a bare name such
// as `ci` or `ci.yaml`, the experiment files that ship with aiopt.
#include <string>
#include <vector>

namespace aiopt::cli {

// The folders searched for a bare name, in order: $AIOPT_CONFIG_DIR when set; the installed
// share/aiopt/configs beside the binary (<prefix>/bin/aiopt → <prefix>/share/aiopt/configs);
// the source tree's configs/ the binary was built from.
std::vector<std::string> experiment_folders();

// The names (file stems) of the experiment files in experiment_folders(), sorted.
std::vector<std::string> shipped_experiments();

// `name` when it names a file; else the first of `name`, `name`.yaml, `name`.yml, `name`.json in
// experiment_folders() when `name` holds no '/'. Throws InputError naming the folders searched and
// the experiment files found there.
std::string find_experiment_file(const std::string& name);

}  // namespace aiopt::cli
