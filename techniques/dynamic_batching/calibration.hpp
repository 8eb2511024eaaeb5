#pragma once
// Measured engine steps for the step-cost model (step_cost.hpp): decode steps of 1 to max_batch
// sequences at short, middling and long contexts, and prompt chunks of a few sizes up to
// max_step_tokens, each timed `repeats` times on the model, as the real executor runs them.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "nn/gpt.hpp"
#include "techniques/dynamic_batching/step_cost.hpp"

namespace aiopt::dynamic_batching {

struct MeasuredSteps {
  std::vector<StepShape> shapes;
  std::vector<double> ms;
};

// max_context: the most positions a sequence reaches (at most the model's context).
MeasuredSteps measure_steps(nn::Gpt& model, std::size_t max_batch, std::size_t max_step_tokens,
                            std::size_t max_context, std::size_t repeats, std::uint64_t seed);

}  // namespace aiopt::dynamic_batching
