#include "techniques/model_params.hpp"

#include <cstdint>

#include "core/error.hpp"
#include "nn/pretrained.hpp"

namespace aiopt::model_params {

std::vector<ParamSpec> specs(const std::string& default_preset, const std::optional<std::string>& quick_preset) {
  std::vector<ParamSpec> out = {choice_param(
      "preset", default_preset, quick_preset, nn::preset_names(), "",
      "model size: tiny (L2 d64 h4 ctx128), small (L4 d256 h8 ctx512), medium (L8 d512 h8 ctx1024), "
      "gpt2 (L12 d768 h12 ctx1024 vocab50257); the overrides below change single dimensions")};
  for (const Dimension& o : dimensions)
    out.push_back(integer_param(o.name, 0, std::nullopt, 0, unbounded, "", std::string(o.help) + "; 0: the preset's"));
  return out;
}

ParamSpec checkpoint_spec() {
  return string_param("checkpoint", "",
                      "the model's weights instead of random ones: a Hugging Face GPT-2 folder (config.json, "
                      "model.safetensors or its index, vocab.json and merges.txt) or a safetensors file "
                      "(aiopt's own, or GPT-2 weights with 'heads'); its dimensions replace the preset's");
}

std::string checkpoint(const Params& params) { return params.has("checkpoint") ? params.string("checkpoint") : ""; }

namespace {

std::optional<std::size_t> heads_hint(const Params& params) {
  const std::int64_t heads = params.integer("heads");
  return heads > 0 ? std::optional(static_cast<std::size_t>(heads)) : std::nullopt;
}

// The checkpoint's config; every non-zero override must agree with it.
nn::GptConfig checkpoint_config(const Params& params) {
  const std::string path = checkpoint(params);
  const nn::CheckpointSource source = nn::open_checkpoint(path, heads_hint(params));
  const nn::GptConfig c = nn::checkpoint_config(source.files, source.hints);
  for (const Dimension& o : dimensions) {
    const std::int64_t v = params.integer(o.name);
    if (v != 0 && static_cast<std::size_t>(v) != c.*o.field)
      throw InputError("model parameter '" + std::string(o.name) + "' = " + std::to_string(v) +
                       " conflicts with checkpoint " + path + " (" + c.describe() +
                       "); a checkpoint fixes the model's dimensions: leave it 0");
  }
  return c;
}

}  // namespace

nn::GptConfig config(const Params& params) {
  if (!checkpoint(params).empty()) return checkpoint_config(params);
  const std::string& name = params.string("preset");
  nn::GptConfig c = nn::preset(name);
  std::string changed;
  for (const Dimension& o : dimensions) {
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
