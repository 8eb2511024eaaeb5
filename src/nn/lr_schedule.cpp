#include "nn/lr_schedule.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "core/error.hpp"
#include "core/spelling.hpp"

namespace aiopt::nn {

namespace {

constexpr ScheduleKind kAll[] = {
    ScheduleKind::constant,     ScheduleKind::step,      ScheduleKind::cosine, ScheduleKind::warmup_cosine,
    ScheduleKind::linear_warmup_decay, ScheduleKind::one_cycle, ScheduleKind::inverse_sqrt, ScheduleKind::wsd,
};

// The fraction of the way from a to b that s has gone, for a <= s <= b; 1 when the span is empty
// (a schedule whose warmup fills the whole budget has nothing left to decay over).
double progress(double s, double a, double b) { return b > a ? (s - a) / (b - a) : 1.0; }

// Half a cosine wave from `from` at progress 0 to `to` at progress 1 (Loshchilov & Hutter 2017).
double cosine_between(double from, double to, double x) {
  return to + (from - to) * 0.5 * (1.0 + std::cos(std::numbers::pi * x));
}

}  // namespace

std::string_view to_string(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::constant: return "constant";
    case ScheduleKind::step: return "step";
    case ScheduleKind::cosine: return "cosine";
    case ScheduleKind::warmup_cosine: return "warmup_cosine";
    case ScheduleKind::linear_warmup_decay: return "linear_warmup_decay";
    case ScheduleKind::one_cycle: return "one_cycle";
    case ScheduleKind::inverse_sqrt: return "inverse_sqrt";
    case ScheduleKind::wsd: return "wsd";
  }
  return "?";
}

std::vector<std::string> schedule_names() {
  std::vector<std::string> names;
  for (ScheduleKind k : kAll) names.emplace_back(to_string(k));
  return names;
}

ScheduleKind parse_schedule(std::string_view name) {
  for (ScheduleKind k : kAll)
    if (to_string(k) == name) return k;
  const auto names = schedule_names();
  throw InputError("learning-rate schedule " + in_quotes(name) + " is unknown" + did_you_mean(name, names) +
                   "; allowed: " + join_names(names));
}

// Formulas, with t the 0-based step clamped to T (the value after the last step), W the warmup
// steps, peak and min the LR bounds, all in double and rounded to float once:
//   warmup (every schedule with W but one_cycle), t < W:  peak·(t + 1)/W — it reaches peak on
//     step W − 1 and never spends a step at LR 0.
//   constant             peak
//   step                 max(min, peak·gamma^floor(t/step_every))
//   cosine               min + (peak − min)·(1 + cos(π·t/T))/2
//   warmup_cosine        t >= W: min + (peak − min)·(1 + cos(π·(t − W)/(T − W)))/2
//   linear_warmup_decay  t >= W: peak + (min − peak)·(t − W)/(T − W)
//   one_cycle            t < W: peak/div + (peak − peak/div)·t/W (peak/div at step 0, peak at W);
//                        t >= W: the cosine from peak at W to min at T, as warmup_cosine
//   inverse_sqrt         t >= W: max(min, peak·sqrt(max(W, 1)/(t + 1)))
//   wsd                  with D = max(1, round(decay_fraction·T)) (rounded, as 0.2f·100 is
//                        20.0000003) and S = max(W, T − D):
//                        W <= t < S: peak; t >= S: peak + (min − peak)·(t − S)/(T − S)
// A span of zero steps (T = W, or S = T) counts as fully decayed, so those steps give min.
float LrSchedule::at(std::size_t step_index) const {
  const double t = static_cast<double>(std::min(step_index, total_steps));
  const double T = static_cast<double>(total_steps);
  const double W = static_cast<double>(warmup_steps);
  const double peak = peak_lr, floor_lr = min_lr;
  const bool warming = step_index < warmup_steps;
  const double warmup = peak * (t + 1.0) / W;
  double lr = peak;
  switch (kind) {
    case ScheduleKind::constant:
      lr = peak;
      break;
    case ScheduleKind::step:
      lr = std::max(floor_lr, peak * std::pow(static_cast<double>(step_gamma),
                                              std::floor(t / static_cast<double>(step_every))));
      break;
    case ScheduleKind::cosine:
      lr = cosine_between(peak, floor_lr, t / T);
      break;
    case ScheduleKind::warmup_cosine:
      lr = warming ? warmup : cosine_between(peak, floor_lr, progress(t, W, T));
      break;
    case ScheduleKind::linear_warmup_decay:
      lr = warming ? warmup : peak + (floor_lr - peak) * progress(t, W, T);
      break;
    case ScheduleKind::one_cycle: {
      const double start = peak / static_cast<double>(one_cycle_div);
      lr = warming ? start + (peak - start) * t / W : cosine_between(peak, floor_lr, progress(t, W, T));
      break;
    }
    case ScheduleKind::inverse_sqrt:
      lr = warming ? warmup : std::max(floor_lr, peak * std::sqrt(std::max(W, 1.0) / (t + 1.0)));
      break;
    case ScheduleKind::wsd: {
      const double decay = std::max(1.0, std::round(static_cast<double>(decay_fraction) * T));
      const double start = std::max(W, T - decay);
      if (warming)
        lr = warmup;
      else if (t < start)
        lr = peak;
      else
        lr = peak + (floor_lr - peak) * progress(t, start, T);
      break;
    }
  }
  return static_cast<float>(lr);
}

void LrSchedule::validate() const {
  const auto bad = [](const std::string& field, const std::string& value, const std::string& allowed) {
    throw InputError("learning-rate schedule: " + field + " = " + value + " is not allowed; " + allowed);
  };
  if (!(peak_lr > 0.0f) || !std::isfinite(peak_lr)) bad("peak_lr", std::to_string(peak_lr), "it must be > 0");
  if (!(min_lr >= 0.0f && min_lr <= peak_lr))
    bad("min_lr", std::to_string(min_lr), "it must be in [0, peak_lr = " + std::to_string(peak_lr) + "]");
  if (total_steps == 0) bad("total_steps", "0", "it must be at least 1");
  if (warmup_steps > total_steps)
    bad("warmup_steps", std::to_string(warmup_steps),
        "it must be at most total_steps = " + std::to_string(total_steps));
  if (step_every == 0) bad("step_every", "0", "it must be at least 1");
  if (!(step_gamma > 0.0f && step_gamma <= 1.0f)) bad("step_gamma", std::to_string(step_gamma), "it must be in (0, 1]");
  if (!(one_cycle_div >= 1.0f) || !std::isfinite(one_cycle_div))
    bad("one_cycle_div", std::to_string(one_cycle_div), "it must be >= 1");
  if (!(decay_fraction > 0.0f && decay_fraction <= 1.0f))
    bad("decay_fraction", std::to_string(decay_fraction), "it must be in (0, 1]");
}

}  // namespace aiopt::nn
