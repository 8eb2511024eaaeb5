#pragma once
// speculative_decoding: a cheap draft proposes, the target verifies (TECHNIQUES.md §4). The trained
// target (small by default, from the model cache) generates gen_tokens after prompts taken from
// validation text, alone one token per step (autoregressive), with a trained draft model's γ
// tokens verified in one pass (speculative, speculative_greedy), or with a draft looked up in the
// context (prompt_lookup). The acceptance rule keeps the output distribution the target's
// (acceptance.hpp); greedy decoding gives the target's own tokens. The run measures the
// acceptance rate α, tokens per target pass and the costs (draft step over target step c, a
// (γ+1)-token pass over a one-token step) and sets the measured speedup beside Leviathan's
// prediction. See README.md beside this file.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "harness/technique.hpp"
#include "harness/variant_table.hpp"
#include "nn/trainer.hpp"
#include "techniques/speculative_decoding/decoder.hpp"

namespace aiopt {

// The technique, as techniques/registry.cpp lists it.
std::unique_ptr<Technique> make_speculative_decoding();

namespace speculative_decoding {

const VariantTable<Method>& methods();

// The target's training recipe: nn::standard_training of the `target` preset.
nn::TrainConfig target_config(const Case& c);
// The draft's: the target's recipe (corpus, batch, windows where the draft's context holds
// them, budget and schedule) on the `draft` preset's model (tiny for `distilled`) with the
// `draft_layers`, `draft_channels`, `draft_heads` overrides, `draft_steps` steps when set, and for
// `distilled` knowledge distillation from the target at T = 1, α = 0.5 (knowledge_distillation's best measured mix). InputError naming the
// overrides when they do not make a model.
nn::TrainConfig draft_config(const Case& c);
// The draft's dimensions: draft_config's model, or the `draft_checkpoint`'s (headers and
// config.json read, no tensor). InputError naming the file when it is not a checkpoint.
nn::GptConfig draft_model(const Case& c);
inline constexpr float distillation_temperature = 1.0f;
inline constexpr float distillation_alpha = 0.5f;

// Throws InputError when the draft cannot serve the target: another vocabulary, or more
// parameters than the target's.
void check_pair(const nn::GptConfig& target, const nn::GptConfig& draft, const std::string& draft_name);

// The case's prompts: `prompts` windows of prompt_len tokens at seeded offsets in the validation
// split of the target's corpus, or of the `data` file's text. InputError naming the file when it
// is unreadable or too short.
std::vector<std::vector<std::int32_t>> make_prompts(const Case& c);

// (1 − α^(γ+1)) / (1 − α): the expected tokens per target pass for acceptance rate α (γ + 1 at
// α = 1).
double expected_tokens_per_pass(double alpha, double gamma);
// expected_tokens_per_pass / (γ·c + verify): Leviathan's predicted speedup with verify = 1 (a
// pass of γ + 1 tokens costs one step), or with the measured verify cost.
double predicted_speedup(double alpha, double gamma, double c, double verify = 1.0);

// A correct rule emits the target's distribution within rounding of sums of vocab doubles.
inline constexpr double rule_tolerance = 1e-9;

}  // namespace speculative_decoding
}  // namespace aiopt
