#include "nn/optimizer.hpp"

#include <cmath>
#include <cstring>
#include <string>

#include "core/error.hpp"
#include "core/spelling.hpp"
#include "kernels/cpu/optimizer.hpp"
#if AIOPT_HAVE_CUDA
#include "kernels/cuda/optimizer.hpp"
#endif

namespace aiopt::nn {

namespace {

std::vector<std::string> optimizer_names() { return {"adamw", "sgd"}; }

// A zeroed f32 tensor of `like`'s shape on its device: zeroed on the host and copied, so no
// device-specific fill is needed.
Tensor zeros_like(const Tensor& like) {
  Tensor host = Tensor::empty(like.shape(), DType::f32, Device::cpu());
  std::memset(host.data<float>(), 0, host.bytes());
  return like.device().is_cpu() ? std::move(host) : host.to(like.device());
}

#if !AIOPT_HAVE_CUDA
[[noreturn]] void no_cuda(const Tensor& t) {
  throw DeviceUnavailable("Optimizer: a tensor is on " + to_string(t.device()) + " but this build has no CUDA");
}
#endif

// Σ x² of one tensor on its device (double, a fixed order on either), read on the host after
// the work queued on `stream` (CUDA: the stream the gradients were written on).
double tensor_sum_of_squares(const Tensor& t, void* stream) {
  const auto n = static_cast<std::size_t>(t.numel());
  if (t.device().is_cpu()) return kernels::cpu::sum_of_squares(t.data<float>(), n);
#if AIOPT_HAVE_CUDA
  return kernels::cuda::sum_of_squares(t.data<float>(), n, stream);
#else
  (void)stream;
  no_cuda(t);
#endif
}

// The weights and gradients must pair up tensor for tensor: same names, shapes, dtype and device.
void check_same_structure(const std::vector<std::pair<std::string, Tensor*>>& params,
                          const std::vector<std::pair<std::string, const Tensor*>>& grads) {
  if (params.size() != grads.size())
    throw InputError("Optimizer: the gradients have " + std::to_string(grads.size()) + " tensors, the weights " +
                     std::to_string(params.size()));
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& [name, p] = params[i];
    const Tensor& g = *grads[i].second;
    if (grads[i].first != name || g.shape() != p->shape() || g.dtype() != DType::f32 || p->dtype() != DType::f32 ||
        g.device() != p->device())
      throw InputError("Optimizer: gradient " + in_quotes(grads[i].first) + " " + g.shape_string() + " " +
                       to_string(g.dtype()) + " on " + to_string(g.device()) + " does not match weight " +
                       in_quotes(name) + " " + p->shape_string() + " " + to_string(p->dtype()) + " on " +
                       to_string(p->device()));
  }
}

}  // namespace

std::string_view to_string(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::adamw: return "adamw";
    case OptimizerKind::sgd: return "sgd";
  }
  return "?";
}

OptimizerKind parse_optimizer(std::string_view name) {
  if (name == "adamw") return OptimizerKind::adamw;
  if (name == "sgd") return OptimizerKind::sgd;
  const auto names = optimizer_names();
  throw InputError("optimizer " + in_quotes(name) + " is unknown" + did_you_mean(name, names) +
                   "; allowed: " + join_names(names));
}

std::vector<Trainable> trainables(GptWeights& params, const GptWeights& grads) {
  auto p_named = params.named();
  const auto g_named = grads.named();
  check_same_structure(p_named, g_named);
  std::vector<Trainable> out;
  for (std::size_t i = 0; i < p_named.size(); ++i) out.push_back({p_named[i].first, p_named[i].second, g_named[i].second});
  return out;
}

Optimizer::Optimizer(const OptimizerConfig& config, const std::vector<std::pair<std::string, const Tensor*>>& weights)
    : config_(config) {
  for (const auto& [name, p] : weights) {
    if (p->dtype() != DType::f32)
      throw InputError("Optimizer: weight " + in_quotes(name) + " is " + to_string(p->dtype()) +
                       "; the optimizer updates f32 master weights");
    names_.push_back(name);
    slot1_.push_back(zeros_like(*p));
    if (config_.kind == OptimizerKind::adamw) slot2_.push_back(zeros_like(*p));
  }
}

OptimizerStep Optimizer::step(GptWeights& params, const GptWeights& grads, float lr, float grad_scale, void* stream) {
  return step(trainables(params, grads), lr, grad_scale, stream);
}

