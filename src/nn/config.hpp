#pragma once
// The GPT-2 architecture's dimensions (DESIGN.md "The model") and its named presets.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace aiopt::nn {

struct GptConfig {
  std::size_t layers = 2;
  std::size_t channels = 64;   // d_model
  std::size_t heads = 4;       // channels % heads == 0
  std::size_t context = 128;   // learned positions
  std::size_t vocab = 256;     // bytes, unless a preset or checkpoint says otherwise
  float layernorm_eps = 1e-5f;

  std::size_t head_dim() const { return channels / heads; }
  // Parameters, counting the tied embedding once.
  std::size_t parameter_count() const;
  // Throws InputError naming the field when a dimension is zero or channels % heads != 0.
  void validate() const;
  // "L2 d64 h4 ctx128 vocab256"
  std::string describe() const;
};

// tiny (L2 d64 h4 ctx128), small (L4 d256 h8 ctx512), medium (L8 d512 h8 ctx1024),
// gpt2 (L12 d768 h12 ctx1024 vocab 50257). Throws InputError with "did you mean" otherwise.
GptConfig preset(std::string_view name);
std::vector<std::string> preset_names();

}  // namespace aiopt::nn
