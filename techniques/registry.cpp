#include "techniques/registry.hpp"

#include "techniques/flash_attention/flash_attention.hpp"
#include "techniques/gradient_accumulation/gradient_accumulation.hpp"
#include "techniques/gradient_checkpointing/gradient_checkpointing.hpp"
#include "techniques/kv_caching/kv_caching.hpp"
#include "techniques/linear_attention/linear_attention.hpp"
#include "techniques/lr_scheduling/lr_scheduling.hpp"
#include "techniques/mixed_precision/mixed_precision.hpp"
#include "techniques/quantization/quantization.hpp"
#include "techniques/tensor_fusion/tensor_fusion.hpp"

namespace aiopt {

const TechniqueList& techniques() {
  static const TechniqueList list = [] {
    TechniqueList l;
    // In the order of README's technique table.
    l.push_back(std::make_unique<KvCaching>());
    l.push_back(std::make_unique<FlashAttention>());
    l.push_back(std::make_unique<Quantization>());
    l.push_back(std::make_unique<GradientCheckpointing>());
    l.push_back(std::make_unique<MixedPrecision>());
    l.push_back(std::make_unique<LinearAttention>());
    l.push_back(std::make_unique<TensorFusion>());
    l.push_back(std::make_unique<GradientAccumulation>());
    l.push_back(std::make_unique<LrScheduling>());
    return l;
  }();
  return list;
}

}  // namespace aiopt
