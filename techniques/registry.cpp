#include "techniques/registry.hpp"

#include "techniques/dynamic_batching/dynamic_batching.hpp"
#include "techniques/flash_attention/flash_attention.hpp"
#include "techniques/gradient_accumulation/gradient_accumulation.hpp"
#include "techniques/gradient_checkpointing/gradient_checkpointing.hpp"
#include "techniques/knowledge_distillation/knowledge_distillation.hpp"
#include "techniques/kv_caching/kv_caching.hpp"
#include "techniques/linear_attention/linear_attention.hpp"
#include "techniques/lora/lora.hpp"
#include "techniques/lr_scheduling/lr_scheduling.hpp"
#include "techniques/mixed_precision/mixed_precision.hpp"
#include "techniques/quantization/quantization.hpp"
#include "techniques/speculative_decoding/speculative_decoding.hpp"
#include "techniques/tensor_fusion/tensor_fusion.hpp"

namespace aiopt {

const TechniqueList& techniques() {
  static const TechniqueList list = [] {
    TechniqueList l;
    // In the order of README's technique table.
    l.push_back(make_kv_caching());
    l.push_back(make_flash_attention());
    l.push_back(make_quantization());
    l.push_back(make_speculative_decoding());
    l.push_back(make_gradient_checkpointing());
    l.push_back(make_mixed_precision());
    l.push_back(make_lora());
    l.push_back(make_linear_attention());
    l.push_back(make_knowledge_distillation());
    l.push_back(make_dynamic_batching());
    l.push_back(make_tensor_fusion());
    l.push_back(make_gradient_accumulation());
    l.push_back(make_lr_scheduling());
    return l;
  }();
  return list;
}

}  // namespace aiopt
