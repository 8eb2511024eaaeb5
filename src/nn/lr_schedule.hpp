#pragma once
// Learning-rate schedules (TECHNIQUES.md §16): the LR at each optimizer step from one peak value.
// Steps are 0-based; `total_steps` is the training budget. Every formula is written beside its
// enumerator in lr_schedule.cpp's `at` and unit-tested against it. Linear warmup gives
// peak·(t + 1)/W at step t < W, so step 0 already trains and step W − 1 is at peak (one_cycle
// instead rises from peak/div at step 0 to peak at step W). step and inverse_sqrt are floored at
// min_lr like the other decaying schedules.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace aiopt::nn {

enum class ScheduleKind {
  constant,             // peak
  step,                 // peak · gamma^floor(t / step_every)
  cosine,               // min + (peak − min)·(1 + cos(π·t/T))/2
  warmup_cosine,        // linear warmup to peak over W steps, then cosine to min over T − W
  linear_warmup_decay,  // linear warmup over W, then linear decay to min at T
  one_cycle,            // Smith 2018: from peak/div up to peak over W, then cosine down to min
  inverse_sqrt,         // linear warmup over W, then peak·sqrt(W / (t + 1)) (Vaswani 2017 shape)
  wsd,                  // warmup W, stable at peak, then linear decay to min over the last decay_fraction·T
};

std::string_view to_string(ScheduleKind kind);
// Throws InputError naming the allowed schedules, with a "did you mean" suggestion.
ScheduleKind parse_schedule(std::string_view name);
std::vector<std::string> schedule_names();

struct LrSchedule {
  ScheduleKind kind = ScheduleKind::warmup_cosine;
  float peak_lr = 1e-3f;
  float min_lr = 0.0f;             // floor of the decaying schedules
  std::size_t total_steps = 1000;  // T
  std::size_t warmup_steps = 0;    // W (warmup_cosine, linear_warmup_decay, one_cycle, inverse_sqrt, wsd)
  std::size_t step_every = 100;    // step
  float step_gamma = 0.5f;         // step
  float one_cycle_div = 25.0f;     // one_cycle: start at peak / div
  float decay_fraction = 0.2f;     // wsd

  // The LR at 0-based step t (t >= total_steps gives the value at total_steps − 1's end, min_lr
  // for the decaying schedules).
  float at(std::size_t t) const;
  // Throws InputError naming the field when peak_lr <= 0, min_lr < 0 or > peak_lr,
  // total_steps == 0, warmup_steps > total_steps, step_every == 0, step_gamma outside (0, 1],
  // one_cycle_div < 1 or decay_fraction outside (0, 1].
  void validate() const;
};

}  // namespace aiopt::nn
