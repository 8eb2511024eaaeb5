#include "techniques/lr_scheduling/lr_scheduling.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <sstream>

#include "core/error.hpp"
#include "core/fault.hpp"
#include "harness/seed_spread.hpp"
#include "techniques/technique_parts.hpp"
#include "techniques/training_case.hpp"

namespace aiopt {

namespace ls = lr_scheduling;

// ---- parameters and variants

static std::string summary() {
  return "the same training budget from the same initialization under each of eight learning-rate schedules";
}

static std::vector<ParamSpec> params() {
  std::vector<ParamSpec> out =
      training_case::params(300, 150, "the training budget every schedule is shaped for and finish() trains");
  out.push_back(real_param("peak_lr", 3e-3, std::nullopt, 0.0, unbounded, "",
                           "the schedules' peak learning rate (AdamW)"));
  out.push_back(real_param("min_lr", 0.0, std::nullopt, 0.0, unbounded, "",
                           "the floor the decaying schedules end at; at most peak_lr"));
  out.push_back(real_param("warmup", 0.1, std::nullopt, 0.0, unbounded, "",
                           "linear warmup of warmup_cosine, linear_warmup_decay, one_cycle, inverse_sqrt and wsd: "
                           "below 1 a fraction of the budget, from 1 on a number of steps"));
  out.push_back(real_param("target_loss", 2.3, std::nullopt, 0.0, unbounded, "nats",
                           "the smoothed training loss steps_to_target waits for; 2.3 is reached by every schedule "
                           "at the default and quick sizes (README.md)"));
  out.push_back(seeds_param(std::nullopt));
  return out;
}

const VariantTable<nn::ScheduleKind>& ls::schedules() {
  using nn::ScheduleKind;
  static const VariantTable<ScheduleKind> table(
      "lr_scheduling",
      {
          {ScheduleKind::constant, "constant", "peak_lr at every step", true},
          {ScheduleKind::step, "step", "peak_lr halved every quarter of the budget"},
          {ScheduleKind::cosine, "cosine", "half a cosine from peak_lr to min_lr, no warmup"},
          {ScheduleKind::warmup_cosine, "warmup_cosine", "linear warmup, then a cosine to min_lr"},
          {ScheduleKind::linear_warmup_decay, "linear_warmup_decay", "linear warmup, then linear decay to min_lr"},
          {ScheduleKind::one_cycle, "one_cycle", "from peak_lr/25 up to peak_lr over the warmup, then a cosine to min_lr"},
          {ScheduleKind::inverse_sqrt, "inverse_sqrt", "linear warmup, then peak_lr·sqrt(W/(t+1))"},
          {ScheduleKind::wsd, "wsd", "warmup, stable at peak_lr, linear decay to min_lr over the last fifth"},
      });
  return table;
}

static std::vector<Variant> variants() { return ls::schedules().variants(); }

// ---- the case

std::size_t ls::warmup_steps(double warmup, std::size_t steps) {
  std::ostringstream m;
  m << "lr_scheduling: parameter 'warmup' = " << warmup;
  if (!(warmup >= 0) || !std::isfinite(warmup)) {
    m << "; allowed: a fraction of the budget in [0, 1) or a number of steps from 1 to steps (" << steps << ")";
    throw InputError(m.str());
  }
  if (warmup < 1) return static_cast<std::size_t>(std::lround(warmup * static_cast<double>(steps)));
  if (warmup != std::floor(warmup) || warmup > static_cast<double>(steps)) {
    m << "; allowed from 1 on: a whole number of steps up to the budget of " << steps;
    throw InputError(m.str());
  }
  return static_cast<std::size_t>(warmup);
}

nn::TrainConfig ls::train_config(const Case& c) {
  nn::TrainConfig t = training_case::base_config("lr_scheduling", c);
  const double peak = c.params.real("peak_lr"), min_lr = c.params.real("min_lr");
  const double target = c.params.real("target_loss");
  if (!(peak > 0) || !std::isfinite(peak)) {
    std::ostringstream m;
    m << "lr_scheduling: parameter 'peak_lr' = " << peak << "; allowed: a positive finite number";
    throw InputError(m.str());
  }
  if (!(min_lr >= 0) || min_lr > peak) {
    std::ostringstream m;
    m << "lr_scheduling: parameter 'min_lr' = " << min_lr << "; allowed: 0 to peak_lr (" << peak << ")";
    throw InputError(m.str());
  }
  if (!(target > 0) || !std::isfinite(target)) {
    std::ostringstream m;
    m << "lr_scheduling: parameter 'target_loss' = " << target << "; allowed: a positive finite loss in nats";
    throw InputError(m.str());
  }
  t.schedule = schedule(c, t.steps);
  // The fault "lr_scheduling.warmup_skipped" (tests only, core/fault.hpp) drops the warmup.
  if (fault::active("lr_scheduling.warmup_skipped")) t.schedule.warmup_steps = 0;
  t.eval_every = std::max<std::size_t>(1, t.steps / 10);
  t.eval_batches = 8;
  t.validate();
  return t;
}

nn::LrSchedule ls::schedule(const Case& c, std::size_t steps) {
  nn::LrSchedule s;
  s.kind = schedules().parse(c.variant);
  s.peak_lr = static_cast<float>(c.params.real("peak_lr"));
  s.min_lr = static_cast<float>(c.params.real("min_lr"));
  s.total_steps = steps;
  s.warmup_steps = warmup_steps(c.params.real("warmup"), steps);
  s.step_every = std::max<std::size_t>(1, steps / 4);
  s.step_gamma = 0.5f;
  s.one_cycle_div = 25.0f;
  s.decay_fraction = 0.2f;
  return s;
}

// ---- the LR the optimizer was given

double ls::reference_lr(const nn::LrSchedule& s, std::size_t step) {
  using nn::ScheduleKind;
  const double P = s.peak_lr, M = s.min_lr, T = double(s.total_steps), W = double(s.warmup_steps);
  const double t = double(std::min(step, s.total_steps));
  const bool warm = step < s.warmup_steps;
  auto cos_decay = [&](double from, double x) { return M + (from - M) * (1.0 + std::cos(std::numbers::pi * x)) / 2.0; };
  switch (s.kind) {
    case ScheduleKind::constant: return P;
    case ScheduleKind::step:
      return std::max(M, P * std::pow(double(s.step_gamma), double(std::size_t(t) / s.step_every)));
    case ScheduleKind::cosine: return cos_decay(P, t / T);
    case ScheduleKind::warmup_cosine:
      if (warm) return P * (t + 1) / W;
      return cos_decay(P, T == W ? 1.0 : (t - W) / (T - W));
    case ScheduleKind::linear_warmup_decay:
      if (warm) return P * (t + 1) / W;
      return T == W ? M : P - (P - M) * (t - W) / (T - W);
    case ScheduleKind::one_cycle:
      if (warm) return P / s.one_cycle_div + (P - P / s.one_cycle_div) * (t / W);
      return cos_decay(P, T == W ? 1.0 : (t - W) / (T - W));
    case ScheduleKind::inverse_sqrt:
      if (warm) return P * (t + 1) / W;
      return std::max(M, P / std::sqrt((t + 1) / std::max(W, 1.0)));
    case ScheduleKind::wsd: {
      const double D = std::max(1.0, std::round(double(s.decay_fraction) * T));
      const double S = std::max(W, T - D);
      if (warm) return P * (t + 1) / W;
      if (t < S) return P;
      return T == S ? M : P - (P - M) * (t - S) / (T - S);
    }
  }
  return std::nan("");
}

double ls::lr_tolerance(const nn::LrSchedule& s) { return std::ldexp(static_cast<double>(s.peak_lr), -23); }

double ls::check_run(const std::string& variant, const nn::LrSchedule& s, const std::vector<nn::StepRecord>& history) {
  std::ostringstream m;
  m << "lr_scheduling: variant " << variant << ": ";
  if (history.size() != s.total_steps) {
    m << history.size() << " steps recorded of a budget of " << s.total_steps;
    throw CheckFailed(m.str());
  }
  double largest = 0.0;
  for (std::size_t i = 0; i < history.size(); ++i) {
    const double want = reference_lr(s, i), got = history[i].lr;
    largest = std::max(largest, std::fabs(got - want));
    if (!(std::fabs(got - want) <= lr_tolerance(s))) {
      m << "step " << i + 1 << " was given LR " << got << " where the schedule (W = " << s.warmup_steps
        << ", T = " << s.total_steps << ") gives " << want << "; allowed ±" << lr_tolerance(s);
      throw CheckFailed(m.str());
    }
    if (!std::isfinite(history[i].loss)) {
      m << "step " << i + 1 << "'s training loss is " << history[i].loss << " at LR " << got
        << "; a finite LR keeps a correct fp32 run finite";
      throw CheckFailed(m.str());
    }
  }
  return largest;
}

// ---- outcomes of a budget

std::vector<double> ls::smoothed_losses(const std::vector<nn::StepRecord>& history) {
  std::vector<double> out;
  for (std::size_t i = 0; i < history.size(); ++i) {
    const std::size_t first = i + 1 - std::min(i + 1, smoothing_window);
    double sum = 0.0;  // a NaN in the window makes the mean NaN
    for (std::size_t j = first; j <= i; ++j) sum += history[j].loss;
    out.push_back(sum / static_cast<double>(i + 1 - first));
  }
  return out;
}

double ls::steps_to_target(const std::vector<nn::StepRecord>& history, double target) {
  const std::vector<double> smooth = smoothed_losses(history);
  for (std::size_t i = 0; i < smooth.size(); ++i)
    if (smooth[i] <= target) return static_cast<double>(i + 1);
  return static_cast<double>(history.size() + 1);
}

bool ls::diverged(const std::vector<nn::StepRecord>& history) {
  if (history.empty()) return false;
  for (const auto& r : history)
    if (!std::isfinite(r.loss)) return true;
  return smoothed_losses(history).back() > history.front().loss;
}

// ---- the run

namespace {

// One budget trained by finish(): its history and evaluations, checked against its schedule.
struct Budget {
  std::vector<nn::StepRecord> history;
  std::vector<nn::EvalRecord> evals;
  double lr_error = 0.0;  // check_run's largest |LR − reference|
};

Budget train_checked(const nn::TrainConfig& config, const std::string& variant, const nn::LrSchedule& intended,
                     const Device& device, const nn::TokenSplit& tokens) {
  nn::Trainer trainer(config, device, tokens);
  trainer.run();
  Budget b{trainer.history(), trainer.evals(), 0.0};
  try {
    b.lr_error = ls::check_run(variant, intended, b.history);
  } catch (const CheckFailed& e) {
    throw CheckFailed(std::string(e.what()) + " (seed " + std::to_string(config.seed) + ")");
  }
  return b;
}

class ScheduleRun : public Run {
 public:
  // `baseline` and `baseline_schedule`: the constant schedule's run of the same case, trained from
  // the same seeds for the within-noise verdict; unused when the variant is the baseline.
  ScheduleRun(nn::TrainConfig config, nn::LrSchedule intended, std::string variant, nn::TrainConfig baseline,
              nn::LrSchedule baseline_schedule, std::size_t seeds, double target, const Device& device)
      : config_(std::move(config)), intended_(intended), variant_(std::move(variant)),
        baseline_(std::move(baseline)), baseline_schedule_(baseline_schedule), seeds_(seeds), target_(target),
        device_(device), tokens_(nn::load_tokens(config_.data, config_.seq_len)), trainer_(config_, device_, tokens_) {}