OptimizerStep Optimizer::step(const std::vector<Trainable>& trainable, float lr, float grad_scale, void* stream) {
  if (trainable.size() != names_.size())
    throw InputError("Optimizer: " + std::to_string(trainable.size()) + " tensors to update, the optimizer state " +
                     std::to_string(names_.size()));
  std::vector<const Tensor*> grads;
  for (std::size_t i = 0; i < trainable.size(); ++i) {
    const Trainable& t = trainable[i];
    if (t.name != names_[i] || t.weight->shape() != slot1_[i].shape() || t.weight->device() != slot1_[i].device())
      throw InputError("Optimizer: weight " + in_quotes(t.name) + " " + t.weight->shape_string() +
                       " does not match the optimizer state made for " + in_quotes(names_[i]) + " " +
                       slot1_[i].shape_string());
    if (t.grad->shape() != t.weight->shape() || t.grad->dtype() != DType::f32 || t.grad->device() != t.weight->device())
      throw InputError("Optimizer: gradient of " + in_quotes(t.name) + " " + t.grad->shape_string() + " " +
                       to_string(t.grad->dtype()) + " on " + to_string(t.grad->device()) + " does not match its weight " +
                       t.weight->shape_string() + " on " + to_string(t.weight->device()));
    grads.push_back(t.grad);
  }

  OptimizerStep out;
  out.grad_norm = std::abs(static_cast<double>(grad_scale)) * global_norm(grads, stream);
  float scale = grad_scale;
  // Clipping (Pascanu et al. 2013) rescales the whole gradient to norm clip_norm; folded into the
  // scale every update reads the gradient with. A non-finite norm is left alone so that the
  // weights show it rather than a silently zeroed step.
  if (config_.clip_norm > 0.0f && std::isfinite(out.grad_norm) && out.grad_norm > config_.clip_norm) {
    scale = static_cast<float>(static_cast<double>(grad_scale) * config_.clip_norm / out.grad_norm);
    out.clipped = true;
  }

  ++steps_;
  for (std::size_t i = 0; i < trainable.size(); ++i) {
    Tensor& p = *trainable[i].weight;
    const Tensor& g = *trainable[i].grad;
    const auto n = static_cast<std::size_t>(p.numel());
    // Decay only matrices and embeddings: shrinking biases and LayerNorm gains toward 0 only hurts.
    const float wd = p.shape().size() == 2 ? config_.weight_decay : 0.0f;
    if (config_.kind == OptimizerKind::adamw) {
      const kernels::cpu::AdamW h{lr, config_.beta1, config_.beta2, config_.eps, wd, steps_};
      if (p.device().is_cpu()) {
        kernels::cpu::adamw_update(p.data<float>(), g.data<float>(), slot1_[i].data<float>(),
                                   slot2_[i].data<float>(), n, h, scale);
      } else {
#if AIOPT_HAVE_CUDA
        kernels::cuda::adamw_update(p.data<float>(), g.data<float>(), slot1_[i].data<float>(),
                                    slot2_[i].data<float>(), n, h, scale, stream);
#else
        no_cuda(p);
#endif
      }
    } else {
      if (p.device().is_cpu()) {
        kernels::cpu::sgd_update(p.data<float>(), g.data<float>(), slot1_[i].data<float>(), n, lr,
                                 config_.momentum, wd, scale);
      } else {
#if AIOPT_HAVE_CUDA
        kernels::cuda::sgd_update(p.data<float>(), g.data<float>(), slot1_[i].data<float>(), n, lr,
                                  config_.momentum, wd, scale, stream);
#else
        no_cuda(p);
#endif
      }
    }
  }
  return out;
}

std::vector<std::pair<std::string, Tensor*>> Optimizer::state() {
  std::vector<std::pair<std::string, Tensor*>> out;
  const std::string kind(to_string(config_.kind));
  const std::string slot1 = config_.kind == OptimizerKind::adamw ? ".m." : ".momentum.";
  for (std::size_t i = 0; i < names_.size(); ++i) out.emplace_back(kind + slot1 + names_[i], &slot1_[i]);
  for (std::size_t i = 0; i < slot2_.size(); ++i) out.emplace_back(kind + ".v." + names_[i], &slot2_[i]);
  return out;
}

std::vector<std::pair<std::string, const Tensor*>> Optimizer::state() const {
  std::vector<std::pair<std::string, const Tensor*>> out;
  for (const auto& [name, t] : const_cast<Optimizer&>(*this).state()) out.emplace_back(name, t);
  return out;
}

std::size_t Optimizer::state_bytes() const {
  std::size_t bytes = 0;
  for (const auto* slots : {&slot1_, &slot2_})
    for (const Tensor& t : *slots) bytes += t.bytes();
  return bytes;
}

double global_norm(const std::vector<const Tensor*>& grads, void* stream) {
  double sum = 0.0;
  for (const Tensor* g : grads) sum += tensor_sum_of_squares(*g, stream);
  return std::sqrt(sum);
}

double global_norm(const GptWeights& grads, void* stream) {
  std::vector<const Tensor*> all;
  for (const auto& [name, g] : grads.named()) all.push_back(g);
  return global_norm(all, stream);
}

}  // namespace aiopt::nn
