#include "cli/experiment_path.hpp"

#include <cstdlib>
#include <filesystem>
#include <set>
#include <system_error>

#include "core/error.hpp"

namespace aiopt::cli {

namespace fs = std::filesystem;

std::vector<std::string> experiment_folders() {
  std::vector<std::string> folders;
  if (const char* dir = std::getenv("AIOPT_CONFIG_DIR"); dir && *dir) folders.emplace_back(dir);
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) folders.push_back((exe.parent_path().parent_path() / "share" / "aiopt" / "configs").string());
  folders.emplace_back(AIOPT_SOURCE_CONFIGS);
  return folders;
}

std::vector<std::string> shipped_experiments() {
  std::set<std::string> names;
  std::error_code ec;
  for (const auto& folder : experiment_folders())
    for (const auto& entry : fs::directory_iterator(folder, ec))
      if (entry.is_regular_file(ec)) names.insert(entry.path().stem().string());
  return {names.begin(), names.end()};
}

std::string find_experiment_file(const std::string& name) {
  std::error_code ec;
  if (fs::is_regular_file(name, ec)) return name;
  if (fs::exists(name, ec)) throw InputError("experiment file '" + name + "' is not a regular file");
  std::string message = "experiment file '" + name + "' not found";
  if (name.find('/') != std::string::npos) throw InputError(message);
  const std::vector<std::string> folders = experiment_folders();
  for (const auto& folder : folders)
    for (const char* ext : {"", ".yaml", ".yml", ".json"}) {
      const fs::path candidate = fs::path(folder) / (name + ext);
      if (fs::is_regular_file(candidate, ec)) return candidate.string();
    }
  message += "; looked in the current folder and in";
  for (const auto& folder : folders) message += " " + folder;
  const std::vector<std::string> shipped = shipped_experiments();
  if (!shipped.empty()) {
    message += "; experiment files there:";
    for (const auto& s : shipped) message += " " + s;
  }
  throw InputError(message);
}

}  // namespace aiopt::cli
