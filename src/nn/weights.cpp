#include "nn/weights.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>

#include "core/rng.hpp"

namespace aiopt::nn {

namespace {

std::int64_t dim(std::size_t n) { return static_cast<std::int64_t>(n); }

Tensor f32(std::vector<std::int64_t> shape, const Device& device) {
  return Tensor::empty(std::move(shape), DType::f32, device);
}

// Every tensor in the fixed order of named(), for both constnesses.
template <class W, class Visit>
void visit_named(W& w, Visit&& visit) {
  // Every layer after the embeddings is a weight and its bias, named LAYER.weight, LAYER.bias.
  const auto layer = [&](const std::string& name, auto& weight, auto& bias) {
    visit(name + ".weight", weight);
    visit(name + ".bias", bias);
  };
  visit("wte", w.wte);
  visit("wpe", w.wpe);
  for (std::size_t l = 0; l < w.blocks.size(); ++l) {
    auto& b = w.blocks[l];
    const std::string h = "h." + std::to_string(l) + ".";
    layer(h + "ln_1", b.ln_1_weight, b.ln_1_bias);
    layer(h + "attn.c_attn", b.attn_c_attn_weight, b.attn_c_attn_bias);
    layer(h + "attn.c_proj", b.attn_c_proj_weight, b.attn_c_proj_bias);
    layer(h + "ln_2", b.ln_2_weight, b.ln_2_bias);
    layer(h + "mlp.c_fc", b.mlp_c_fc_weight, b.mlp_c_fc_bias);
    layer(h + "mlp.c_proj", b.mlp_c_proj_weight, b.mlp_c_proj_bias);
  }
  layer("ln_f", w.ln_f_weight, w.ln_f_bias);
}

// How GPT-2 initializes a parameter, read from its name.
enum class Init { normal, residual_normal, zeros, ones };

Init init_of(const std::string& name) {
  const auto ends_with = [&](std::string_view suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (name.find("ln_") != std::string::npos) return ends_with(".weight") ? Init::ones : Init::zeros;
  if (ends_with(".bias")) return Init::zeros;
  if (ends_with("attn.c_proj.weight") || ends_with("mlp.c_proj.weight")) return Init::residual_normal;
  return Init::normal;
}

// N(0, sigma²) by Box–Muller from two counter-based uniforms per pair of values, so the value of
// element i of tensor t depends only on (seed, t, i).
void fill_normal(std::span<float> x, std::uint64_t seed, float sigma) {
  constexpr double two_pi = 6.283185307179586;
  for (std::size_t i = 0; i < x.size(); i += 2) {
    // u1 in (0, 1]: log(0) is avoided.
    const double u1 = 1.0 - static_cast<double>(rng::uniform(seed, i));
    const double u2 = static_cast<double>(rng::uniform(seed, i + 1));
    const double r = std::sqrt(-2.0 * std::log(u1));
    x[i] = static_cast<float>(sigma * r * std::cos(two_pi * u2));
    if (i + 1 < x.size()) x[i + 1] = static_cast<float>(sigma * r * std::sin(two_pi * u2));
  }
}

}  // namespace

std::vector<std::pair<std::string, Tensor*>> GptWeights::named() {
  std::vector<std::pair<std::string, Tensor*>> out;
  visit_named(*this, [&](std::string name, Tensor& t) { out.emplace_back(std::move(name), &t); });
  return out;
}

std::vector<std::pair<std::string, const Tensor*>> GptWeights::named() const {
  std::vector<std::pair<std::string, const Tensor*>> out;
  visit_named(*this, [&](std::string name, const Tensor& t) { out.emplace_back(std::move(name), &t); });
  return out;
}

std::vector<std::int64_t> GptWeights::parameter_shape(const GptConfig& config, std::string_view name) {
  const auto c = dim(config.channels);
  if (name == "wte") return {dim(config.vocab), c};
  if (name == "wpe") return {dim(config.context), c};
  if (name.ends_with("attn.c_attn.weight")) return {3 * c, c};
  if (name.ends_with("attn.c_attn.bias")) return {3 * c};
  if (name.ends_with("attn.c_proj.weight")) return {c, c};
  if (name.ends_with("mlp.c_fc.weight")) return {4 * c, c};
  if (name.ends_with("mlp.c_fc.bias")) return {4 * c};
  if (name.ends_with("mlp.c_proj.weight")) return {c, 4 * c};
  return {c};  // LayerNorm weights and biases, the projections' biases
}

GptWeights GptWeights::allocate(const GptConfig& config, const Device& device) {
  config.validate();
  GptWeights w;
  w.config = config;
  w.blocks.resize(config.layers);
  for (auto& [name, t] : w.named()) *t = f32(parameter_shape(config, name), device);
  return w;
}

GptWeights GptWeights::initialize(const GptConfig& config, std::uint64_t seed, const Device& device) {
  GptWeights host = allocate(config, Device::cpu());
  // GPT-2 (Radford et al. 2019): the residual projections scaled by 1/sqrt(N) for the N = 2·layers
  // residual additions, so the residual stream's variance does not grow with depth.
  const float sigma = 0.02f;
  const float residual_sigma = sigma / std::sqrt(2.0f * static_cast<float>(config.layers));
  std::uint64_t index = 0;
  for (auto& [name, t] : host.named()) {
    std::span<float> x(t->data<float>(), static_cast<std::size_t>(t->numel()));
    // One stream per tensor: its seed mixes the model seed with the tensor's place in the order.
    const std::uint64_t tensor_seed = rng::bits(seed, index++);
    switch (init_of(name)) {
      case Init::normal: fill_normal(x, tensor_seed, sigma); break;
      case Init::residual_normal: fill_normal(x, tensor_seed, residual_sigma); break;
      case Init::zeros: std::fill(x.begin(), x.end(), 0.0f); break;
      case Init::ones: std::fill(x.begin(), x.end(), 1.0f); break;
    }
  }
  return device.is_cpu() ? std::move(host) : host.to(device);
}

GptWeights GptWeights::to(const Device& device) const {
  GptWeights out;
  out.config = config;
  out.blocks.resize(blocks.size());
  auto src = named();
  auto dst = out.named();
  for (std::size_t i = 0; i < src.size(); ++i) *dst[i].second = src[i].second->to(device);
  return out;
}

GptWeights GptWeights::zeros(const GptConfig& config, const Device& device) {
  GptWeights w = allocate(config, device);
  w.set_zero();
  return w;
}

void GptWeights::set_zero(void* stream) {
  for (auto& [name, t] : named()) t->set_zero(stream);
}

void GptWeights::copy_from(const GptWeights& other) {
  auto src = other.named();
  auto dst = named();
  if (src.size() != dst.size())
    throw std::invalid_argument("GptWeights::copy_from: " + std::to_string(src.size()) + " tensors into " +
                                std::to_string(dst.size()));
  for (std::size_t i = 0; i < src.size(); ++i) dst[i].second->copy_from(*src[i].second);
}

std::size_t GptWeights::bytes() const {
  std::size_t total = 0;
  for (const auto& [name, t] : named()) total += t->bytes();
  return total;
}

double max_relative_difference(const GptWeights& a, const GptWeights& b) {
  const GptWeights ah = a.to(Device::cpu()), bh = b.to(Device::cpu());
  const auto an = ah.named(), bn = bh.named();
  if (an.size() != bn.size())
    throw std::invalid_argument("max_relative_difference: " + std::to_string(an.size()) + " tensors against " +
                                std::to_string(bn.size()));
  double diff = 0.0, scale = 0.0;
  for (std::size_t t = 0; t < an.size(); ++t) {
    const Tensor& x = *an[t].second;
    const Tensor& y = *bn[t].second;
    if (x.shape() != y.shape())
      throw std::invalid_argument("max_relative_difference: tensor " + an[t].first + " " + x.shape_string() +
                                  " against " + y.shape_string());
    const float* xp = x.data<float>();
    const float* yp = y.data<float>();
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      if (!std::isfinite(xp[i]) || !std::isfinite(yp[i])) return std::numeric_limits<double>::quiet_NaN();
      diff = std::max(diff, std::fabs(static_cast<double>(xp[i]) - yp[i]));
      scale = std::max(scale, std::fabs(static_cast<double>(yp[i])));
    }
  }
  return scale > 0 ? diff / scale : diff;
}

}  // namespace aiopt::nn
