#pragma once
// The GPT's parameters, named as in GPT-2 checkpoints (without the "transformer." prefix).
// Linear weights are stored (out, in) (kernels/cpu/gemm.hpp); GPT-2's Conv1D stores (in, out)
// and is transposed on load (nn/checkpoint.hpp). The LM head is tied to wte.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/device.hpp"
#include "core/tensor.hpp"
#include "nn/config.hpp"

namespace aiopt::nn {

struct BlockWeights {
  Tensor ln_1_weight, ln_1_bias;            // (C)
  Tensor attn_c_attn_weight;                // (3C, C)
  Tensor attn_c_attn_bias;                  // (3C)
  Tensor attn_c_proj_weight;                // (C, C)
  Tensor attn_c_proj_bias;                  // (C)
  Tensor ln_2_weight, ln_2_bias;            // (C)
  Tensor mlp_c_fc_weight;                   // (4C, C)
  Tensor mlp_c_fc_bias;                     // (4C)
  Tensor mlp_c_proj_weight;                 // (C, 4C)
  Tensor mlp_c_proj_bias;                   // (C)
};

struct GptWeights {
  GptConfig config;
  Tensor wte;  // (vocab, C)
  Tensor wpe;  // (context, C)
  std::vector<BlockWeights> blocks;
  Tensor ln_f_weight, ln_f_bias;  // (C)

  // Every tensor with its GPT-2 name ("wte", "h.0.ln_1.weight", "h.0.attn.c_attn.weight", ...,
  // "ln_f.bias"), in a fixed order; for checkpoints and for walking all parameters.
  std::vector<std::pair<std::string, Tensor*>> named();
  std::vector<std::pair<std::string, const Tensor*>> named() const;

  // The shape of the parameter `name` (as named() names it) in a model of `config`.
  static std::vector<std::int64_t> parameter_shape(const GptConfig& config, std::string_view name);
  // f32 tensors of the config's shapes on `device`, uninitialized.
  static GptWeights allocate(const GptConfig& config, const Device& device);
  // GPT-2's initialization from `seed`: linear weights and embeddings N(0, 0.02), the residual
  // projections (attn.c_proj, mlp.c_proj) N(0, 0.02/sqrt(2·layers)), biases 0, LayerNorm 1 and 0.
  // Generated on the host from counter-based random numbers and copied, so identical on every
  // device.
  static GptWeights initialize(const GptConfig& config, std::uint64_t seed, const Device& device);

  GptWeights to(const Device& device) const;
  // Zero-filled tensors of the config's shapes on `device`: a gradient accumulator.
  static GptWeights zeros(const GptConfig& config, const Device& device);
  void set_zero(void* stream = nullptr);  // on a CUDA stream as Tensor::set_zero
  // Element-for-element copy of `other` (same config; any devices).
  void copy_from(const GptWeights& other);
  std::size_t bytes() const;
};

// max |a − b| / max |b| over every entry of the two weight sets (gradients, typically), each on any
// device; the plain max |a − b| when b is all zeros, NaN when an entry of either is not finite.
// Throws std::invalid_argument when their tensors' shapes differ.
double max_relative_difference(const GptWeights& a, const GptWeights& b);

}  // namespace aiopt::nn