  // One optimizer step; the schedule only sets its LR, so every schedule costs the same here.
  void step() override { trainer_.step(); }

  // Trains the budget from each of the seeds (the case seed, seed + 1, ...), each run checked
  // against the schedule, and the constant baseline from the same seeds unless this is it; the
  // metrics are means over the seeds, the curves the first seed's.
  std::vector<Metric> finish() override {
    const std::string& baseline = ls::schedules().name(nn::ScheduleKind::constant);
    std::vector<std::vector<Metric>> runs, baseline_runs;
    for (std::size_t i = 0; i < seeds_; ++i) {
      nn::TrainConfig config = config_;
      config.seed = config_.seed + i;
      const Budget b = train_checked(config, variant_, intended_, device_, tokens_);
      if (i == 0) record_series(b);
      runs.push_back(outcome(b, intended_));
      if (variant_ == baseline || seeds_ < 2) continue;
      nn::TrainConfig base = baseline_;
      base.seed = baseline_.seed + i;
      baseline_runs.push_back(outcome(train_checked(base, baseline, baseline_schedule_, device_, tokens_),
                                      baseline_schedule_));
    }
    if (variant_ == baseline) baseline_runs = runs;
    std::vector<Metric> out = over_seeds(runs, {"final_val_loss", "final_train_loss", "steps_to_target"});
    for (const auto& [name, unit] : {std::pair{"final_val_loss", "nats"}, std::pair{"steps_to_target", "steps"}})
      for (auto& m : noise_verdict(name, unit, Better::lower, values_of(runs, name), values_of(baseline_runs, name)))
        out.push_back(std::move(m));
    if (seeds_ >= 2) series_.push_back(by_seed("final_val_loss", "nats", config_.seed, values_of(runs, "final_val_loss")));
    return out;
  }

