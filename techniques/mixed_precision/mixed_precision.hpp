#pragma once
// mixed_precision: numerical stability vs speed and memory (TECHNIQUES.md §6). The model trains
// for a fixed budget with activations, activation gradients, the weights the products read and
// the parameter gradients stored in fp32 (baseline), fp16 without, with a static or with a dynamic
// loss scale, or bf16; master weights and AdamW's state stay fp32 (Micikevicius et al. 2018).
// On the CPU the 16-bit storage is emulated: values are rounded to the format and kept in fp32
// (nn/training.hpp), so training sees what 16-bit tensors would hold but memory does not drop.
// See README.md beside this file.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "core/dtype.hpp"
#include "harness/technique.hpp"
#include "harness/variant_table.hpp"
#include "nn/trainer.hpp"

namespace aiopt {

// The technique, as techniques/registry.cpp lists it.
std::unique_ptr<Technique> make_mixed_precision();

// The pieces the run and the tests share.
namespace mixed_precision {

enum class Precision { fp32, fp16_no_scaling, fp16_static_scaling, fp16_dynamic_scaling, bf16 };
const VariantTable<Precision>& precisions();  // the variants, one per precision
inline Precision parse_precision(const std::string& variant) { return precisions().parse(variant); }
inline const std::string& to_string(Precision precision) { return precisions().name(precision); }
DType storage(Precision precision);            // f32, f16 or bf16
nn::LossScaling scaling(Precision precision);  // none, fixed or dynamic


// The training run of one case for `precision`, parsed and checked: the model, batch, seq_len,
// steps, AdamW under warmup_cosine (warmup a tenth of the budget, down to lr/10), the storage
// precision and the loss scaler (static: loss_scale; dynamic: initial_scale, halved on overflow,
// doubled after growth_interval clean steps). Throws InputError naming the parameter.
nn::TrainConfig train_config(const Case& c, Precision precision);

// The tolerance on |final validation loss − fp32's| for the variants that must track fp32 (fp16
// with a loss scale, bf16): max(gap_tolerance_nats, gap_tolerance_relative × fp32's loss). See
// README.md "Tolerance" for the measured gaps it is set from.
inline constexpr double gap_tolerance_nats = 0.05;
inline constexpr double gap_tolerance_relative = 0.03;
double gap_tolerance(double fp32_val_loss);
bool must_track_fp32(Precision precision);

// Mean of the last max(1, n/10) losses: the final training loss, less noisy than one batch's.
// NaN when any of them is NaN.
double final_train_loss(const std::vector<nn::StepRecord>& history);

// One budget trained from a fresh initialization, as finish() reports it.
struct Outcome {
  std::vector<nn::StepRecord> history;
  std::vector<nn::EvalRecord> evals;
  double final_val_loss = 0.0;
  float final_loss_scale = 1.0f;
};
Outcome train_budget(const nn::TrainConfig& config, const nn::TokenSplit& tokens, const Device& device,
                     void* stream = nullptr);

// The variant's first applied step against fp32 at the same weights (the initialization: skipped
// steps do not move them) on the same batch. `loss` and `grad_norm` are what the trainer recorded:
// the step's loss and the norm of the gradient the optimizer applied, unscaled. The entries are
// compared where fp32's gradient, times the step's loss scale, is at least fp16's smallest normal
// 2^-14 (bf16 has fp32's range: every nonzero entry); below it fp16 keeps fewer bits or none.
struct StepAgreement {
  std::size_t step = 0;  // 1-based
  double loss = 0.0, fp32_loss = 0.0;
  double grad_norm = 0.0, fp32_grad_norm = 0.0;
  double grad_error = 0.0;            // ‖g − g₃₂‖ / ‖g₃₂‖ over the compared entries, g unscaled
  double below_normal_fraction = 0.0;  // nonzero fp32 entries not compared
  double flushed_fraction = 0.0;       // nonzero fp32 entries the variant holds as exactly 0
  double below_normal_norm = 0.0;      // √(entries below)·2^-14/S: the most they move the norm by
};
StepAgreement first_step_agreement(const nn::TrainConfig& config, const nn::TrainConfig& fp32,
                                   const nn::TokenSplit& tokens, const std::vector<nn::StepRecord>& history,
                                   const Device& device);

// Roundings to the storage format on the path from the weights to the loss (forward) and to a
// parameter gradient (forward and backward) in nn/training.cpp, for `layers` blocks: per block the
// six weights the products and LayerNorms read and nine stored activations, plus the embedding,
// the final LayerNorm and the logits (6); the backward adds eight stored activation gradients per
// block, the head's three and the gradient itself.
std::size_t forward_roundings(std::size_t layers);   // 15·L + 6
std::size_t gradient_roundings(std::size_t layers);  // 23·L + 10
double unit_roundoff(Precision precision);           // 2^-11 fp16, 2^-8 bf16, 0 fp32

// Throws CheckFailed when the first applied step disagrees with fp32 beyond what rounding to the
// storage format explains (README.md "Checks"; the bounds are derived in mixed_precision.cpp), or
// when no step was applied.
void check_first_step(Precision precision, const StepAgreement& a, std::size_t layers, std::size_t vocab);

// The final validation losses of the variant and of fp32, one per seed, each pair from the same
// seed. Throws CheckFailed when fp32's loss is not finite on a seed, or when a variant that must
// track fp32 has a mean over the seeds of |loss − fp32's| that is not finite or is beyond
// gap_tolerance(mean of fp32's losses). The mean, not each seed: a correct scaler's gap moves
// with the seed (README.md "Tolerance": dynamic scaling's is 0.003 to 0.099 nats at quick sizes
// over seeds 1-3, the largest where the runs descend from the byte-frequency plateau within the
// budget and the variant, 4 skipped steps behind, ends higher), while a broken one is off by
// tenths of a nat or NaN on every seed.
void check(Precision precision, const std::vector<double>& val_losses, const std::vector<double>& fp32_val_losses);

}  // namespace mixed_precision
}  // namespace aiopt
