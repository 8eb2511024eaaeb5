#pragma once
// knowledge_distillation: size vs retained quality (TECHNIQUES.md §10). A small student (tiny by
// default) trains the same budget from the same initialization on the same batches either on the
// data alone (hard_labels, the baseline) or against a trained teacher's softened distribution
// mixed with the data (distilled: α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE, Hinton,
// Vinyals & Dean 2015). The teacher (small by default) comes from the model cache; its logits come
// from the inference forward with no gradient. What the student gains is quality at its size:
// validation loss, top-1 agreement with the teacher, KL(teacher ‖ student), the fraction of the
// teacher's quality kept, against the parameter ratio and the decode speedup over the teacher.
// finish() trains each of `seeds` seeds (harness/seed_spread.hpp) and the baseline from the same
// seeds. See README.md beside this file.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "harness/technique.hpp"
#include "harness/variant_table.hpp"
#include "nn/batches.hpp"
#include "nn/gpt.hpp"
#include "nn/trainer.hpp"

namespace aiopt {

// The technique, as techniques/registry.cpp lists it.
std::unique_ptr<Technique> make_knowledge_distillation();

// The pieces the run and the tests share.
namespace knowledge_distillation {

enum class Variant { hard_labels, distilled };
const VariantTable<Variant>& variants();

// The teacher's training recipe: nn::standard_training of the case's `teacher` preset.
nn::TrainConfig teacher_config(const Case& c);

// The student's training run for the case's variant, parsed and checked: the model, batch,
// seq_len, steps, AdamW under warmup_cosine (peak_lr, warmup a tenth of the budget, down to
// peak_lr/10); for distilled, the teacher and the case's temperature and alpha. Throws InputError
// naming the parameter: a temperature below kernels::cpu::min_temperature (0 and negatives
// included), alpha outside [0, 1], a seq_len beyond the teacher's context, a student vocabulary
// other than the teacher's.
nn::TrainConfig student_config(const Case& c, Variant variant);

// What the student keeps of the teacher on the same validation windows.
struct Agreement {
  double top1 = 0.0;  // fraction of positions whose argmax the student shares with the teacher
  double kl = 0.0;    // mean KL(softmax(teacher) ‖ softmax(student)) at T = 1, nats per token
};
// Both models' logits from the inference forward (nn/gpt.hpp) over each batch's inputs.
Agreement agreement(nn::Gpt& student, nn::Gpt& teacher, std::span<const nn::Batch> windows);

// The cross-entropy, nats per token, of the training split's unigram distribution on the
// windows' targets: p(v) = (count(v) + 1) / (N + V) over the N training tokens, add-one smoothed
// so that a token absent from training costs log(N + V) instead of infinity.
double unigram_loss(std::span<const std::int32_t> train, std::size_t vocab, std::span<const nn::Batch> windows);

// (loss_unigram − loss_student) / (loss_unigram − loss_teacher): 1 where the student is as good as
// the teacher, 0 where it is no better than unigram frequencies. NaN when the teacher is no better
// than the unigram.
double quality_retained(double unigram, double student, double teacher);

// ---- the runtime checks

// Mean loss per step of `steps` steps of the student run `config` from its seed with hard labels
// and with distillation at T = 1, α = 0: the soft term vanishes, so both differentiate the same
// cross-entropy through two kernels (cross_entropy, distillation_loss) and must agree step for
// step within `equivalence_tolerance`. Throws CheckFailed naming the first step that does not;
// returns the largest difference.
inline constexpr std::size_t equivalence_steps = 3;
// The two kernels are different code for the same softmax: a summation order of their own could
// move the losses by fp32 roundings (~1e-7 nats) and, through AdamW, by a few times that over three
// steps; measured on the README's machine, they agree bit for bit (README.md "Checks"). A hard term
// weighted wrongly or a soft term left in moves the loss by the teacher's KL, ~1 nat.
inline constexpr double equivalence_tolerance = 1e-4;
double check_alpha_zero_equivalence(const nn::TrainConfig& config, std::shared_ptr<nn::Gpt> teacher,
                                  const nn::TokenSplit& tokens, const Device& device);

// T²·KL of the teacher against itself, trained as a student at the case's temperature with α = 1
// on `window`: the training pass's logits and the inference forward's could differ by fp32
// rounding only, so the loss is below `self_kl_tolerance` (measured: 0, the same logits bit for
// bit). A teacher fed the wrong positions gives about 1 nat. Throws CheckFailed otherwise;
// returns the loss.
inline constexpr double self_kl_tolerance = 1e-5;
double check_self_distillation(std::shared_ptr<nn::Gpt> teacher, const nn::Batch& window, float temperature);

}  // namespace knowledge_distillation
}  // namespace aiopt
