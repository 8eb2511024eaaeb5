#include "cli/model_flags.hpp"

#include <string_view>

#include "cli/number_checks.hpp"
#include "core/error.hpp"

namespace aiopt::cli {

std::vector<std::pair<model_params::Dimension, std::size_t>> ModelFlags::given() const {
  std::vector<std::pair<model_params::Dimension, std::size_t>> out;
  for (std::size_t i = 0; i < overrides.size(); ++i)
    if (overrides[i]) out.emplace_back(model_params::dimensions[i], *overrides[i]);
  return out;
}

nn::GptConfig ModelFlags::applied_to(nn::GptConfig config) const {
  for (const auto& [dimension, value] : given()) config.*dimension.field = value;
  return config;
}

std::optional<std::size_t> ModelFlags::heads() const {
  for (const auto& [dimension, value] : given())
    if (std::string_view(dimension.name) == "heads") return value;
  return std::nullopt;
}

void ModelFlags::check_agree(const nn::GptConfig& config, const std::string& flag, const std::string& path) const {
  if (preset) {
    const nn::GptConfig p = nn::preset(*preset);
    if (p.describe() != config.describe())
      throw InputError("--preset " + *preset + " (" + p.describe() + ") conflicts with " + flag + " " + path + " (" +
                       config.describe() + "); give one or the other");
  }
  for (const auto& [dimension, value] : given())
    if (config.*dimension.field != value)
      throw InputError(flag_of(dimension) + " " + std::to_string(value) + " conflicts with " + flag + " " + path +
                       " (" + config.describe() + "); a checkpoint fixes the model's dimensions");
}

std::string flag_of(const model_params::Dimension& dimension) { return "--" + std::string(dimension.name); }

void add_model_flags(CLI::App& cmd, ModelFlags& flags, bool vocab) {
  std::string names;
  for (const auto& n : nn::preset_names()) names += (names.empty() ? "" : ", ") + n;
  cmd.add_option("--preset", flags.preset, "Model preset: " + names + " (default small)");
  for (std::size_t i = 0; i < flags.overrides.size(); ++i) {
    const model_params::Dimension& d = model_params::dimensions[i];
    if (!vocab && std::string_view(d.name) == "vocab") continue;
    cmd.add_option(flag_of(d), flags.overrides[i], "Override the preset's " + std::string(d.name) + ": " + d.help)
        ->check(positive_number());
  }
}

}  // namespace aiopt::cli
