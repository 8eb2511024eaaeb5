#pragma once
// lr_scheduling: training time vs final quality (TECHNIQUES.md §16). The model trains the same
// budget from the same initialization on the same batches under each of the eight learning-rate
// schedules of nn/lr_schedule.hpp (constant is the baseline); the schedules cost the same per
// step, so what differs is the final loss, how soon a target loss is reached, and whether a high
// peak without warmup diverges. finish() trains each of `seeds` seeds (harness/seed_spread.hpp) and
// the constant baseline from the same seeds. See README.md beside this file.
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "harness/technique.hpp"
#include "harness/variant_table.hpp"
#include "nn/trainer.hpp"

namespace aiopt {

// The technique, as techniques/registry.cpp lists it.
std::unique_ptr<Technique> make_lr_scheduling();

// The pieces the run and the tests share.
namespace lr_scheduling {

const VariantTable<nn::ScheduleKind>& schedules();  // the variants, one per schedule

// Warmup steps from the `warmup` parameter: below 1 a fraction of the budget (rounded), from 1 on
// a number of steps. Throws InputError when it is negative or more than the budget.
std::size_t warmup_steps(double warmup, std::size_t steps);

// The training run of one case under `variant`'s schedule, parsed and checked: the model, batch,
// seq_len, steps, AdamW, the schedule from peak_lr, min_lr and warmup (step: ×0.5 every quarter
// of the budget; one_cycle from peak/25; wsd decaying over the last fifth). Throws InputError
// naming the parameter or the variant.
nn::TrainConfig train_config(const Case& c);

// The schedule the case asks for, from its variant, peak_lr, min_lr, warmup and steps (step: ×0.5
// every quarter of the budget; one_cycle from peak/25; wsd decaying over the last fifth), as
// train_config() gives it to the trainer; parameters already checked by train_config().
nn::LrSchedule schedule(const Case& c, std::size_t steps);

// The LR of 0-based step t under `s`, from the formulas nn/lr_schedule.hpp documents, written
// out here independently of LrSchedule::at, in double.
double reference_lr(const nn::LrSchedule& s, std::size_t t);

// The LR at() returns is the exact value rounded once to float (error <= 2^-24·lr <= 2^-24·peak);
// reference_lr's double arithmetic adds ~1e-15 relative. A correct schedule is within 2^-24·peak
// of the reference; the check allows 2^-23·peak. A warmup skipped or a step read one step off
// moves the LR by peak/W, a step's halving or a step of the decay: 1e-3·peak and more at any
// budget below 3,000 steps.
double lr_tolerance(const nn::LrSchedule& s);

// Throws CheckFailed when the run did not take `s.total_steps` steps, when the LR the optimizer
// was given at any step is not reference_lr(s, step) within lr_tolerance, or when a step's loss
// is not finite. A finite LR cannot make a correct fp32 run's loss non-finite: AdamW moves each
// weight by at most about lr per step (Kingma & Ba 2015 §2.1: |m̂/√v̂| <= 1 when 1 − β1 <= √(1 − β2),
// here 0.1 <= 0.22), and weight decay only shrinks it, so after finitely many steps the weights are
// finite; the final LayerNorm bounds the hidden state and the cross-entropy subtracts the max
// logit. A NaN or inf is a broken kernel or optimizer, not a schedule's outcome (`diverged`
// reports a loss that ends above where it started).
// Returns the largest |LR − reference| over the steps.
double check_run(const std::string& variant, const nn::LrSchedule& s, const std::vector<nn::StepRecord>& history);

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
