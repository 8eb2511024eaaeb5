#include "techniques/training_case.hpp"

#include <cstdint>

#include "core/error.hpp"
#include "techniques/model_params.hpp"

namespace aiopt::training_case {

nn::DataSource data_source() {
  nn::DataSource d;
  d.train_bytes = std::size_t{1} << 20;
  d.validation_bytes = std::size_t{1} << 15;
  return d;
}

std::vector<ParamSpec> params(std::int64_t steps, std::int64_t quick_steps, const std::string& steps_help) {
  std::vector<ParamSpec> out = model_params::specs("tiny");
  out.push_back(integer_param("batch", 8, 4, 1, unbounded, "sequences", "sequences per training step"));
  out.push_back(integer_param("seq_len", 128, 64, 1, unbounded, "tokens", "tokens per sequence; at most the model's context"));
  out.push_back(integer_param("steps", steps, quick_steps, 1, unbounded, "steps", steps_help));
  return out;
}

nn::TrainConfig base_config(const std::string& technique, const Case& c) {
  nn::TrainConfig t;
  t.model = model_params::config(c.params);
  if (t.model.vocab < 256)
    throw InputError(technique + ": parameter 'vocab' = " + std::to_string(t.model.vocab) +
                     "; the training text is bytes: allowed 0 (the preset's) or at least 256");
  t.seed = c.seed;
  t.data = data_source();
  const std::int64_t batch = c.params.integer("batch"), seq_len = c.params.integer("seq_len");
  const std::int64_t steps = c.params.integer("steps");
  if (static_cast<std::size_t>(seq_len) > t.model.context)
    throw InputError(technique + ": parameter 'seq_len' = " + std::to_string(seq_len) + "; allowed: 1 to the " +
                     "model's context of " + std::to_string(t.model.context) + " (" + t.model.describe() + ")");
  t.batch = static_cast<std::size_t>(batch);
  t.seq_len = static_cast<std::size_t>(seq_len);
  t.steps = static_cast<std::size_t>(steps);
  t.schedule.total_steps = t.steps;
  return t;
}

}  // namespace aiopt::training_case
