#pragma once
// A minimal safetensors writer for tests, independent of the reader under test, and Hugging
// Face's GPT-2 layout built from it: the checkpoints the tests load are written here, so no test
// needs a download.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nn/weights.hpp"

namespace aiopt::test {

struct RawTensor {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", ...
  std::vector<std::int64_t> shape;
  std::string bytes;
};

std::string le64(std::uint64_t n);
void write_bytes(const std::string& path, const std::string& bytes);
// The header length, the header text, the data: the format with nothing checked.
void write_raw(const std::string& path, const std::string& header, const std::string& data);
void write_file(const std::string& path, const std::vector<RawTensor>& tensors,
                const nlohmann::json& metadata = nullptr);

std::string f32_bytes(const std::vector<float>& v);
std::string u16_bytes(const std::vector<std::uint16_t>& v);
std::int64_t numel(const std::vector<std::int64_t>& shape);
// Distinct random values in [-1, 1), so a wrong transposition or a swapped tensor cannot go unnoticed.
std::vector<float> random_values(std::size_t n, std::uint64_t seed);

// A GPT-2-style checkpoint of L layers, width C, vocabulary V, context T, as GPT2LMHeadModel
// saves it: "transformer." prefix, Conv1D weights (in, out), attn.bias (1, 1, T, T) and
// attn.masked_bias () buffers, and an lm_head.weight tied to wte. Values of tensor k are
// random_values(numel, 100 + k).
std::vector<RawTensor> gpt2_tensors(std::int64_t L, std::int64_t C, std::int64_t V, std::int64_t T);

// `weights` (host) in GPT-2's layout, as above: the same model as a Hugging Face checkpoint.
std::vector<RawTensor> gpt2_tensors(const nn::GptWeights& weights);

// config.json for `config` as transformers' GPT2Config writes it (the keys the loader reads and
// the options it checks, with GPT-2's values).
nlohmann::json gpt2_config_json(const nn::GptConfig& config);

// A Hugging Face GPT-2 folder: model.safetensors ("format": "pt") and config.json.
void write_gpt2_folder(const std::string& dir, const nn::GptWeights& weights);

}  // namespace aiopt::test
