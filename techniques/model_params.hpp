#pragma once
// The model's parameters, shared by every technique that runs the GPT: a named preset
// (nn::preset_names()) and per-dimension overrides, where 0 keeps the preset's value; and for the
// inference techniques, a checkpoint whose weights replace random ones.
//   preset   tiny | small | medium | gpt2
//   layers, channels, heads, context, vocab   0: the preset's
//   checkpoint   a Hugging Face GPT-2 folder or a safetensors file (nn/pretrained.hpp); "": none
#include <optional>
#include <string>
#include <vector>

#include "harness/param.hpp"
#include "nn/config.hpp"

namespace aiopt::model_params {

// A dimension a parameter (and a flag of `generate` and `train`) overrides, by the same name.
struct Dimension {
  const char* name;
  std::size_t nn::GptConfig::*field;
  const char* help;
};

inline constexpr Dimension dimensions[] = {
    {"layers", &nn::GptConfig::layers, "transformer blocks"},
    {"channels", &nn::GptConfig::channels, "model width d_model; a multiple of heads"},
    {"heads", &nn::GptConfig::heads, "attention heads; must divide channels"},
    {"context", &nn::GptConfig::context, "positions the model can attend over (learned position embeddings)"},
    {"vocab", &nn::GptConfig::vocab, "vocabulary size; tokens are drawn from [0, vocab)"},
};

// The six ParamSpecs, with `default_preset` as the preset's default and `quick_preset`, when given,
// as its --quick value.
std::vector<ParamSpec> specs(const std::string& default_preset,
                             const std::optional<std::string>& quick_preset = std::nullopt);

// The `checkpoint` parameter, for a technique that can run a trained or published model.
ParamSpec checkpoint_spec();

// The checkpoint `params` names: "" where the technique has no such parameter or none is given.
std::string checkpoint(const Params& params);

// The preset with the non-zero overrides applied, validated. Throws InputError naming the
// parameters and their values when the combination is not a model (heads not dividing channels,
// an unknown preset). With a checkpoint: its config (from the headers and config.json, no tensor
// read); the preset is not used, and a non-zero override must equal the checkpoint's dimension
// (heads gives a lone GPT-2 file its head count).
nn::GptConfig config(const Params& params);

}  // namespace aiopt::model_params
