#include "nn/pretrained.hpp"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>
#include <utility>

#include <xxhash.h>

#include "core/error.hpp"
#include "nn/json_file.hpp"

namespace aiopt::nn {

namespace fs = std::filesystem;

namespace {

constexpr const char* weights_file = "model.safetensors";
constexpr const char* index_file = "model.safetensors.index.json";
constexpr const char* config_file = "config.json";
constexpr const char* vocab_file = "vocab.json";
constexpr const char* merges_file = "merges.txt";

// A positive integer under `key`, else `fallback` when absent and given; InputError otherwise.
std::size_t positive(const nlohmann::json& j, const std::string& at, const char* key,
                     std::optional<std::size_t> fallback = std::nullopt) {
  if (!j.contains(key) || j.at(key).is_null()) {
    if (fallback) return *fallback;
    throw InputError(at + ": no \"" + key + "\"");
  }
  const nlohmann::json& v = j.at(key);
  if (!v.is_number_unsigned() || v.get<std::uint64_t>() == 0)
    throw InputError(at + ": \"" + key + "\" must be a positive integer, got " + v.dump());
  return v.get<std::size_t>();
}

// A boolean option that must have `required` for the model to be GPT-2 as aiopt computes it.
void require_flag(const nlohmann::json& j, const std::string& at, const char* key, bool required, const char* why) {
  if (!j.contains(key) || j.at(key).is_null()) return;
  if (!j.at(key).is_boolean()) throw InputError(at + ": \"" + key + "\" must be true or false, got " + j.at(key).dump());
  if (j.at(key).get<bool>() != required)
    throw InputError(at + ": \"" + key + "\" is " + (required ? "false" : "true") + "; " + why);
}

// GPT-2's config.json (transformers' GPT2Config) as our dimensions; refuses what differs.
GptConfig read_config(const fs::path& path) {
  const std::string at = path.string();
  const nlohmann::json j = read_json_file(path);
  if (!j.is_object()) throw InputError(at + ": must be a JSON object");
  const std::string model_type = j.value("model_type", std::string());
  if (model_type != "gpt2")
    throw InputError(at + ": \"model_type\" is " + (j.contains("model_type") ? j.at("model_type").dump() : "absent") +
                     "; aiopt runs GPT-2-family models (\"model_type\": \"gpt2\": gpt2, distilgpt2, gpt2-medium, ...)");
  GptConfig c;
  c.layers = positive(j, at, "n_layer");
  c.channels = positive(j, at, "n_embd");
  c.heads = positive(j, at, "n_head");
  // n_ctx is the older name of n_positions.
  c.context = positive(j, at, "n_positions", j.contains("n_ctx") ? std::optional(positive(j, at, "n_ctx")) : std::nullopt);
  c.vocab = positive(j, at, "vocab_size");
  if (j.contains("layer_norm_epsilon")) {
    if (!j.at("layer_norm_epsilon").is_number() || !(j.at("layer_norm_epsilon").get<double>() > 0))
      throw InputError(at + ": \"layer_norm_epsilon\" must be a positive number, got " + j.at("layer_norm_epsilon").dump());
    c.layernorm_eps = j.at("layer_norm_epsilon").get<float>();
  }
  // GPT-2's "gelu_new" is the tanh approximation the model computes; "gelu_pytorch_tanh" is the
  // same function. Exact-erf "gelu", "relu" and the others are different models.
  const std::string activation = j.value("activation_function", std::string("gelu_new"));
  if (activation != "gelu_new" && activation != "gelu_pytorch_tanh")
    throw InputError(at + ": \"activation_function\" is \"" + activation +
                     "\"; aiopt implements GPT-2's tanh GELU only (gelu_new, gelu_pytorch_tanh)");
  if (j.contains("n_inner") && !j.at("n_inner").is_null() && positive(j, at, "n_inner") != 4 * c.channels)
    throw InputError(at + ": \"n_inner\" is " + j.at("n_inner").dump() + "; aiopt's MLP is 4 × n_embd = " +
                     std::to_string(4 * c.channels) + " wide");
  require_flag(j, at, "tie_word_embeddings", true, "aiopt's GPT ties the output head to the token embedding");
  require_flag(j, at, "add_cross_attention", false, "aiopt's GPT is a decoder without cross-attention");
  require_flag(j, at, "scale_attn_weights", true, "aiopt scales attention scores by 1/sqrt(head size) as GPT-2 does");
  require_flag(j, at, "scale_attn_by_inverse_layer_idx", false, "aiopt does not scale attention by the layer index");
  try {
    c.validate();
  } catch (const InputError& e) {
    throw InputError(at + ": " + e.what());
  }
  return c;
}

// The folder's tokenizer: both files or neither.
std::string tokenizer_folder(const fs::path& folder) {
  const bool vocab = fs::is_regular_file(folder / vocab_file), merges = fs::is_regular_file(folder / merges_file);
  if (vocab != merges)
    throw InputError((folder / (vocab ? vocab_file : merges_file)).string() + " has no " +
                     (vocab ? merges_file : vocab_file) + " beside it; GPT-2's tokenizer needs both");
  return vocab ? folder.string() : std::string();
}

std::string hex64(std::uint64_t v) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(v));
  return text;
}

}  // namespace