  std::vector<Series> series() const override { return series_; }

 private:
  // The metrics of one seed's budget under `schedule`.
  std::vector<Metric> outcome(const Budget& b, const nn::LrSchedule& schedule) const {
    return {
        {"final_val_loss", b.evals.back().loss, "nats", Better::lower},
        {"final_train_loss", ls::smoothed_losses(b.history).back(), "nats", Better::lower},
        {"steps_to_target", ls::steps_to_target(b.history, target_), "steps", Better::lower},
        {"diverged", ls::diverged(b.history) ? 1.0 : 0.0, "", Better::lower},
        {"initial_train_loss", b.history.front().loss, "nats", Better::lower, false},
        {"lr_max_error", b.lr_error / schedule.peak_lr, "", Better::lower, false},
    };
  }

  // x: the 1-based step number, as StepRecord counts; the LR of step x is at(x − 1).
  void record_series(const Budget& b) {
    const std::vector<double> smooth = ls::smoothed_losses(b.history);
    Series lr{"lr", "step", "", {}, {}}, loss{"train_loss", "step", "nats", {}, {}};
    Series smoothed{"train_loss_smoothed", "step", "nats", {}, {}}, eval{"val_loss", "step", "nats", {}, {}};
    for (std::size_t i = 0; i < b.history.size(); ++i) {
      const double x = static_cast<double>(b.history[i].step);
      lr.x.push_back(x);
      lr.y.push_back(b.history[i].lr);
      loss.x.push_back(x);
      loss.y.push_back(b.history[i].loss);
      smoothed.x.push_back(x);
      smoothed.y.push_back(smooth[i]);
    }
    for (const auto& e : b.evals) {
      eval.x.push_back(static_cast<double>(e.step));
      eval.y.push_back(e.loss);
    }
    series_ = {lr, loss, smoothed, eval};
  }

