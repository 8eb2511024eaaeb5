#include "nn/checkpoint.hpp"

#include <algorithm>
#include <charconv>
#include <functional>
#include <map>
#include <set>
#include <string_view>
#include <system_error>
#include <utility>

#include "core/error.hpp"
#include "nn/safetensors.hpp"

namespace aiopt::nn {

// Our files: the tensors of GptWeights::named() under those names, (out, in) linear weights, and
// the config in __metadata__ {"format": "aiopt-gpt", "layers", "channels", "heads", "context",
// "vocab", "layernorm_eps"} and, from `aiopt train`, "attention": the attention the weights were
// trained with. Anything else is read as a GPT-2 checkpoint.
//
// GPT-2 checkpoints (HF GPT2Model / GPT2LMHeadModel, "format": "pt" or none): "wte.weight",
// "wpe.weight", "h.N.{ln_1,attn.c_attn,attn.c_proj,ln_2,mlp.c_fc,mlp.c_proj}.{weight,bias}",
// "ln_f.{weight,bias}", all optionally under "transformer.". Dimensions come from the shapes:
// vocab and channels from wte (vocab, C), context from wpe (context, C), layers from the highest N
// in "h.N."; a config.json's dimensions (Gpt2Hints::declared) must agree with them. The head count
// is in no tensor: config.json's n_head, else Gpt2Hints::heads, else __metadata__ "heads" (or
// "n_head"), else the published sizes (C 768 → 12, 1024 → 16, 1280 → 20, 1600 → 25). Conv1D
// weights are stored (in, out) and transposed to (out, in). The attn.bias / attn.masked_bias
// buffers (the causal mask) are skipped; lm_head.weight must equal wte.weight (tied, as GPT-2 is);
// any other name is refused.

namespace {

constexpr std::string_view format_name = "aiopt-gpt";
constexpr std::string_view hf_format_name = "pt";  // what transformers writes into every file

std::string where(const std::string& path) { return "checkpoint '" + path + "'"; }

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}
bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

// A whole-string non-negative integer from __metadata__, else InputError naming the key.
std::size_t metadata_size(const CheckpointFiles& file, const std::string& key) {
  const auto it = file.metadata().find(key);
  if (it == file.metadata().end())
    throw InputError(where(file.path()) + ": __metadata__ has no '" + key + "' (an aiopt-gpt checkpoint records its config)");
  const std::string& text = it->second;
  std::size_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty())
    throw InputError(where(file.path()) + ": __metadata__ '" + key + "' = '" + text + "' is not a non-negative integer");
  return value;
}

float metadata_float(const CheckpointFiles& file, const std::string& key) {
  const auto it = file.metadata().find(key);
  if (it == file.metadata().end()) throw InputError(where(file.path()) + ": __metadata__ has no '" + key + "'");
  const std::string& text = it->second;
  float value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty())
    throw InputError(where(file.path()) + ": __metadata__ '" + key + "' = '" + text + "' is not a number");
  return value;
}

// The shortest text that reads back to the same float, so a saved config round-trips exactly.
std::string float_text(float v) {
  char buffer[32];
  const auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, v);
  return std::string(buffer, end);
}

// GPT-2's Conv1D layers, stored (in, out).
bool is_conv1d(std::string_view name) {
  return ends_with(name, "attn.c_attn.weight") || ends_with(name, "attn.c_proj.weight") ||
         ends_with(name, "mlp.c_fc.weight") || ends_with(name, "mlp.c_proj.weight");
}

// Our name's GPT-2 name (without the prefix): the embeddings are modules with a ".weight".
std::string gpt2_name(const std::string& name) {
  return name == "wte" || name == "wpe" ? name + ".weight" : name;
}

// (in, out) -> (out, in). src: (rows, cols) host f32.
Tensor transposed(const Tensor& src) {
  const std::int64_t rows = src.shape()[0], cols = src.shape()[1];
  Tensor dst = Tensor::empty({cols, rows}, DType::f32, Device::cpu());
  const float* s = src.data<float>();
  float* d = dst.data<float>();
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) d[c * rows + r] = s[r * cols + c];
  return dst;
}