nlohmann::ordered_json CheckpointInfo::to_json() const {
  return {{"path", path},
          {"format", format},
          {"files", files},
          {"bytes", bytes},
          {"hash", hash},
          {"config",
           {{"layers", config.layers},
            {"channels", config.channels},
            {"heads", config.heads},
            {"context", config.context},
            {"vocab", config.vocab},
            {"layernorm_eps", config.layernorm_eps},
            {"parameters", config.parameter_count()}}},
          {"tokenizer", tokenizer.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(tokenizer)}};
}

CheckpointSource open_checkpoint(const std::string& path, std::optional<std::size_t> heads) {
  const fs::path p(path);
  std::error_code ec;
  if (!fs::exists(p, ec)) throw InputError("checkpoint '" + path + "' does not exist");
  fs::path folder;
  std::optional<CheckpointFiles> files;
  if (fs::is_directory(p)) {
    folder = p;
    if (fs::is_regular_file(p / weights_file))
      files.emplace(SafetensorsFile((p / weights_file).string()));
    else if (fs::is_regular_file(p / index_file))
      files.emplace(CheckpointFiles::from_index(p / index_file));
    else
      throw InputError("checkpoint folder '" + path + "' has neither " + weights_file + " nor " + index_file);
  } else {
    folder = p.parent_path().empty() ? fs::path(".") : p.parent_path();
    if (p.filename().string().ends_with(".json"))
      files.emplace(CheckpointFiles::from_index(p));
    else
      files.emplace(SafetensorsFile(path));
  }
  CheckpointSource source{std::move(*files), {}, {}};
  source.hints.heads = heads;
  const bool ours = checkpoint_format(source.files) != "gpt2";
  if (!ours && fs::is_regular_file(folder / config_file)) {
    source.hints.declared = read_config(folder / config_file);
    source.hints.declared_by = (folder / config_file).string();
  }
  source.tokenizer = tokenizer_folder(folder);
  // An aiopt-gpt file fine-tuned from a published model names the tokenizer's folder.
  const auto named = source.files.metadata().find("tokenizer");
  if (source.tokenizer.empty() && ours && named != source.files.metadata().end()) {
    source.tokenizer = tokenizer_folder(named->second);
    if (source.tokenizer.empty())
      throw InputError("checkpoint '" + path + "' names the tokenizer folder '" + named->second +
                       "', which has no vocab.json and merges.txt");
  }
  return source;
}

namespace {

CheckpointInfo info_of(const CheckpointSource& source, const std::string& path) {
  CheckpointInfo info;
  info.path = path;
  info.format = checkpoint_format(source.files);
  info.config = checkpoint_config(source.files, source.hints);
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  for (const SafetensorsFile& f : source.files.files()) {
    info.files.push_back(f.path());
    XXH3_64bits_update(state, f.bytes().data(), f.bytes().size());
  }
  info.hash = "xxh3-64:" + hex64(XXH3_64bits_digest(state));
  XXH3_freeState(state);
  if (!source.hints.declared_by.empty()) info.files.push_back(source.hints.declared_by);
  info.bytes = source.files.bytes();
  info.tokenizer = source.tokenizer;
  return info;
}

}  // namespace

CheckpointInfo inspect_checkpoint(const std::string& path, std::optional<std::size_t> heads) {
  return info_of(open_checkpoint(path, heads), path);
}

GptWeights pretrained_weights(const std::string& path, const Device& device, std::optional<std::size_t> heads) {
  const CheckpointSource source = open_checkpoint(path, heads);
  return load_checkpoint(source.files, device, source.hints);
}

PretrainedModel load_pretrained(const std::string& path, const Device& device, std::optional<std::size_t> heads) {
  const auto start = std::chrono::steady_clock::now();
  PretrainedModel out;
  const CheckpointSource source = open_checkpoint(path, heads);
  out.info = info_of(source, path);
  out.weights = load_checkpoint(source.files, device, source.hints);
  if (!source.tokenizer.empty())
    out.tokenizer = BpeTokenizer::load(fs::path(source.tokenizer) / vocab_file, fs::path(source.tokenizer) / merges_file);
  if (out.tokenizer && out.tokenizer->vocab_size() > out.weights.config.vocab)
    throw InputError("checkpoint '" + path + "': its tokenizer has " + std::to_string(out.tokenizer->vocab_size()) +
                     " tokens, more than the model's vocabulary of " + std::to_string(out.weights.config.vocab));
  out.load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace aiopt::nn