  nn::TrainConfig config_;
  nn::LrSchedule intended_;  // the case's schedule, for the check
  std::string variant_;
  nn::TrainConfig baseline_;
  nn::LrSchedule baseline_schedule_;
  std::size_t seeds_;
  double target_;
  Device device_;
  nn::TokenSplit tokens_;
  nn::Trainer trainer_;  // the timed steps' trainer; finish() trains fresh ones
  std::vector<Series> series_;
};

}  // namespace

// ---- prepare

static void check(const Case& c, DeviceKind) { (void)ls::train_config(c); }

static std::unique_ptr<Run> start(const Case& c, const Device& device) {
  nn::TrainConfig config = ls::train_config(c);
  const nn::LrSchedule intended = ls::schedule(c, config.steps);
  Case baseline = c;
  baseline.variant = ls::schedules().name(nn::ScheduleKind::constant);
  nn::TrainConfig base = ls::train_config(baseline);
  const nn::LrSchedule base_schedule = ls::schedule(baseline, base.steps);
  return std::make_unique<ScheduleRun>(std::move(config), intended, c.variant, std::move(base), base_schedule,
                                       static_cast<std::size_t>(c.params.integer("seeds")),
                                       c.params.real("target_loss"), device);
}

std::unique_ptr<Technique> make_lr_scheduling() {
  return make_technique({"lr_scheduling", "training time vs final quality", summary, params, variants, check, start});
}

}  // namespace aiopt