// The config's blocks with no tensor allocated yet: read_tensors fills them one at a time.
GptWeights unallocated(const GptConfig& config) {
  GptWeights weights;
  weights.config = config;
  weights.blocks.resize(config.layers);
  return weights;
}

// Reads every tensor of `weights` (unallocated) but those `skip(ours)` names (left empty) from
// `file`: file name `prefix + file_name(ours)`, transposed when `transpose(ours)`. A missing or
// misshapen tensor is an InputError naming it.
template <class FileName, class Transpose>
void read_tensors(const CheckpointFiles& file, GptWeights& weights, const std::string& prefix, FileName file_name,
                  Transpose transpose, const std::function<bool(const std::string&)>& skip = {}) {
  for (auto& [name, t] : weights.named()) {
    if (skip && skip(name)) continue;
    const std::string stored = prefix + file_name(name);
    if (!file.contains(stored))
      throw InputError(where(file.path()) + ": tensor '" + stored + "' is missing (model " +
                       weights.config.describe() + ")");
    const bool flip = transpose(name);
    std::vector<std::int64_t> want = GptWeights::parameter_shape(weights.config, name);
    if (flip) std::swap(want[0], want[1]);
    const auto& got = file.entry(stored).shape;
    if (got != want)
      throw InputError(where(file.path()) + ": tensor '" + stored + "' has shape " + shape_text(got) + ", expected " +
                       shape_text(want) + (flip ? " (Conv1D layout: in, out)" : "") + " for model " +
                       weights.config.describe());
    Tensor value = file.read_f32(stored);
    *t = flip ? transposed(value) : std::move(value);
  }
}

// The model's forward (nn/gpt.hpp) computes softmax attention: weights trained with another
// attention (linear_elu, performer) are a different model, and running them with softmax would
// give a wrong model silently.
void check_attention(const CheckpointFiles& file) {
  const auto it = file.metadata().find("attention");
  if (it == file.metadata().end() || it->second == "flash" || it->second == "naive") return;
  throw InputError(where(file.path()) + ": trained with '" + it->second +
                   "' attention, but the model's forward (generation, the KV cache) computes softmax attention "
                   "only; it cannot run these weights");
}

// The config of an aiopt-gpt file from its __metadata__, every tensor name checked.
GptConfig ours_config(const CheckpointFiles& file) {
  check_attention(file);
  GptConfig config;
  config.layers = metadata_size(file, "layers");
  config.channels = metadata_size(file, "channels");
  config.heads = metadata_size(file, "heads");
  config.context = metadata_size(file, "context");
  config.vocab = metadata_size(file, "vocab");
  config.layernorm_eps = metadata_float(file, "layernorm_eps");
  try {
    config.validate();
  } catch (const InputError& e) {
    throw InputError(where(file.path()) + ": __metadata__ holds an invalid config: " + e.what());
  }
  std::set<std::string> known;
  for (const auto& [name, t] : unallocated(config).named()) known.insert(name);
  for (const std::string& name : file.names())
    if (!known.count(name))
      throw InputError(where(file.path()) + ": tensor '" + name + "' is not a parameter of model " + config.describe());
  return config;
}

GptWeights load_ours(const CheckpointFiles& file, const std::function<bool(const std::string&)>& skip = {}) {
  GptWeights weights = unallocated(ours_config(file));
  read_tensors(
      file, weights, "", [](const std::string& n) { return n; }, [](const std::string&) { return false; }, skip);
  return weights;
}

std::size_t gpt2_heads(const CheckpointFiles& file, std::size_t channels, const Gpt2Hints& hints) {
  if (hints.declared) return hints.declared->heads;
  if (hints.heads) return *hints.heads;
  for (const char* key : {"heads", "n_head"})
    if (file.metadata().count(key)) return metadata_size(file, key);
  switch (channels) {
    case 768: return 12;
    case 1024: return 16;
    case 1280: return 20;
    case 1600: return 25;
    default:
      throw InputError(where(file.path()) + ": GPT-2 weights do not store the number of heads, and channels = " +
                       std::to_string(channels) +
                       " is none of GPT-2's published widths (768, 1024, 1280, 1600); give --heads (or the "
                       "'heads' parameter), or load the folder with its config.json");
  }
}

