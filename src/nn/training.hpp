#pragma once
// One training pass of the GPT: the forward that keeps what the backward needs, the fused
// softmax cross-entropy, and the hand-written backward through every layer (DESIGN.md "The
// model"). What the forward keeps is a policy, which is what gradient checkpointing
// (TECHNIQUES.md §5) varies, and the storage precision of activations and gradients is another,
// which is what mixed precision (§6) varies. Every activation is a tensor from the tracked
// allocator, so a memory scope around a pass sees its real peak.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "core/dtype.hpp"
#include "kernels/cpu/distillation_loss.hpp"
#include "nn/batches.hpp"
#include "nn/lora.hpp"
#include "nn/gpt.hpp"
#include "nn/weights.hpp"

namespace aiopt::nn {

enum class TrainAttention {
  flash,  // tiled forward saving the log-sum-exp; the backward recomputes P tile by tile
  naive,  // the (B, H, T, T) scores materialized in the forward and recomputed in the backward
  // Causal linear attention (kernels/cpu/linear_attention*.hpp), CPU only: a different model, not
  // an implementation of softmax attention, so a model trained with it is evaluated with it.
  linear_elu,  // φ(x) = elu(x) + 1 on q and k (Katharopoulos et al. 2020)
  performer,   // FAVOR+ with performer_features(d) fixed orthogonal random features per layer
};
std::string_view to_string(TrainAttention attention);
// Throws InputError for an unknown name and for linformer, which is not causal.
TrainAttention parse_train_attention(std::string_view name);
// Whether the attention is exact softmax attention (flash, naive): what the model's forward
// (nn/gpt.hpp: generation, the KV cache) computes.
bool is_softmax(TrainAttention attention);
// performer's m, the random features per head: 4·d (Choromanski et al. 2021 use m = Θ(d log d);
// 4·d is above d·ln d for every d <= 54, and the variance of the estimate falls as 1/m).
std::size_t performer_features(std::size_t head_dim);

struct TrainingOptions {
  TrainAttention attention = TrainAttention::flash;
  // 0: every block keeps all its activations (store_all). k > 0: only the residual stream entering
  // every k-th block is kept; the backward re-runs each segment of k blocks forward, keeping its
  // activations, just before going back through it (Chen et al. 2016).
  std::size_t checkpoint_every = 0;
  // Selective recomputation: blocks keep the outputs of their matrix products but not the cheap,
  // large ones (the LayerNorm outputs, the GELU output, the merged attention heads), which the
  // backward recomputes from what was kept (Korthikanti et al. 2022).
  bool selective = false;
  // f16 or bf16: activations, activation gradients, the weights the products read and the
  // parameter gradients are rounded to this format wherever a mixed-precision implementation
  // stores them (kernels/cpu/precision.hpp); arithmetic and accumulation stay fp32. f32: none.
  DType storage = DType::f32;
  // performer: seed of the random projections W (m × d), one per layer drawn from
  // rng::bits(feature_seed, layer) and fixed for the whole run.
  std::uint64_t feature_seed = 1;

  // Quantization-aware training (fake quantization with the straight-through estimator): when
  // set, `apply` replaces the weights the products read, a copy of the fp32 master weights, with
  // their quantize-dequantize round trip before every pass. The backward treats the rounding as
  // the identity, so the gradient at the rounded weights updates the fp32 master weights (Jacob
  // et al. 2018). `name` identifies the rounding in a training configuration.
  struct FakeQuant {
    std::string name;
    std::function<void(GptWeights&)> apply;
  } fake_quant;

  // Knowledge distillation (Hinton, Vinyals & Dean 2015): with a teacher, the loss is
  // kernels/cpu/distillation_loss.hpp's α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE, t the
  // teacher's logits for the same inputs from the inference forward (nn/gpt.hpp, Logits::all),
  // which takes no gradient. The teacher lives on the student's device with its vocabulary, and
  // every target of a batch it teaches must be counted (>= 0): a soft target has no "ignored" row.
  struct Distill {
    std::shared_ptr<Gpt> teacher;  // null: plain cross-entropy
    kernels::cpu::Distillation loss;
  } distill;

  // Throws InputError for a storage other than f32, f16 or bf16, and for a distillation
  // temperature or alpha outside kernels::cpu::check_distillation's bounds.
  void validate() const;
};

// What fine-tuning adds to a pass (nn/lora.hpp): low-rank adapters on the block linear layers,
// their gradient accumulator (needed by forward_backward), and QLoRA's int4 base, which stands in
// for the block linear weights (then left empty in the GptWeights; CPU only). A frozen parameter
// is one whose tensor in `grads` is empty: it gets no gradient.
struct Adaptation {
  const LoraAdapters* adapters = nullptr;
  LoraAdapters* grads = nullptr;
  const Int4Base* base = nullptr;
};

struct PassResult {
  // Mean over the batch's targets of the loss the pass differentiates, nats per token: the
  // cross-entropy, or under options.distill the distillation loss.
  double loss = 0.0;
};

// Forward and backward over one batch: grads += grad_scale · ∂(mean loss)/∂weights, and the same
// into adaptation.grads for the adapters. grad_scale carries a mixed-precision loss scale and the
// 1/k of k accumulated micro-batches. grads: the weights' config, on their device, with empty
// tensors for frozen parameters. Throws InputError for tokens outside the vocabulary, a sequence
// longer than the context, or a grads structure that differs; under distillation also for a
// teacher on another device, with another vocabulary or a shorter context, and for an uncounted
// target.
PassResult forward_backward(const GptWeights& weights, const Batch& batch, GptWeights& grads,
                            const TrainingOptions& options, float grad_scale = 1.0f, void* stream = nullptr,
                            const Adaptation& adaptation = {});

// Gradient tensors for `config` on `device`: zeros where `trainable(name)` holds (GptWeights'
// names), empty (frozen) elsewhere.
GptWeights gradients_for(const GptConfig& config, const Device& device,
                         const std::function<bool(const std::string&)>& trainable);

// Zero and non-finite entries over every gradient tensor: fp16 underflow shows as zeros, overflow
// as inf/NaN.
struct GradientCensus {
  std::size_t elements = 0;
  std::size_t zeros = 0;
  std::size_t nonfinite = 0;
  double zero_fraction() const { return elements ? static_cast<double>(zeros) / static_cast<double>(elements) : 0.0; }
};
// Frozen (empty) tensors are not counted; the adapters' gradients are, when given.
GradientCensus gradient_census(const GptWeights& grads, void* stream = nullptr, const LoraAdapters* adapter_grads = nullptr);

// The forward only: mean cross-entropy of the batch's targets (for evaluation), with `options`'
// attention (and feature_seed); the rest of options is not used: evaluation reads the fp32
// weights and stores in fp32.
double evaluate_loss(const GptWeights& weights, const Batch& batch, const TrainingOptions& options = {},
                     void* stream = nullptr, const Adaptation& adaptation = {});

// The forward's logits (batch.batch, batch.seq_len, vocab) on the weights' device, with the
// adaptation's adapters and base (fp32, the options' attention): what an unmerged adapted model
// computes. batch.targets are not read.
Tensor forward_logits(const GptWeights& weights, const Batch& batch, const TrainingOptions& options = {},
                      void* stream = nullptr, const Adaptation& adaptation = {});

}  // namespace aiopt::nn
