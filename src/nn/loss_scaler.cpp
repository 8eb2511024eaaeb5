#include "nn/loss_scaler.hpp"

#include <cmath>
#include <string>

#include "core/error.hpp"

namespace aiopt::nn {

std::string_view to_string(LossScaling kind) {
  switch (kind) {
    case LossScaling::none: return "none";
    case LossScaling::fixed: return "fixed";
    case LossScaling::dynamic: return "dynamic";
  }
  return "?";
}

bool LossScaler::update(bool overflow) {
  if (overflow) {
    clean_steps = 0;
    if (kind == LossScaling::dynamic) scale *= backoff;
    return false;
  }
  if (kind == LossScaling::dynamic && ++clean_steps >= growth_interval) {
    scale *= growth;
    clean_steps = 0;
  }
  return true;
}

void LossScaler::validate() const {
  if (!(scale > 0.0f) || !std::isfinite(scale))
    throw InputError("loss scale " + std::to_string(scale) + " must be positive and finite");
  if (kind == LossScaling::dynamic) {
    if (!(growth > 1.0f)) throw InputError("loss-scale growth " + std::to_string(growth) + " must be above 1");
    if (!(backoff > 0.0f && backoff < 1.0f))
      throw InputError("loss-scale backoff " + std::to_string(backoff) + " must be in (0, 1)");
    if (growth_interval == 0) throw InputError("loss-scale growth interval must be positive");
  }
}

}  // namespace aiopt::nn
