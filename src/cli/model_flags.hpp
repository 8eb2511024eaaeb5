#pragma once
// The model flags of `generate` and `train`: --preset and an override of each dimension of
// techniques/model_params.hpp's table, by the names the techniques' parameters take.
#include <array>
#include <cstddef>
#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "nn/config.hpp"
#include "techniques/model_params.hpp"

namespace aiopt::cli {

struct ModelFlags {
  std::optional<std::string> preset;
  std::array<std::optional<std::size_t>, std::size(model_params::dimensions)> overrides;

  std::string preset_name() const { return preset.value_or("small"); }
  // The dimensions given on the command line with their values, in the table's order.
  std::vector<std::pair<model_params::Dimension, std::size_t>> given() const;
  // `config` with every given dimension set; not validated.
  nn::GptConfig applied_to(nn::GptConfig config) const;
  // --heads: a lone GPT-2 checkpoint file's head count.
  std::optional<std::size_t> heads() const;
  // InputError where --preset or a dimension flag contradicts `config`, the dimensions of the
  // checkpoint `path` that `flag` (--checkpoint, --init) names: a checkpoint fixes them.
  void check_agree(const nn::GptConfig& config, const std::string& flag, const std::string& path) const;
};

// "--layers", as the flag of a dimension is spelled.
std::string flag_of(const model_params::Dimension& dimension);

// Adds --preset and an override flag per dimension to `cmd`, all but --vocab where `vocab` is
// false (training on bytes fixes the vocabulary).
void add_model_flags(CLI::App& cmd, ModelFlags& flags, bool vocab);

}  // namespace aiopt::cli
