#pragma once
// The GPT's block linear layers stored in a quantized format, for the model level of the
// technique (README.md beside this file): the weights of every c_attn, attn c_proj, c_fc and mlp
// c_proj quantized once, and their products run through the CPU kernels of that format. The
// embeddings, the tied LM head, LayerNorm and the biases stay fp32.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/memory.hpp"
#include "kernels/cpu/gemm_int8.hpp"
#include "kernels/cpu/quantize.hpp"
#include "kernels/cpu/weights_int4.hpp"
#include "nn/gpt.hpp"
#include "nn/safetensors.hpp"
#include "nn/weights.hpp"
#include "techniques/quantization/quantization.hpp"

namespace aiopt::quantization {

// One static activation scale per block linear layer, (layer · 4 + BlockLinear) order.
using StaticScales = std::vector<float>;

class QuantizedLinears : public nn::LinearLayers {
 public:
  // `format` fp16, bf16, int8_dynamic, int8_static (with `scales`), int4_weight_only (group,
  // mode); std::invalid_argument for fp32 and fp8 or missing scales. Host weights. Each layer's
  // fp32 weight tensor is freed once stored in the format (so the model holds its format's bytes
  // alone); the biases stay, and `weights` must outlive this object. With `source`, the linear
  // weights are absent from `weights` (nn::load_checkpoint_except) and each is read from that
  // file in turn, so a single fp32 layer is live at a time.
  QuantizedLinears(nn::GptWeights& weights, Format format, std::size_t group, kernels::cpu::Int4Mode mode,
                   const StaticScales* scales = nullptr, const nn::SafetensorsFile* source = nullptr);

  void linear(std::size_t layer, nn::BlockLinear which, const float* x, float* y, std::size_t m) const override;

  // Bytes of the replaced layers' stored weights with their scales (biases not included).
  std::size_t weight_bytes() const;
  // int8_static: the activations that saturated since construction.
  kernels::cpu::ClipCount clipped() const { return {clipped_.load(), seen_.load()}; }

 private:
  struct Layer {
    std::size_t n = 0, k = 0;
    const float* bias = nullptr;  // into the fp32 weights, which must outlive this object
    memory::Buffer<std::uint16_t> half;  // fp16 / bf16 bits (n, k)
    kernels::cpu::PackedInt8Weights int8;
    kernels::cpu::Int4Matrix int4;
    float static_scale = 0.0f;
  };
  Format format_;
  std::vector<Layer> layers_;  // (layer · 4 + which)
  mutable std::atomic<std::size_t> clipped_{0}, seen_{0};
};

// The fp32 block linear layers' bytes (weights only), the figure weight_bytes() is read against:
// 4 bytes × layers × (3C·C + C·C + 4C·C + C·4C).
std::size_t fp32_linear_bytes(const nn::GptConfig& config);
// Whether the parameter `name` is a block linear layer's weight (what QuantizedLinears stores).
bool is_block_linear_weight(const std::string& name);

// Static scales from the fp32 model on calibration windows: each layer's max |input| / 127 over
// `tokens` (batch of seq_len windows, row-major).
StaticScales calibrate(nn::Gpt& model, std::span<const std::int32_t> tokens, std::size_t batch, std::size_t seq_len);

}  // namespace aiopt::quantization
