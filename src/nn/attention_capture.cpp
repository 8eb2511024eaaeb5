#include "nn/attention_capture.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "core/error.hpp"
#include "nn/batches.hpp"
#include "nn/device_ops.hpp"
#include "nn/gpt.hpp"
#include "nn/model_cache.hpp"
#include "nn/trainer.hpp"

namespace aiopt::nn {

namespace {

// The blocks' linear layers computed as the model computes them with its fp32 weights (the same
// DeviceOps::linear call, so every output is bit for bit the plain forward's), keeping a copy of
// block `layer`'s QKV projection output and of its attention output, the input of attn.c_proj.
class CapturingLinears : public LinearLayers {
 public:
  CapturingLinears(const GptWeights& weights, std::size_t layer) : weights_(weights), layer_(layer) {}

  void linear(std::size_t layer, BlockLinear which, const float* x, float* y, std::size_t m) const override {
    const BlockWeights& b = weights_.blocks[layer];
    const Tensor& w = which == BlockLinear::attn_qkv    ? b.attn_c_attn_weight
                      : which == BlockLinear::attn_proj ? b.attn_c_proj_weight
                      : which == BlockLinear::mlp_fc    ? b.mlp_c_fc_weight
                                                        : b.mlp_c_proj_weight;
    const Tensor& bias = which == BlockLinear::attn_qkv    ? b.attn_c_attn_bias
                         : which == BlockLinear::attn_proj ? b.attn_c_proj_bias
                         : which == BlockLinear::mlp_fc    ? b.mlp_c_fc_bias
                                                           : b.mlp_c_proj_bias;
    const auto out_features = static_cast<std::size_t>(w.shape()[0]), in_features = static_cast<std::size_t>(w.shape()[1]);
    const DeviceOps ops{weights_.wte.device(), nullptr};
    ops.linear(x, w.data<float>(), bias.data<float>(), y, m, in_features, out_features);
    if (layer != layer_) return;
    if (which == BlockLinear::attn_qkv) qkv_.assign(y, y + m * out_features);  // (B, T, 3, H, d)
    if (which == BlockLinear::attn_proj) attention_.assign(x, x + m * in_features);  // (B, T, H·d)
  }

  const std::vector<float>& qkv() const { return qkv_; }
  const std::vector<float>& attention() const { return attention_; }

 private:
  const GptWeights& weights_;
  std::size_t layer_;
  mutable std::vector<float> qkv_, attention_;
};

}  // namespace

AttentionCapture capture_attention(Gpt& model, std::span<const std::int32_t> tokens, std::size_t batch,
                                   std::size_t len, std::size_t layer) {
  const GptConfig& cfg = model.config();
  if (layer >= cfg.layers)
    throw InputError("attention capture: layer " + std::to_string(layer) + " is not a block of the model (" +
                     cfg.describe() + "); allowed: 0 to " + std::to_string(cfg.layers - 1));
  if (!model.device().is_cpu())
    throw InputError("attention capture: the model is on " + to_string(model.device()) + "; it runs on the CPU");
  auto capture = std::make_shared<CapturingLinears>(model.weights(), layer);
  model.set_linear_layers(capture);
  try {
    model.forward(tokens, batch, len, Logits::last);
  } catch (...) {
    model.set_linear_layers(nullptr);
    throw;
  }
  model.set_linear_layers(nullptr);

  const std::size_t H = cfg.heads, d = cfg.head_dim(), n = batch * H * len * d;
  const Device host = Device::cpu();
  AttentionCapture c{kernels::AttentionShape::self(batch, H, len, d, true), memory::Buffer<float>(host, n),
                     memory::Buffer<float>(host, n), memory::Buffer<float>(host, n), memory::Buffer<float>(host, n)};
  // As the model splits them (Gpt::step): q to (B, H, T, d), k and v into a cache of exactly len
  // positions, which is the same layout.
  kernels::cpu::split_qkv(capture->qkv().data(), c.q.data(), c.k.data(), c.v.data(), batch, len, H, d, len, 0);
  kernels::cpu::split_heads(capture->attention().data(), c.out.data(), batch, len, H, d);
  return c;
}

AttentionCapture capture_trained_attention(const std::string& preset, std::size_t layer, std::size_t batch,
                                           std::size_t len) {
  const TrainConfig recipe = standard_training(preset);
  if (len > recipe.model.context)
    throw InputError("attention capture: a window of " + std::to_string(len) + " tokens exceeds the " + preset +
                     " model's context of " + std::to_string(recipe.model.context));
  if (layer >= recipe.model.layers)
    throw InputError("attention capture: layer " + std::to_string(layer) + " is not a block of the " + preset +
                     " model (" + recipe.model.describe() + "); allowed: 0 to " +
                     std::to_string(recipe.model.layers - 1));
  const TokenSplit tokens = load_tokens(recipe.data, len);
  const Batch windows = validation_batches(tokens.validation, batch, len, 1).at(0);
  Gpt model(trained_model(recipe, Device::cpu()).weights);
  return capture_attention(model, windows.inputs, batch, len, layer);
}

}  // namespace aiopt::nn
