#include "techniques/model_params.hpp"

#include <cstdint>

#include "core/error.hpp"

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

nn::GptConfig config(const Params& params) {
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