// "transformer." when the tensors carry it (GPT2LMHeadModel), "" (GPT2Model); InputError when
// the file is no GPT-2 checkpoint.
std::string gpt2_prefix(const CheckpointFiles& file) {
  if (file.contains("transformer.wte.weight")) return "transformer.";
  if (file.contains("wte.weight")) return "";
  throw InputError(where(file.path()) + " is neither an aiopt-gpt checkpoint (no __metadata__ \"format\": \"" +
                   std::string(format_name) +
                   "\") nor a GPT-2 checkpoint (no tensor 'wte.weight' or 'transformer.wte.weight')");
}

// A GPT-2 checkpoint's config from its tensor names and shapes (and the hints), every name checked.
GptConfig gpt2_config(const CheckpointFiles& file, const std::string& prefix, const Gpt2Hints& hints) {
  const auto dims = [&](const std::string& name) {
    if (!file.contains(prefix + name))
      throw InputError(where(file.path()) + ": tensor '" + prefix + name + "' is missing");
    const auto& shape = file.entry(prefix + name).shape;
    if (shape.size() != 2)
      throw InputError(where(file.path()) + ": tensor '" + prefix + name + "' has shape " + shape_text(shape) +
                       ", expected 2 dimensions");
    return shape;
  };

  // Layers: one past the highest N of "h.N."; a gap below it shows up as a missing tensor.
  std::size_t layers = 0;
  const std::string blocks = prefix + "h.";
  for (const std::string& name : file.names()) {
    if (!starts_with(name, blocks)) continue;
    std::size_t n = 0;
    const char* first = name.data() + blocks.size();
    const auto [end, ec] = std::from_chars(first, name.data() + name.size(), n);
    if (ec != std::errc() || end == first || *end != '.')
      throw InputError(where(file.path()) + ": tensor '" + name + "' is not named h.<layer>.<parameter>");
    layers = std::max(layers, n + 1);
  }
  if (layers == 0) throw InputError(where(file.path()) + ": no transformer blocks (no tensor named '" + blocks + "0.*')");

  GptConfig config;
  const auto wte = dims("wte.weight");
  config.vocab = static_cast<std::size_t>(wte[0]);
  config.channels = static_cast<std::size_t>(wte[1]);
  config.context = static_cast<std::size_t>(dims("wpe.weight")[0]);
  config.layers = layers;
  config.heads = gpt2_heads(file, config.channels, hints);
  if (const auto& d = hints.declared) {
    // What the tensors show against what config.json declares, by config.json's own keys.
    const auto differs = [&](const char* key, std::size_t declared, std::size_t found, const std::string& how) {
      if (declared != found)
        throw InputError(hints.declared_by + ": \"" + key + "\" is " + std::to_string(declared) + ", but " +
                         where(file.path()) + " has " + std::to_string(found) + " (" + how + ")");
    };
    differs("n_layer", d->layers, layers, "blocks h.0 to h." + std::to_string(layers - 1));
    differs("vocab_size", d->vocab, config.vocab, "rows of " + prefix + "wte.weight " + shape_text(wte));
    differs("n_embd", d->channels, config.channels, "columns of " + prefix + "wte.weight " + shape_text(wte));
    differs("n_positions", d->context, config.context, "rows of " + prefix + "wpe.weight");
    config.layernorm_eps = d->layernorm_eps;
  }
  try {
    config.validate();
  } catch (const InputError& e) {
    throw InputError(where(file.path()) + ": the dimensions of the GPT-2 tensors are invalid: " + e.what());
  }

  std::set<std::string> known;
  for (const auto& [name, t] : unallocated(config).named()) known.insert(prefix + gpt2_name(name));
  for (const std::string& name : file.names()) {
    const bool buffer = ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias");
    if (known.count(name) || buffer || name == "lm_head.weight") continue;
    throw InputError(where(file.path()) + ": tensor '" + name + "' is not a GPT-2 parameter (model " +
                     config.describe() + ")");
  }
  return config;
}

