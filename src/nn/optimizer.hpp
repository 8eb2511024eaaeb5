#pragma once
// The optimizers that update fp32 master weights from their gradients: AdamW and SGD with
// momentum, with gradient clipping by global norm. They work on a list of trainable tensors (every
// GPT weight, or a subset with the rest frozen: adapters, a head), and state tensors (fp32) exist
// for those alone, on their device beside them, named for checkpoints so that a resumed run
// continues exactly.
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/tensor.hpp"
#include "nn/weights.hpp"

namespace aiopt::nn {

enum class OptimizerKind { adamw, sgd };
// "adamw", "sgd"; parse throws InputError with the allowed names.
std::string_view to_string(OptimizerKind kind);
OptimizerKind parse_optimizer(std::string_view name);

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::adamw;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  // Decoupled, applied to matrices and embeddings (rank-2 tensors) only, not to biases and
  // LayerNorm parameters (GPT-2/3 practice).
  float weight_decay = 0.1f;
  float momentum = 0.9f;   // sgd
  float clip_norm = 1.0f;  // global L2 norm of the gradient; 0 turns clipping off
};

struct OptimizerStep {
  double grad_norm = 0.0;  // global L2 norm of grad_scale·grads, before clipping
  bool clipped = false;
};

// One tensor the optimizer updates, by name, with the gradient it reads (same shape and device).
struct Trainable {
  std::string name;
  Tensor* weight = nullptr;
  const Tensor* grad = nullptr;
};

// Every tensor of `params` paired with its gradient in `grads`. Throws InputError when the two
// differ in names, shapes, dtypes or devices.
std::vector<Trainable> trainables(GptWeights& params, const GptWeights& grads);

class Optimizer {
 public:
  // State zeroed for each named weight on its device (AdamW: m and v; SGD: the momentum buffer):
  // the weights to train, nothing for the frozen ones.
  Optimizer(const OptimizerConfig& config, const std::vector<std::pair<std::string, const Tensor*>>& weights);
  Optimizer(const OptimizerConfig& config, const GptWeights& params) : Optimizer(config, params.named()) {}

  // One update with learning rate `lr` from grad_scale·grads (grad_scale unscales a mixed-precision
  // loss scale or averages accumulated micro-batches). Clips the global norm to clip_norm first by
  // folding the factor into grad_scale. grads: same config and device as params. Does not touch
  // grads. Throws InputError when the structures differ. CUDA: the norm and the updates run on
  // `stream` (a cudaStream_t; nullptr: the legacy default stream), the one the gradients were
  // written on, so that the norm the host reads includes them.
  OptimizerStep step(GptWeights& params, const GptWeights& grads, float lr, float grad_scale = 1.0f,
                     void* stream = nullptr);
  // The same over `trainable`, which must name the tensors the optimizer was made for, in order.
  // The norm clipped is theirs alone: frozen tensors have no gradient.
  OptimizerStep step(const std::vector<Trainable>& trainable, float lr, float grad_scale = 1.0f,
                     void* stream = nullptr);

  const OptimizerConfig& config() const { return config_; }
  std::int64_t steps_taken() const { return steps_; }
  void set_steps_taken(std::int64_t steps) { steps_ = steps; }
  // State tensors named "<kind>.<slot>.<parameter name>", e.g. "adamw.m.h.0.attn.c_attn.weight".
  std::vector<std::pair<std::string, Tensor*>> state();
  std::vector<std::pair<std::string, const Tensor*>> state() const;
  // The state tensors' bytes: what training a tensor costs beyond its weight and gradient.
  std::size_t state_bytes() const;

 private:
  OptimizerConfig config_;
  std::int64_t steps_ = 0;
  std::vector<std::string> names_;
  std::vector<Tensor> slot1_;  // AdamW m, SGD momentum buffer; one per parameter, in named() order
  std::vector<Tensor> slot2_;  // AdamW v
};

// Global L2 norm over every gradient tensor (double; a fixed summation order), read after the
// work queued on `stream` (CUDA).
double global_norm(const GptWeights& grads, void* stream = nullptr);
double global_norm(const std::vector<const Tensor*>& grads, void* stream = nullptr);

}  // namespace aiopt::nn
