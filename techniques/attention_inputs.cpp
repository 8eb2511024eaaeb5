#include "techniques/attention_inputs.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "nn/config.hpp"
#include "nn/trainer.hpp"

namespace aiopt::attention_inputs {

namespace {

// The presets the standard recipe can train: it reads bytes, so a vocabulary of 256.
std::vector<std::string> trainable_presets() {
  std::vector<std::string> out;
  for (const std::string& name : nn::preset_names())
    if (nn::preset(name).vocab == 256) out.push_back(name);
  return out;
}

}  // namespace

std::string Trained::describe() const { return "layer " + std::to_string(layer) + " of the trained " + preset + " model"; }

nn::AttentionCapture Trained::capture(std::size_t batch, std::size_t seq_len) const {
  return nn::capture_trained_attention(preset, layer, batch, seq_len);
}

std::vector<ParamSpec> specs() {
  return {
      choice_param("inputs", "random", std::nullopt, {"random", "trained"}, "",
                   "random: generated q, k, v (score_std); trained: q, k, v of one attention layer of the trained GPT "
                   "(preset, layer) on windows of its validation text, after the layer's LayerNorm and QKV "
                   "projection; heads and head_dim must then be the model's, seq_len at most its context, and "
                   "batch counts windows"),
      choice_param("preset", "tiny", std::nullopt, trainable_presets(), "",
                   "inputs=trained: the model, trained by the standard recipe on first use and kept in the model "
                   "cache: tiny (L2 d64 h4 ctx128: heads 4, head_dim 16), small (L4 d256 h8 ctx512: heads 8, "
                   "head_dim 32), medium (L8 d512 h8 ctx1024: heads 8, head_dim 64)"),
      integer_param("layer", 0, std::nullopt, 0, unbounded, "", "inputs=trained: the block whose q, k, v are taken"),
  };
}

std::optional<Trained> trained(const Params& params) {
  if (params.string("inputs") != "trained") return std::nullopt;
  return Trained{params.string("preset"), static_cast<std::size_t>(params.integer("layer"))};
}

void check_shape(const std::string& technique, const Params& params, std::size_t batch, std::size_t heads,
                 std::size_t seq_len, std::size_t head_dim) {
  const std::optional<Trained> t = trained(params);
  if (!t) return;
  const nn::TrainConfig recipe = nn::standard_training(t->preset);
  const nn::GptConfig& m = recipe.model;
  // The windows validation_batches lays side by side in the validation text: (tokens − 1) / seq_len;
  // the standard recipe's text is the synthetic corpus, validation_bytes tokens.
  const std::size_t len = std::min(seq_len, m.context), windows = (recipe.data.validation_bytes - 1) / len;
  std::string got;
  const auto differs = [&](const char* name, std::size_t value, bool wrong) {
    if (wrong) got += std::string(got.empty() ? "" : ", ") + name + " = " + std::to_string(value);
  };
  differs("heads", heads, heads != m.heads);
  differs("head_dim", head_dim, head_dim != m.head_dim());
  differs("seq_len", seq_len, seq_len > m.context);
  differs("layer", t->layer, t->layer >= m.layers);
  differs("batch", batch, batch > windows);
  if (got.empty()) return;
  throw InputError(technique + ": inputs=trained takes q, k, v from " + t->describe() + " (" + m.describe() +
                   "), so heads = " + std::to_string(m.heads) + ", head_dim = " + std::to_string(m.head_dim()) +
                   ", seq_len <= " + std::to_string(m.context) + " (its context), layer <= " +
                   std::to_string(m.layers - 1) + " and batch <= " + std::to_string(windows) +
                   " (the windows of " + std::to_string(len) + " tokens in its validation text); got " + got + ". Set --set heads=" +
                   std::to_string(m.heads) + " --set head_dim=" + std::to_string(m.head_dim()) + " --set seq_len=" +
                   std::to_string(len));
}

}  // namespace aiopt::attention_inputs
