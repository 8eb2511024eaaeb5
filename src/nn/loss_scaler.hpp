#pragma once
// Loss scaling for fp16 training (Micikevicius et al. 2018): the loss's gradient is multiplied by
// S before the backward, so small activation gradients stay above fp16's underflow, and the
// weight gradients are divided by S before the update. A step whose gradients overflowed (inf or
// NaN) is skipped. The dynamic scaler halves S on overflow and doubles it after
// `growth_interval` clean steps in a row (PyTorch's GradScaler policy).
#include <cstddef>
#include <string_view>

namespace aiopt::nn {

enum class LossScaling { none, fixed, dynamic };
std::string_view to_string(LossScaling kind);

struct LossScaler {
  LossScaling kind = LossScaling::none;
  float scale = 1.0f;  // S; kept at 1 for `none`
  float growth = 2.0f;
  float backoff = 0.5f;
  std::size_t growth_interval = 100;
  std::size_t clean_steps = 0;  // clean steps since the last change

  // After a backward: whether its gradients may be applied (false on overflow), and the scale
  // for the next step.
  bool update(bool overflow);
  // Throws InputError for a scale that is not positive and finite, growth <= 1, backoff outside
  // (0, 1) or a zero growth_interval.
  void validate() const;
};

}  // namespace aiopt::nn
