#include "nn/lora.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "nn/device_ops.hpp"
#include "nn/safetensors.hpp"

namespace aiopt::nn {

namespace {

constexpr const char* adapter_format = "aiopt-lora-1";

kernels::cpu::LoraShape shape_of(const LoraSite& site, std::size_t rank, std::size_t rows = 0) {
  return {rows, site.in, site.out, rank};
}

std::size_t index_of(BlockLinear linear) { return static_cast<std::size_t>(linear); }

}  // namespace

std::string_view to_string(LoraTargets targets) { return targets == LoraTargets::qv ? "qv" : "all"; }

LoraTargets parse_lora_targets(std::string_view name) {
  if (name == "qv") return LoraTargets::qv;
  if (name == "all") return LoraTargets::all;
  throw InputError("LoRA targets '" + std::string(name) + "' are unknown (allowed: qv, all)");
}

std::string_view block_linear_name(BlockLinear linear) {
  switch (linear) {
    case BlockLinear::attn_qkv: return "attn.c_attn";
    case BlockLinear::attn_proj: return "attn.c_proj";
    case BlockLinear::mlp_fc: return "mlp.c_fc";
    case BlockLinear::mlp_proj: return "mlp.c_proj";
  }
  return "?";
}

Tensor& block_linear_weight(BlockWeights& b, BlockLinear linear) {
  return const_cast<Tensor&>(block_linear_weight(static_cast<const BlockWeights&>(b), linear));
}

const Tensor& block_linear_weight(const BlockWeights& b, BlockLinear linear) {
  switch (linear) {
    case BlockLinear::attn_qkv: return b.attn_c_attn_weight;
    case BlockLinear::attn_proj: return b.attn_c_proj_weight;
    case BlockLinear::mlp_fc: return b.mlp_c_fc_weight;
    case BlockLinear::mlp_proj: break;
  }
  return b.mlp_c_proj_weight;
}

Tensor& block_linear_bias(BlockWeights& b, BlockLinear linear) {
  return const_cast<Tensor&>(block_linear_bias(static_cast<const BlockWeights&>(b), linear));
}

LinearDims block_linear_dims(const GptConfig& config, BlockLinear linear) {
  const std::size_t C = config.channels;
  switch (linear) {
    case BlockLinear::attn_qkv: return {C, 3 * C};
    case BlockLinear::attn_proj: return {C, C};
    case BlockLinear::mlp_fc: return {C, 4 * C};
    case BlockLinear::mlp_proj: break;
  }
  return {4 * C, C};
}

const Tensor& block_linear_bias(const BlockWeights& b, BlockLinear linear) {
  switch (linear) {
    case BlockLinear::attn_qkv: return b.attn_c_attn_bias;
    case BlockLinear::attn_proj: return b.attn_c_proj_bias;
    case BlockLinear::mlp_fc: return b.mlp_c_fc_bias;
    case BlockLinear::mlp_proj: break;
  }
  return b.mlp_c_proj_bias;
}

std::vector<LoraSite> lora_sites(const GptConfig& model, LoraTargets targets) {
  const std::size_t C = model.channels;
  std::vector<LoraSite> out;
  for (std::size_t l = 0; l < model.layers; ++l) {
    const std::string block = "h." + std::to_string(l) + ".";
    if (targets == LoraTargets::qv) {
      // c_attn's outputs are (3, H, d): the queries are rows [0, C) of W, the values [2C, 3C).
      out.push_back({block + "attn.c_attn.q", l, BlockLinear::attn_qkv, 0, C, C, 3 * C});
      out.push_back({block + "attn.c_attn.v", l, BlockLinear::attn_qkv, 2 * C, C, C, 3 * C});
      continue;
    }
    for (BlockLinear linear : block_linears) {
      const auto [in, outputs] = block_linear_dims(model, linear);
      out.push_back({block + std::string(block_linear_name(linear)), l, linear, 0, in, outputs, outputs});
    }
  }
  return out;
}

float LoraConfig::scale() const { return kernels::cpu::lora_scale(alpha, rank); }

void LoraConfig::validate(const GptConfig& model) const {
  std::size_t most = SIZE_MAX;
  for (const LoraSite& s : lora_sites(model, targets)) most = std::min({most, s.in, s.out});
  if (rank == 0 || rank > most)
    throw InputError("LoRA rank = " + std::to_string(rank) + "; allowed: 1 to " + std::to_string(most) +
                     ", the smallest min(in, out) of the adapted layers (" + std::string(to_string(targets)) + " of " +
                     model.describe() + "); a rank past that is no longer low");
  if (!(std::isfinite(alpha) && alpha > 0.0f)) {
    std::ostringstream m;
    m << "LoRA alpha = " << alpha << "; it must be finite and positive";
    throw InputError(m.str());
  }
  if (int4_base) {
    if (int4_group != 32 && int4_group != 64 && int4_group != 128)
      throw InputError("QLoRA group = " + std::to_string(int4_group) + "; allowed: 32, 64, 128");
    for (std::size_t in : {model.channels, 4 * model.channels})
      if (in % int4_group != 0)
        throw InputError("QLoRA group = " + std::to_string(int4_group) + " does not divide a layer's " +
                         std::to_string(in) + " inputs (" + model.describe() + ")");
  }
}

nlohmann::json LoraConfig::identity() const {
  nlohmann::json j = {{"rank", rank}, {"alpha", alpha}, {"targets", to_string(targets)}, {"seed", seed}};
  if (int4_base) j["int4_group"] = int4_group;
  return j;
}

// ---- the adapters

LoraAdapters LoraAdapters::initialize(const GptConfig& model, const LoraConfig& config, const Device& device) {
  config.validate(model);
  LoraAdapters out;
  out.config_ = config;
  out.model_ = model;
  const DeviceOps ops{device, nullptr};
  const auto r = static_cast<std::int64_t>(config.rank);
  std::uint64_t index = 0;
  for (const LoraSite& site : lora_sites(model, config.targets)) {
    Adapter a{site, Tensor::empty({r, static_cast<std::int64_t>(site.in)}, DType::f32, device),
              Tensor::empty({static_cast<std::int64_t>(site.out), r}, DType::f32, device)};
    ops.lora_init(a.a.data<float>(), a.b.data<float>(), rng::bits(config.seed, index++),
                  shape_of(site, config.rank));
    out.adapters_.push_back(std::move(a));
  }
  return out;
}

LoraAdapters LoraAdapters::zeros_like() const {
  LoraAdapters out;
  out.config_ = config_;
  out.model_ = model_;
  for (const Adapter& a : adapters_)
    out.adapters_.push_back({a.site, Tensor::zeros(a.a.shape(), DType::f32, a.a.device()),
                             Tensor::zeros(a.b.shape(), DType::f32, a.b.device())});
  return out;
}

std::vector<const LoraAdapters::Adapter*> LoraAdapters::at(std::size_t layer, BlockLinear linear) const {
  std::vector<const Adapter*> out;
  for (const Adapter& a : adapters_)
    if (a.site.layer == layer && a.site.linear == linear) out.push_back(&a);
  return out;
}

std::vector<LoraAdapters::Adapter*> LoraAdapters::at(std::size_t layer, BlockLinear linear) {
  std::vector<Adapter*> out;
  for (Adapter& a : adapters_)
    if (a.site.layer == layer && a.site.linear == linear) out.push_back(&a);
  return out;
}

std::vector<std::pair<std::string, Tensor*>> LoraAdapters::named() {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (Adapter& a : adapters_) {
    out.emplace_back(a.site.name + ".lora_a", &a.a);
    out.emplace_back(a.site.name + ".lora_b", &a.b);
  }
  return out;
}

std::vector<std::pair<std::string, const Tensor*>> LoraAdapters::named() const {
  std::vector<std::pair<std::string, const Tensor*>> out;
  for (const auto& [name, t] : const_cast<LoraAdapters*>(this)->named()) out.emplace_back(name, t);
  return out;
}

std::size_t LoraAdapters::parameters() const {
  std::size_t n = 0;
  for (const auto& [name, t] : named()) n += static_cast<std::size_t>(t->numel());
  return n;
}

std::size_t LoraAdapters::bytes() const { return parameters() * sizeof(float); }

void LoraAdapters::set_zero(void* stream) {
  for (auto& [name, t] : named()) t->set_zero(stream);
}

void LoraAdapters::copy_from(const LoraAdapters& other) {
  auto mine = named();
  const auto theirs = other.named();
  if (mine.size() != theirs.size()) throw std::invalid_argument("LoraAdapters::copy_from: different adapters");
  for (std::size_t i = 0; i < mine.size(); ++i) mine[i].second->copy_from(*theirs[i].second);
}

void LoraAdapters::merge_into(GptWeights& weights, void* stream) const {
  const DeviceOps ops{weights.wte.device(), stream};
  for (const Adapter& a : adapters_) {
    float* w = block_linear_weight(weights.blocks[a.site.layer], a.site.linear).data<float>() + a.site.offset * a.site.in;
    ops.lora_merge(w, a.a.data<float>(), a.b.data<float>(), config_.scale(), shape_of(a.site, config_.rank));
  }
}

void LoraAdapters::unmerge_from(GptWeights& weights, void* stream) const {
  const DeviceOps ops{weights.wte.device(), stream};
  for (const Adapter& a : adapters_) {
    float* w = block_linear_weight(weights.blocks[a.site.layer], a.site.linear).data<float>() + a.site.offset * a.site.in;
    ops.lora_unmerge(w, a.a.data<float>(), a.b.data<float>(), config_.scale(), shape_of(a.site, config_.rank));
  }
}

void LoraAdapters::save(const std::string& path) const {
  std::vector<Tensor> host;
  std::vector<std::pair<std::string, const Tensor*>> tensors;
  const auto all = named();
  host.reserve(all.size());
  for (const auto& [name, t] : all) {
    host.push_back(t->to(Device::cpu()));
    tensors.emplace_back(name, &host.back());
  }
  write_safetensors(path, tensors,
                    {{"format", adapter_format}, {"lora", config_.identity().dump()}, {"model", model_.describe()}});
}

LoraAdapters LoraAdapters::load(const std::string& path, const GptConfig& model, const Device& device) {
  const SafetensorsFile file(path);
  const auto& meta = file.metadata();
  const auto format = meta.find("format");
  if (format == meta.end() || format->second != adapter_format)
    throw InputError(path + ": not a LoRA adapter file (metadata 'format' is not " + adapter_format + ")");
  LoraConfig config;
  try {
    const nlohmann::json j = nlohmann::json::parse(meta.at("lora"));
    config.rank = j.at("rank").get<std::size_t>();
    config.alpha = j.at("alpha").get<float>();
    config.targets = parse_lora_targets(j.at("targets").get<std::string>());
    config.seed = j.at("seed").get<std::uint64_t>();
    if (j.contains("int4_group")) config.int4_base = true, config.int4_group = j.at("int4_group").get<std::size_t>();
  } catch (const std::exception& e) {
    throw InputError(path + ": unreadable LoRA metadata: " + e.what());
  }
  try {
    config.validate(model);
  } catch (const InputError& e) {
    throw InputError(path + ": " + e.what());
  }
  LoraAdapters out = initialize(model, config, device);
  for (auto& [name, t] : out.named()) {
    const Tensor host = file.read_f32(name);
    if (host.shape() != t->shape())
      throw InputError(path + ": tensor '" + name + "' is " + host.shape_string() + ", expected " + t->shape_string() +
                       " for " + model.describe());
    t->copy_from(host);
  }
  return out;
}

// ---- QLoRA's int4 base

Int4Base Int4Base::quantize(const GptWeights& weights, std::size_t group) {
  if (!weights.wte.device().is_cpu()) throw InputError("QLoRA's int4 base is quantized from weights on the CPU");
  Int4Base out;
  for (const BlockWeights& b : weights.blocks) {
    std::vector<kernels::cpu::Int4Matrix> layer;
    for (BlockLinear linear : block_linears) {
      const Tensor& w = block_linear_weight(b, linear);
      const auto n = static_cast<std::size_t>(w.shape()[0]), k = static_cast<std::size_t>(w.shape()[1]);
      if (k % group != 0)
        throw InputError("QLoRA group = " + std::to_string(group) + " does not divide " +
                         std::string(block_linear_name(linear)) + "'s " + std::to_string(k) + " inputs");
      layer.push_back(kernels::cpu::quantize_int4(w.data<float>(), n, k, group, kernels::cpu::Int4Mode::symmetric));
    }
    out.layers_.push_back(std::move(layer));
  }
  return out;
}

void Int4Base::dequantize(std::size_t layer, BlockLinear linear, float* out) const {
  kernels::cpu::dequantize_int4(layers_.at(layer).at(index_of(linear)), out);
}

std::size_t Int4Base::bytes() const {
  std::size_t n = 0;
  for (const auto& layer : layers_)
    for (const auto& m : layer) n += m.bytes();
  return n;
}

std::size_t Int4Base::weights() const {
  std::size_t n = 0;
  for (const auto& layer : layers_)
    for (const auto& m : layer) n += m.n * m.k;
  return n;
}

}  // namespace aiopt::nn
