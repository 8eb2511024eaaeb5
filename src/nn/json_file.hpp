#pragma once
// A JSON file read whole, its parse errors given as file:line:column.
#include <filesystem>

#include <nlohmann/json.hpp>

namespace aiopt::nn {

// InputError "PATH: cannot open ..." or "PATH:LINE:COLUMN: not JSON: ...".
nlohmann::json read_json_file(const std::filesystem::path& path);

}  // namespace aiopt::nn
