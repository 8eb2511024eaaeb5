#include "nn/config.hpp"

#include <array>

#include "core/error.hpp"
#include "core/spelling.hpp"

namespace aiopt::nn {

namespace {

struct Preset {
  const char* name;
  GptConfig config;
};

const std::array<Preset, 4>& presets() {
  static const std::array<Preset, 4> list = {{
      {"tiny", {2, 64, 4, 128, 256}},
      {"small", {4, 256, 8, 512, 256}},
      {"medium", {8, 512, 8, 1024, 256}},
      {"gpt2", {12, 768, 12, 1024, 50257}},
  }};
  return list;
}

}  // namespace

std::size_t GptConfig::parameter_count() const {
  const std::size_t c = channels;
  const std::size_t per_block = 2 * c             // ln_1
                                + 3 * c * c + 3 * c  // c_attn
                                + c * c + c          // attn c_proj
                                + 2 * c              // ln_2
                                + 4 * c * c + 4 * c  // c_fc
                                + 4 * c * c + c;     // mlp c_proj
  return vocab * c + context * c + layers * per_block + 2 * c;
}

void GptConfig::validate() const {
  const std::pair<const char*, std::size_t> sizes[] = {
      {"layers", layers}, {"channels", channels}, {"heads", heads}, {"context", context}, {"vocab", vocab}};
  for (const auto& [name, value] : sizes)
    if (value == 0) throw InputError("model " + std::string(name) + " must be at least 1");
  if (channels % heads != 0)
    throw InputError("model channels (" + std::to_string(channels) + ") must be a multiple of heads (" +
                     std::to_string(heads) + ")");
  if (!(layernorm_eps > 0.0f)) throw InputError("model layernorm_eps must be positive");
}

std::string GptConfig::describe() const {
  std::string text = "L";
  text += std::to_string(layers) + " d" + std::to_string(channels) + " h" + std::to_string(heads);
  text += " ctx" + std::to_string(context) + " vocab" + std::to_string(vocab);
  return text;
}

GptConfig preset(std::string_view name) {
  for (const Preset& p : presets())
    if (name == p.name) return p.config;
  throw InputError("unknown model preset " + in_quotes(name) + did_you_mean(name, preset_names()) +
                   " (presets: " + join_names(preset_names()) + ")");
}

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const Preset& p : presets()) names.emplace_back(p.name);
  return names;
}

}  // namespace aiopt::nn
