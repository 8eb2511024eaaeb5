#pragma once
// Low-rank adapters on the GPT's block linear layers (LoRA, Hu et al. 2021), and QLoRA's frozen
// int4 base (Dettmers et al. 2023): what a fine-tuning pass (nn/training.hpp) adds to the model.
// An adapter on output rows [offset, offset + out) of a layer's W (out_total, in) adds
// (alpha/rank)·(x·Aᵀ)·Bᵀ to those outputs; the kernels are kernels/{cpu,cuda}/lora.hpp.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.hpp"
#include "kernels/cpu/weights_int4.hpp"
#include "nn/config.hpp"
#include "nn/gpt.hpp"
#include "nn/weights.hpp"

namespace aiopt::nn {

// Which layers carry adapters: `qv` the attention's query and value projections (the two slices
// of the fused c_attn), as the paper's GPT-3 experiments; `all` every block linear layer (c_attn
// whole, attn.c_proj, mlp.c_fc, mlp.c_proj).
enum class LoraTargets { qv, all };
std::string_view to_string(LoraTargets targets);
// InputError naming the allowed values.
LoraTargets parse_lora_targets(std::string_view name);

struct LoraConfig {
  std::size_t rank = 8;
  float alpha = 16.0f;
  LoraTargets targets = LoraTargets::qv;
  std::uint64_t seed = 1;  // A's initialization
  // QLoRA: the frozen block linear weights stored group-wise in int4 (symmetric, groups of
  // `int4_group` inputs) and dequantized one layer at a time in the pass. CPU only.
  bool int4_base = false;
  std::size_t int4_group = 64;

  float scale() const;  // alpha / rank
  // InputError naming the field: rank 0 or above min(in, out) of the smallest adapted slice of
  // `model`, alpha not finite and positive, a group that is not 32, 64 or 128 or does not divide
  // every layer's inputs.
  void validate(const GptConfig& model) const;
  nlohmann::json identity() const;
};

// One adapted slice of a block linear layer.
struct LoraSite {
  std::string name;  // "h.0.attn.c_attn.q", "h.1.mlp.c_fc", ...
  std::size_t layer = 0;
  BlockLinear linear = BlockLinear::attn_qkv;
  std::size_t offset = 0;  // first output row of W (first output column of y)
  std::size_t in = 0, out = 0;
  std::size_t out_total = 0;  // the layer's outputs: y's row stride
};
std::vector<LoraSite> lora_sites(const GptConfig& model, LoraTargets targets);

// The adapters of a model: per site A (rank, in) and B (out, rank), fp32 on one device.
class LoraAdapters {
 public:
  struct Adapter {
    LoraSite site;
    Tensor a, b;
  };

  LoraAdapters() = default;
  // The paper's initialization (kernels' lora_init: A Kaiming-uniform from config.seed and the
  // site's index, B zero). config is validated against `model`.
  static LoraAdapters initialize(const GptConfig& model, const LoraConfig& config, const Device& device);
  // Zero tensors of the same shapes: a gradient accumulator.
  LoraAdapters zeros_like() const;

  const LoraConfig& config() const { return config_; }
  const GptConfig& model() const { return model_; }
  std::vector<Adapter>& adapters() { return adapters_; }
  const std::vector<Adapter>& adapters() const { return adapters_; }
  // The adapters of block `layer`'s `linear`, in output order.
  std::vector<const Adapter*> at(std::size_t layer, BlockLinear linear) const;
  std::vector<Adapter*> at(std::size_t layer, BlockLinear linear);

  // "<site>.lora_a", "<site>.lora_b" for every site, in order.
  std::vector<std::pair<std::string, Tensor*>> named();
  std::vector<std::pair<std::string, const Tensor*>> named() const;
  std::size_t parameters() const;
  std::size_t bytes() const;
  void set_zero(void* stream = nullptr);
  void copy_from(const LoraAdapters& other);

  // W += scale·B·A in every adapted layer of `weights` (fp32, on the adapters' device); unmerge
  // subtracts it again.
  void merge_into(GptWeights& weights, void* stream = nullptr) const;
  void unmerge_from(GptWeights& weights, void* stream = nullptr) const;

  // One safetensors file: the tensors under named()'s names and the config in the metadata.
  void save(const std::string& path) const;
  // InputError naming the file when it is not an adapter file for `model`, or a tensor is missing
  // or misshapen.
  static LoraAdapters load(const std::string& path, const GptConfig& model, const Device& device);

 private:
  LoraConfig config_;
  GptConfig model_;
  std::vector<Adapter> adapters_;
};

// QLoRA's frozen base: every block linear weight of a model in int4 (kernels/cpu/weights_int4.hpp,
// symmetric), held on the host, dequantized to fp32 when a product needs it.
class Int4Base {
 public:
  Int4Base() = default;
  // From host fp32 weights. InputError for a group that does not divide a layer's inputs.
  static Int4Base quantize(const GptWeights& weights, std::size_t group);
  // W of block `layer`'s `linear`, dequantized into out (out_total, in).
  void dequantize(std::size_t layer, BlockLinear linear, float* out) const;
  std::size_t bytes() const;    // packed weights and scales
  std::size_t weights() const;  // how many weights it stores
  bool empty() const { return layers_.empty(); }

 private:
  std::vector<std::vector<kernels::cpu::Int4Matrix>> layers_;  // [layer][BlockLinear]
};

// The weight tensor of block `layer`'s `linear`, and its bias.
Tensor& block_linear_weight(BlockWeights& block, BlockLinear linear);
const Tensor& block_linear_weight(const BlockWeights& block, BlockLinear linear);
Tensor& block_linear_bias(BlockWeights& block, BlockLinear linear);
const Tensor& block_linear_bias(const BlockWeights& block, BlockLinear linear);
// A block linear layer's inputs and outputs in a model of `config`: W is (out, in).
struct LinearDims {
  std::size_t in = 0, out = 0;
};
LinearDims block_linear_dims(const GptConfig& config, BlockLinear linear);
// "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj".
std::string_view block_linear_name(BlockLinear linear);
inline constexpr BlockLinear block_linears[] = {BlockLinear::attn_qkv, BlockLinear::attn_proj, BlockLinear::mlp_fc,
                                                BlockLinear::mlp_proj};

}  // namespace aiopt::nn
