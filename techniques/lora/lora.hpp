#pragma once
// lora: trainable parameters vs quality (TECHNIQUES.md §7). A GPT trained on dialect 0 of the
// built-in corpus (the model cache) is fine-tuned on dialect 1: every weight (full_finetune, the
// baseline), or low-rank adapters on a frozen base (lora, Hu et al. 2021), or adapters on a base
// held in int4 (qlora, Dettmers et al. 2023). See README.md beside this file.
#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include "harness/technique.hpp"
#include "harness/variant_table.hpp"
#include "nn/trainer.hpp"

namespace aiopt {

// The technique, as techniques/registry.cpp lists it.
std::unique_ptr<Technique> make_lora();

// The pieces the run and the tests share.
namespace lora {

enum class Method { full_finetune, lora, qlora };
const VariantTable<Method>& methods();
inline Method parse_method(const std::string& variant) { return methods().parse(variant); }
inline const std::string& to_string(Method method) { return methods().name(method); }

// Merged and unmerged logits may differ by this much relative to the largest logit: W + s·B·A is
// one more fp32 rounding of each weight than the two products it replaces.
inline constexpr double merge_tolerance = 1e-5;

// The case, parsed: the base's training recipe (dialect 0) and the fine-tuning run's (dialect 1,
// with `lora` set for the adapter variants). Throws InputError naming the parameter.
struct Plan {
  Method method = Method::full_finetune;
  nn::TrainConfig base;       // the pretrained model's recipe (nn::standard_training of the preset)
  nn::TrainConfig fine_tune;  // dialect 1
};
Plan plan(const Case& c);

// max |merged − unmerged| / max |unmerged| over the logits of `batch`: the adapters applied in the
// pass (unmerged) against W + s·B·A folded into a copy of the weights (merged), on the fp32 base
// or, under QLoRA, on the dequantized int4 base. The fault "lora.merge_unscaled" (tests only,
// core/fault.hpp) merges B·A without the scale alpha/rank.
double merged_logit_difference(const nn::Trainer& trainer, const nn::Batch& batch, void* stream = nullptr);

// Whether every weight the trainer holds in fp32 equals `base`'s bit for bit (the frozen weights
// after fine-tuning); the name of the first that differs, or nothing.
std::optional<std::string> changed_weight(const nn::Trainer& trainer, const nn::GptWeights& base);

}  // namespace lora
}  // namespace aiopt
