#pragma once
// What the training techniques share about a case: the corpus they train on and the part of the
// training configuration every one of them reads from its parameters.
#include <cstdint>
#include <string>
#include <vector>

#include "harness/technique.hpp"
#include "nn/trainer.hpp"

namespace aiopt::training_case {

// 1 MiB of the synthetic language to train on and 32 KiB to validate on: enough windows that a
// quick budget never repeats one, small enough to generate in milliseconds.
nn::DataSource data_source();

// The parameters base_config() reads: the model's (techniques/model_params.hpp, tiny by default),
// `batch` (8, quick 4), `seq_len` (128, quick 64) and `steps` (`steps`, quick `quick_steps`, with
// `steps_help` saying what the budget is for in this technique).
std::vector<ParamSpec> params(std::int64_t steps, std::int64_t quick_steps, const std::string& steps_help);

// The case's model (techniques/model_params.hpp; its vocabulary at least 256, since the text is
// bytes), seed, data_source(), and its `batch`, `seq_len` (at most the model's context) and
// `steps` parameters. A seq_len beyond the context or a smaller vocabulary is an InputError
// naming `technique`, the parameter and what is allowed.
nn::TrainConfig base_config(const std::string& technique, const Case& c);

}  // namespace aiopt::training_case
