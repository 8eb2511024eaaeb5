#include "techniques/model_params.hpp"

#include <cstdint>

#include "core/error.hpp"

namespace aiopt::model_params {

namespace {

struct Override {
  const char* name;
  std::size_t nn::GptConfig::*field;
  const char* help;
};

constexpr Override overrides[] = {
    {"layers", &nn::GptConfig::layers, "transformer blocks"},
    {"channels", &nn::GptConfig::channels, "model width d_model; a multiple of heads"},
    {"heads", &nn::GptConfig::heads, "attention heads; must divide channels"},
    {"context", &nn::GptConfig::context, "positions the model can attend over (learned position embeddings)"},
    {"vocab", &nn::GptConfig::vocab, "vocabulary size; tokens are drawn from [0, vocab)"},
};

}  // namespace

std::vector<ParamSpec> specs(const std::string& default_preset, const std::optional<std::string>& quick_preset) {
  ParamSpec preset;
  preset.name = "preset";
  preset.type = ParamType::choice;
  preset.default_value = default_preset;
  if (quick_preset) preset.quick_value = *quick_preset;
  preset.choices = nn::preset_names();
  preset.help = "model size: tiny (L2 d64 h4 ctx128), small (L4 d256 h8 ctx512), medium (L8 d512 h8 ctx1024), "
                "gpt2 (L12 d768 h12 ctx1024 vocab50257); the overrides below change single dimensions";
  std::vector<ParamSpec> out = {preset};
  for (const Override& o : overrides) {
    ParamSpec p;
    p.name = o.name;
    p.type = ParamType::integer;
    p.default_value = std::int64_t{0};
    p.min = 0;
    p.help = std::string(o.help) + "; 0: the preset's";
    out.push_back(p);
  }
  return out;
}

nn::GptConfig config(const Params& params) {
  const std::string& name = params.string("preset");
  nn::GptConfig c = nn::preset(name);
  std::string changed;
  for (const Override& o : overrides) {
    const std::int64_t v = params.integer(o.name);
    if (v < 0)
      throw InputError("model parameter '" + std::string(o.name) + "' = " + std::to_string(v) +
                       "; allowed: 0 (the preset's) or more");
    if (v == 0) continue;
    c.*o.field = static_cast<std::size_t>(v);
    changed += ", " + std::string(o.name) + "=" + std::to_string(v);
  }
  try {
    c.validate();
  } catch (const InputError& e) {
    throw InputError("model parameters (preset=" + name + changed + ", giving " + c.describe() + "): " + e.what());
  }
  return c;
}

}  // namespace aiopt::model_params