// An lm_head.weight beside wte.weight must be the same matrix: the model's output head is tied to
// the embedding, as GPT-2's is; an untied head would give other logits than the checkpoint's model.
void check_tied_head(const CheckpointFiles& file, const GptWeights& weights) {
  if (!file.contains("lm_head.weight")) return;
  const Tensor head = file.read_f32("lm_head.weight");
  const bool same = head.shape() == weights.wte.shape() &&
                    std::equal(head.data<float>(), head.data<float>() + head.numel(), weights.wte.data<float>());
  if (!same)
    throw InputError(where(file.path()) + ": tensor 'lm_head.weight' differs from the token embedding; aiopt's "
                     "GPT ties the output head to wte as GPT-2 does, so it cannot run an untied head");
}

GptWeights load_gpt2(const CheckpointFiles& file, const Gpt2Hints& hints) {
  const std::string prefix = gpt2_prefix(file);
  GptWeights weights = unallocated(gpt2_config(file, prefix, hints));
  read_tensors(file, weights, prefix, gpt2_name, [](const std::string& n) { return is_conv1d(n); });
  check_tied_head(file, weights);
  return weights;
}

}  // namespace

void save_checkpoint(const GptWeights& weights, const std::string& path,
                     const std::map<std::string, std::string>& extra_metadata) {
  const GptConfig& c = weights.config;
  std::map<std::string, std::string> metadata = {
      {"format", std::string(format_name)},
      {"layers", std::to_string(c.layers)},
      {"channels", std::to_string(c.channels)},
      {"heads", std::to_string(c.heads)},
      {"context", std::to_string(c.context)},
      {"vocab", std::to_string(c.vocab)},
      {"layernorm_eps", float_text(c.layernorm_eps)},
  };
  metadata.insert(extra_metadata.begin(), extra_metadata.end());  // keeps the config's keys
  const auto named = weights.named();
  GptWeights host;
  std::vector<std::pair<std::string, const Tensor*>> tensors;
  if (weights.wte.device().is_cpu()) {
    tensors = named;
  } else {
    host = weights.to(Device::cpu());
    tensors = std::as_const(host).named();
  }
  write_safetensors(path, tensors, metadata);
}

std::string checkpoint_format(const CheckpointFiles& files) {
  const auto format = files.metadata().find("format");
  if (format == files.metadata().end() || format->second == hf_format_name) return "gpt2";
  if (format->second == format_name) return std::string(format_name);
  throw InputError(where(files.path()) + ": __metadata__ \"format\" is '" + format->second + "'; allowed: '" +
                   std::string(format_name) + "' (aiopt's own), '" + std::string(hf_format_name) +
                   "' (a PyTorch model saved by transformers), or none");
}

GptConfig checkpoint_config(const CheckpointFiles& files, const Gpt2Hints& hints) {
  if (checkpoint_format(files) == format_name) return ours_config(files);
  return gpt2_config(files, gpt2_prefix(files), hints);
}

GptWeights load_checkpoint(const CheckpointFiles& files, const Device& device, const Gpt2Hints& hints) {
  GptWeights weights = checkpoint_format(files) == format_name ? load_ours(files) : load_gpt2(files, hints);
  return device.is_cpu() ? std::move(weights) : weights.to(device);
}

GptWeights load_checkpoint(const std::string& path, const Device& device) {
  return load_checkpoint(CheckpointFiles(SafetensorsFile(path)), device);
}

GptWeights load_checkpoint(const SafetensorsFile& file, const Device& device) {
  return load_checkpoint(CheckpointFiles(file), device);
}

GptWeights load_checkpoint_except(const SafetensorsFile& file, const std::function<bool(const std::string&)>& skip) {
  const CheckpointFiles files(file);
  if (checkpoint_format(files) != format_name)
    throw InputError(where(file.path()) + ": reading it tensor by tensor needs an aiopt-gpt checkpoint (__metadata__ "
                     "\"format\": \"" + std::string(format_name) + "\")");
  return load_ours(files, skip);
}

}  // namespace aiopt::nn
