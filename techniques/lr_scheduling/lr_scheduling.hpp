#pragma once
// lr_scheduling: training time vs final quality (TECHNIQUES.md §16). The model trains the same
// budget from the same initialization on the same batches under each of the eight learning-rate
// schedules of nn/lr_schedule.hpp (constant is the baseline); the schedules cost the same per
// step, so what differs is the final loss, how soon a target loss is reached, and whether a high
// peak without warmup diverges. See README.md beside this file.
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "harness/technique.hpp"
#include "nn/trainer.hpp"

namespace aiopt {

class LrScheduling : public Technique {
 public:
  std::string name() const override { return "lr_scheduling"; }
  std::string summary() const override;
  std::string trade_off() const override { return "training time vs final quality"; }
  std::vector<ParamSpec> params() const override;
  std::vector<Variant> variants() const override;
  void validate(const Case& c, DeviceKind device) const override;
  std::unique_ptr<Run> prepare(const Case& c, const Device& device) const override;
};

// The pieces the run and the tests share.
namespace lr_scheduling {


// Warmup steps from the `warmup` parameter: below 1 a fraction of the budget (rounded), from 1 on
// a number of steps. Throws InputError when it is negative or more than the budget.
std::size_t warmup_steps(double warmup, std::size_t steps);

// The training run of one case under `variant`'s schedule, parsed and checked: the model, batch,
// seq_len, steps, AdamW, the schedule from peak_lr, min_lr and warmup (step: ×0.5 every quarter
// of the budget; one_cycle from peak/25; wsd decaying over the last fifth). Throws InputError
// naming the parameter or the variant.
nn::TrainConfig train_config(const Case& c);

// Trailing window of the smoothed training loss: the mean of the last `smoothing_window` steps'
// losses (fewer at the start).
inline constexpr std::size_t smoothing_window = 10;
std::vector<double> smoothed_losses(const std::vector<nn::StepRecord>& history);

// The first 1-based step whose smoothed training loss is <= target; history.size() + 1 when
// none is (the budget did not reach the target; NaN losses never reach it).
double steps_to_target(const std::vector<nn::StepRecord>& history, double target);

// Whether the run diverged: a non-finite loss at any step, or a final smoothed training loss
// above the first step's loss (it ended worse than it started).
bool diverged(const std::vector<nn::StepRecord>& history);

}  // namespace lr_scheduling
}  // namespace aiopt
