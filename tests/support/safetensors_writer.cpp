#include "support/safetensors_writer.hpp"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "core/rng.hpp"
#include "support/files.hpp"

namespace aiopt::test {

using nlohmann::json;

std::string le64(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

void write_raw(const std::string& path, const std::string& header, const std::string& data) {
  write_bytes(path, le64(header.size()) + header + data);
}

void write_file(const std::string& path, const std::vector<RawTensor>& tensors, const json& metadata) {
  json header = json::object();
  std::string data;
  for (const auto& t : tensors) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  if (!metadata.is_null()) header["__metadata__"] = metadata;
  write_raw(path, header.dump(), data);
}

std::string f32_bytes(const std::vector<float>& v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

std::string u16_bytes(const std::vector<std::uint16_t>& v) {
  std::string s(v.size() * 2, '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

std::int64_t numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::vector<float> random_values(std::size_t n, std::uint64_t seed) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = rng::uniform(seed, i) * 2.0f - 1.0f;
  return v;
}

std::vector<RawTensor> gpt2_tensors(std::int64_t L, std::int64_t C, std::int64_t V, std::int64_t T) {
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> shapes = {{"wte.weight", {V, C}}, {"wpe.weight", {T, C}}};
  for (std::int64_t l = 0; l < L; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    shapes.push_back({h + "ln_1.weight", {C}});
    shapes.push_back({h + "ln_1.bias", {C}});
    shapes.push_back({h + "attn.bias", {1, 1, T, T}});
    shapes.push_back({h + "attn.masked_bias", {}});
    shapes.push_back({h + "attn.c_attn.weight", {C, 3 * C}});
    shapes.push_back({h + "attn.c_attn.bias", {3 * C}});
    shapes.push_back({h + "attn.c_proj.weight", {C, C}});
    shapes.push_back({h + "attn.c_proj.bias", {C}});
    shapes.push_back({h + "ln_2.weight", {C}});
    shapes.push_back({h + "ln_2.bias", {C}});
    shapes.push_back({h + "mlp.c_fc.weight", {C, 4 * C}});
    shapes.push_back({h + "mlp.c_fc.bias", {4 * C}});
    shapes.push_back({h + "mlp.c_proj.weight", {4 * C, C}});
    shapes.push_back({h + "mlp.c_proj.bias", {C}});
  }
  shapes.push_back({"ln_f.weight", {C}});
  shapes.push_back({"ln_f.bias", {C}});
  std::vector<RawTensor> out;
  std::uint64_t seed = 100;
  for (const auto& [name, shape] : shapes)
    out.push_back({"transformer." + name, "F32", shape,
                   f32_bytes(random_values(static_cast<std::size_t>(numel(shape)), seed++))});
  out.push_back({"lm_head.weight", "F32", {V, C}, out[0].bytes});
  return out;
}

std::vector<RawTensor> gpt2_tensors(const nn::GptWeights& weights) {
  std::vector<RawTensor> out;
  for (const auto& [name, t] : weights.named()) {
    const float* p = t->data<float>();
    const bool embedding = name == "wte" || name == "wpe";
    const bool conv1d = name.ends_with("c_attn.weight") || name.ends_with("c_proj.weight") ||
                        name.ends_with("c_fc.weight");
    RawTensor raw{"transformer." + name + (embedding ? ".weight" : ""), "F32", t->shape(), {}};
    if (conv1d) {  // ours (out, in), GPT-2's (in, out)
      const std::int64_t rows = t->shape()[0], cols = t->shape()[1];
      std::vector<float> transposed(static_cast<std::size_t>(rows * cols));
      for (std::int64_t o = 0; o < rows; ++o)
        for (std::int64_t i = 0; i < cols; ++i) transposed[static_cast<std::size_t>(i * rows + o)] = p[o * cols + i];
      raw.shape = {cols, rows};
      raw.bytes = f32_bytes(transposed);
    } else {
      raw.bytes = std::string(reinterpret_cast<const char*>(p), t->bytes());
    }
    out.push_back(std::move(raw));
  }
  const std::int64_t T = static_cast<std::int64_t>(weights.config.context);
  for (std::size_t l = 0; l < weights.config.layers; ++l) {
    std::vector<float> mask(static_cast<std::size_t>(T * T));
    for (std::int64_t r = 0; r < T; ++r)
      for (std::int64_t c = 0; c <= r; ++c) mask[static_cast<std::size_t>(r * T + c)] = 1.0f;
    out.push_back({"transformer.h." + std::to_string(l) + ".attn.bias", "F32", {1, 1, T, T}, f32_bytes(mask)});
  }
  out.push_back({"lm_head.weight", "F32", weights.wte.shape(),
                 std::string(reinterpret_cast<const char*>(weights.wte.data<float>()), weights.wte.bytes())});
  return out;
}

json gpt2_config_json(const nn::GptConfig& c) {
  return {{"activation_function", "gelu_new"},
          {"architectures", {"GPT2LMHeadModel"}},
          {"attn_pdrop", 0.1},
          {"bos_token_id", c.vocab - 1},
          {"embd_pdrop", 0.1},
          {"eos_token_id", c.vocab - 1},
          {"initializer_range", 0.02},
          {"layer_norm_epsilon", c.layernorm_eps},
          {"model_type", "gpt2"},
          {"n_ctx", c.context},
          {"n_embd", c.channels},
          {"n_head", c.heads},
          {"n_inner", nullptr},
          {"n_layer", c.layers},
          {"n_positions", c.context},
          {"reorder_and_upcast_attn", false},
          {"resid_pdrop", 0.1},
          {"scale_attn_by_inverse_layer_idx", false},
          {"scale_attn_weights", true},
          {"tie_word_embeddings", true},
          {"torch_dtype", "float32"},
          {"transformers_version", "4.46.0"},
          {"use_cache", true},
          {"vocab_size", c.vocab}};
}

void write_gpt2_folder(const std::string& dir, const nn::GptWeights& weights) {
  std::filesystem::create_directories(dir);
  write_file(dir + "/model.safetensors", gpt2_tensors(weights), {{"format", "pt"}});
  write_text(dir + "/config.json", gpt2_config_json(weights.config).dump(2));
}

}  // namespace aiopt::test
