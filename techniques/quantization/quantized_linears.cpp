#include "techniques/quantization/quantized_linears.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <stdexcept>
#include <type_traits>

#include "core/fault.hpp"
#include "core/half.hpp"
#include "core/memory.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/weights_half.hpp"

namespace aiopt::quantization {

namespace cpu = kernels::cpu;

namespace {

constexpr std::size_t linears_per_block = 4;
// The block's linear layers' parameter names (after "h.N."), in BlockLinear order.
constexpr std::array<const char*, linears_per_block> linear_names = {"attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                                     "mlp.c_proj"};

std::size_t index(std::size_t layer, nn::BlockLinear which) {
  return layer * linears_per_block + static_cast<std::size_t>(which);
}

// The block's four (weight, bias) pairs in BlockLinear order.
template <class Block>
auto block_linears(Block& b) {
  using T = std::conditional_t<std::is_const_v<Block>, const Tensor, Tensor>;
  return std::array<std::pair<T*, T*>, linears_per_block>{{{&b.attn_c_attn_weight, &b.attn_c_attn_bias},
                                                           {&b.attn_c_proj_weight, &b.attn_c_proj_bias},
                                                           {&b.mlp_c_fc_weight, &b.mlp_c_fc_bias},
                                                           {&b.mlp_c_proj_weight, &b.mlp_c_proj_bias}}};
}

// Watches the inputs of the fp32 layers: max |x| per layer.
class Recorder : public nn::LinearLayers {
 public:
  explicit Recorder(const nn::GptWeights& w) : w_(w), max_abs_(w.blocks.size() * linears_per_block, 0.0f) {}
  void linear(std::size_t layer, nn::BlockLinear which, const float* x, float* y, std::size_t m) const override {
    const auto [weight, bias] = block_linears(w_.blocks[layer])[static_cast<std::size_t>(which)];
    const auto n = static_cast<std::size_t>(weight->shape()[0]), k = static_cast<std::size_t>(weight->shape()[1]);
    float& slot = max_abs_[index(layer, which)];
    for (std::size_t i = 0; i < m * k; ++i) slot = std::max(slot, std::abs(x[i]));
    cpu::linear(x, weight->data<float>(), bias->data<float>(), y, m, k, n);
  }
  const std::vector<float>& max_abs() const { return max_abs_; }

 private:
  const nn::GptWeights& w_;
  mutable std::vector<float> max_abs_;
};

}  // namespace

QuantizedLinears::QuantizedLinears(nn::GptWeights& weights, Format format, std::size_t group,
                                   cpu::Int4Mode mode, const StaticScales* scales, const nn::SafetensorsFile* source)
    : format_(format) {
  // A broken quantizer, for the tests: every stored scale 0 (the products become the biases).
  const bool zero_scales = fault::active("quantization.zero_scales");
  if (format == Format::fp32 || format == Format::fp8)
    throw std::invalid_argument("QuantizedLinears: fp32 and fp8 have no CPU model path");
  if (format == Format::int8_static && (!scales || scales->size() != weights.blocks.size() * linears_per_block))
    throw std::invalid_argument("QuantizedLinears: int8_static needs one calibrated scale per layer");
  for (std::size_t l = 0; l < weights.blocks.size(); ++l) {
    for (std::size_t which = 0; which < linears_per_block; ++which) {
      const auto [weight, bias] = block_linears(weights.blocks[l])[which];
      if (source) *weight = source->read_f32("h." + std::to_string(l) + "." + linear_names[which] + ".weight");
      Layer layer;
      layer.n = static_cast<std::size_t>(weight->shape()[0]);
      layer.k = static_cast<std::size_t>(weight->shape()[1]);
      layer.bias = bias->data<float>();
      const float* w = weight->data<float>();
      switch (format) {
        case Format::fp16:
        case Format::bf16:
          layer.half = memory::Buffer<std::uint16_t>(Device::cpu(), layer.n * layer.k);
          for (std::size_t i = 0; i < layer.half.size(); ++i)
            layer.half[i] = format == Format::fp16 ? float_to_f16(w[i]) : float_to_bf16(w[i]);
          break;
        case Format::int8_dynamic:
        case Format::int8_static: layer.int8 = cpu::quantize_pack_int8_weights(w, layer.n, layer.k); break;
        case Format::int4_weight_only: layer.int4 = cpu::quantize_int4(w, layer.n, layer.k, group, mode); break;
        default: break;
      }
      *weight = Tensor();
      if (zero_scales) {
        std::fill(layer.int8.scale.begin(), layer.int8.scale.end(), 0.0f);
        std::fill(layer.int4.scales.begin(), layer.int4.scales.end(), std::uint16_t{0});
      }
      if (format == Format::int8_static) layer.static_scale = (*scales)[layers_.size()];
      layers_.push_back(std::move(layer));
    }
  }
}

void QuantizedLinears::linear(std::size_t layer, nn::BlockLinear which, const float* x, float* y,
                              std::size_t m) const {
  const Layer& L = layers_.at(index(layer, which));
  switch (format_) {
    case Format::fp16:
    case Format::bf16:
      cpu::gemm_half(L.half.data(), format_ == Format::fp16 ? DType::f16 : DType::bf16, x, L.bias, y, m, L.n, L.k);
      return;
    case Format::int8_dynamic: {
      cpu::QuantizedActivations q(m, L.k);
      cpu::quantize_activations_dynamic(x, q);
      cpu::gemm_int8(q, L.int8, L.bias, y);
      return;
    }
    case Format::int8_static: {
      cpu::QuantizedActivations q(m, L.k);
      const cpu::ClipCount c = cpu::quantize_activations_static(x, L.static_scale, q);
      clipped_ += c.clipped;
      seen_ += c.total;
      cpu::gemm_int8(q, L.int8, L.bias, y);
      return;
    }
    case Format::int4_weight_only: cpu::gemm_int4(L.int4, x, L.bias, y, m); return;
    default: throw std::logic_error("QuantizedLinears: no product for this format");
  }
}

std::size_t QuantizedLinears::weight_bytes() const {
  std::size_t total = 0;
  for (const Layer& L : layers_)
    total += L.half.bytes() + (L.int8.n ? L.int8.bytes() : 0) + (L.int4.n ? L.int4.bytes() : 0);
  return total;
}

std::size_t fp32_linear_bytes(const nn::GptConfig& config) {
  return sizeof(float) * config.layers * 12 * config.channels * config.channels;
}

bool is_block_linear_weight(const std::string& name) {
  for (const char* linear : linear_names) {
    const std::string suffix = std::string(".") + linear + ".weight";
    if (name.rfind("h.", 0) == 0 && name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      return true;
  }
  return false;
}

StaticScales calibrate(nn::Gpt& model, std::span<const std::int32_t> tokens, std::size_t batch, std::size_t seq_len) {
  auto recorder = std::make_shared<Recorder>(model.weights());
  model.set_linear_layers(recorder);
  model.forward(tokens, batch, seq_len, nn::Logits::last);
  model.set_linear_layers(nullptr);
  StaticScales scales;
  for (float m : recorder->max_abs()) scales.push_back(cpu::int8_scale(m));
  return scales;
}

}  // namespace aiopt::quantization
