#pragma once
// A model as it is published: a checkpoint folder as Hugging Face's save_pretrained writes it
//   config.json                     GPT-2's config (model_type "gpt2", n_layer, n_embd, n_head, ...)
//   model.safetensors               the weights, or model.safetensors.index.json and its shards
//   vocab.json, merges.txt          the byte-level BPE tokenizer (optional)
// or a lone safetensors file (aiopt's own, whose __metadata__ holds its config; or GPT-2 weights,
// whose head count comes from a hint when their width is not a published one). A file's folder
// is searched for config.json and the tokenizer files, as for a folder.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/device.hpp"
#include "nn/bpe_tokenizer.hpp"
#include "nn/checkpoint.hpp"
#include "nn/config.hpp"
#include "nn/weights.hpp"

namespace aiopt::nn {

// What identifies a checkpoint in a report's context.
struct CheckpointInfo {
  std::string path;                // as given
  std::string format;              // "aiopt-gpt" or "gpt2"
  std::vector<std::string> files;  // the safetensors files, and config.json where one was read
  std::uint64_t bytes = 0;         // the safetensors files' sizes, summed
  std::string hash;                // "xxh3-64:<16 hex digits>" over the safetensors files' bytes, in order
  GptConfig config;
  std::string tokenizer;           // the folder of vocab.json and merges.txt; empty: none
  nlohmann::ordered_json to_json() const;
};

// The parts of a checkpoint, opened (headers and config checked) but no tensor read.
struct CheckpointSource {
  CheckpointFiles files;
  Gpt2Hints hints;
  std::string tokenizer;  // the folder of vocab.json and merges.txt; empty: none
};

// Resolves `path` (a folder, an index, or a safetensors file) and reads config.json where there is
// one. `heads`: a lone GPT-2 file's head count. InputError naming the file and key for: a path that
// is none of these, a folder without weights, a config.json of another architecture (model_type
// not "gpt2") or with an option the model does not implement (activation_function other than the
// tanh GELU, n_inner other than 4 × n_embd, untied embeddings, cross-attention, attention not
// scaled by 1/√d or scaled by layer), vocab.json without merges.txt or the reverse.
CheckpointSource open_checkpoint(const std::string& path, std::optional<std::size_t> heads = std::nullopt);

// The config and the identity of a checkpoint: headers, config.json and a hash of every byte of
// the weights (the files are mapped, not copied).
CheckpointInfo inspect_checkpoint(const std::string& path, std::optional<std::size_t> heads = std::nullopt);

struct PretrainedModel {
  GptWeights weights;
  std::optional<BpeTokenizer> tokenizer;
  CheckpointInfo info;
  double load_ms = 0.0;  // opening, checking and reading the weights (and the tokenizer) onto the device
};

PretrainedModel load_pretrained(const std::string& path, const Device& device,
                                std::optional<std::size_t> heads = std::nullopt);

// The weights alone, as load_pretrained reads them but with no hash taken and no tokenizer read:
// what a technique runs.
GptWeights pretrained_weights(const std::string& path, const Device& device,
                              std::optional<std::size_t> heads = std::nullopt);

}  // namespace aiopt::nn
