#include "techniques/lr_scheduling/lr_scheduling.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/cuda_runtime.hpp"
#include "core/error.hpp"
#include "techniques/training_case.hpp"

namespace aiopt {

namespace ls = lr_scheduling;

// ---- parameters and variants

std::string LrScheduling::summary() const {
  return "the same training budget from the same initialization under each of eight learning-rate schedules";
}

std::vector<ParamSpec> LrScheduling::params() const {
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
  return out;
}

std::vector<Variant> LrScheduling::variants() const {
  const std::vector<DeviceKind> both = {DeviceKind::cpu, DeviceKind::cuda};
  return {
      {"constant", "peak_lr at every step", true, both},
      {"step", "peak_lr halved every quarter of the budget", false, both},
      {"cosine", "half a cosine from peak_lr to min_lr, no warmup", false, both},
      {"warmup_cosine", "linear warmup, then a cosine to min_lr", false, both},
      {"linear_warmup_decay", "linear warmup, then linear decay to min_lr", false, both},
      {"one_cycle", "from peak_lr/25 up to peak_lr over the warmup, then a cosine to min_lr", false, both},
      {"inverse_sqrt", "linear warmup, then peak_lr·sqrt(W/(t+1))", false, both},
      {"wsd", "warmup, stable at peak_lr, linear decay to min_lr over the last fifth", false, both},
  };
}

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
  t.schedule.kind = nn::parse_schedule(c.variant);
  t.schedule.peak_lr = static_cast<float>(peak);
  t.schedule.min_lr = static_cast<float>(min_lr);
  t.schedule.total_steps = t.steps;
  t.schedule.warmup_steps = warmup_steps(c.params.real("warmup"), t.steps);
  t.schedule.step_every = std::max<std::size_t>(1, t.steps / 4);
  t.schedule.step_gamma = 0.5f;
  t.schedule.one_cycle_div = 25.0f;
  t.schedule.decay_fraction = 0.2f;
  t.eval_every = std::max<std::size_t>(1, t.steps / 10);
  t.eval_batches = 8;
  t.validate();
  return t;
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

class ScheduleRun : public Run {
 public:
  ScheduleRun(nn::TrainConfig config, double target, const Device& device)
      : config_(std::move(config)), target_(target), device_(device),
        tokens_(nn::load_tokens(config_.data, config_.seq_len)), trainer_(config_, device_, tokens_) {}

  // One optimizer step; the schedule only sets its LR, so every schedule costs the same here.
  void step() override { trainer_.step(); }

  std::vector<Metric> finish() override {
    nn::Trainer trainer(config_, device_, tokens_);
    trainer.run();
    const auto& history = trainer.history();
    const auto& evals = trainer.evals();
    const std::vector<double> smooth = ls::smoothed_losses(history);

    // x: the 1-based step number, as StepRecord counts; the LR of step x is at(x − 1).
    Series lr{"lr", "step", "", {}, {}}, loss{"train_loss", "step", "nats", {}, {}};
    Series smoothed{"train_loss_smoothed", "step", "nats", {}, {}}, eval{"val_loss", "step", "nats", {}, {}};
    for (std::size_t i = 0; i < history.size(); ++i) {
      const double x = static_cast<double>(history[i].step);
      lr.x.push_back(x);
      lr.y.push_back(history[i].lr);
      loss.x.push_back(x);
      loss.y.push_back(history[i].loss);
      smoothed.x.push_back(x);
      smoothed.y.push_back(smooth[i]);
    }
    for (const auto& e : evals) {
      eval.x.push_back(static_cast<double>(e.step));
      eval.y.push_back(e.loss);
    }
    series_ = {lr, loss, smoothed, eval};

    return {
        {"final_val_loss", evals.back().loss, "nats", Better::lower},
        {"final_train_loss", smooth.back(), "nats", Better::lower},
        {"steps_to_target", ls::steps_to_target(history, target_), "steps", Better::lower},
        {"diverged", ls::diverged(history) ? 1.0 : 0.0, "", Better::lower},
        {"initial_train_loss", history.front().loss, "nats", Better::lower, false},
    };
  }

  std::vector<Series> series() const override { return series_; }

 private:
  nn::TrainConfig config_;
  double target_;
  Device device_;
  nn::TokenSplit tokens_;
  nn::Trainer trainer_;  // the timed steps' trainer; finish() trains a fresh one
  std::vector<Series> series_;
};

}  // namespace

// ---- prepare

void LrScheduling::validate(const Case& c, DeviceKind) const { (void)ls::train_config(c); }

std::unique_ptr<Run> LrScheduling::prepare(const Case& c, const Device& device) const {
  nn::TrainConfig config = ls::train_config(c);
  if (device.is_cuda()) cuda::require_device(device.index);
  return std::make_unique<ScheduleRun>(std::move(config), c.params.real("target_loss"), device);
}

}  // namespace aiopt
