#include "techniques/mixed_precision/mixed_precision.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "core/error.hpp"
#include "core/memory.hpp"
#include "harness/seed_spread.hpp"
#include "nn/optimizer.hpp"
#include "techniques/technique_parts.hpp"
#include "techniques/training_case.hpp"

namespace aiopt {

namespace mp = mixed_precision;

// ---- parameters and variants

static std::string summary() {
  return "training a fixed budget with fp32, fp16 (no, static or dynamic loss scaling) or bf16 storage of "
         "activations, weights and gradients; fp32 master weights and optimizer state";
}

static std::vector<ParamSpec> params() {
  std::vector<ParamSpec> out = training_case::params(
      300, 60, "the training budget finish() trains from a fresh initialization, for the variant and for fp32");
  out.push_back(real_param("lr", 3e-3, std::nullopt, 0.0, unbounded, "",
                           "AdamW's peak learning rate (warmup over a tenth of the budget, cosine down to lr/10)"));
  out.push_back(real_param("loss_scale", 1024.0, std::nullopt, 0.0, unbounded, "",
                           "fp16_static_scaling's fixed loss scale S"));
  out.push_back(real_param("initial_scale", 65536.0, std::nullopt, 0.0, unbounded, "",
                           "fp16_dynamic_scaling's first loss scale, halved on every overflow"));
  out.push_back(integer_param("growth_interval", 100, 20, 1, unbounded, "steps",
                              "fp16_dynamic_scaling doubles its scale after this many clean steps in a row"));
  out.push_back(seeds_param(std::nullopt));
  return out;
}

const VariantTable<mp::Precision>& mp::precisions() {
  static const VariantTable<Precision> table(
      "mixed_precision",
      {
          {Precision::fp32, "fp32", "every tensor in fp32", true},
          {Precision::fp16_no_scaling, "fp16_no_scaling",
           "fp16 storage, no loss scale: gradients below 2^-24 flush to zero"},
          {Precision::fp16_static_scaling, "fp16_static_scaling", "fp16 storage with the fixed loss scale loss_scale"},
          {Precision::fp16_dynamic_scaling, "fp16_dynamic_scaling",
           "fp16 storage with a loss scale from initial_scale, halved on overflow and doubled after growth_interval "
           "clean steps"},
          {Precision::bf16, "bf16", "bf16 storage (fp32's exponent range, 8 bits of mantissa), no loss scale"},
      });
  return table;
}

static std::vector<Variant> variants() { return mp::precisions().variants(); }

// ---- the case

DType mp::storage(Precision precision) {
  switch (precision) {
    case Precision::fp32: return DType::f32;
    case Precision::bf16: return DType::bf16;
    default: return DType::f16;
  }
}

nn::LossScaling mp::scaling(Precision precision) {
  switch (precision) {
    case Precision::fp16_static_scaling: return nn::LossScaling::fixed;
    case Precision::fp16_dynamic_scaling: return nn::LossScaling::dynamic;
    default: return nn::LossScaling::none;
  }
}

nn::TrainConfig mp::train_config(const Case& c, Precision precision) {
  nn::TrainConfig t = training_case::base_config("mixed_precision", c);
  const std::int64_t growth = c.params.integer("growth_interval");
  const double lr = c.params.real("lr"), loss_scale = c.params.real("loss_scale");
  const double initial_scale = c.params.real("initial_scale");
  auto positive = [](const char* name, double v) {
    if (!(v > 0) || !std::isfinite(v)) {
      std::ostringstream m;
      m << "mixed_precision: parameter '" << name << "' = " << v << "; allowed: a positive finite number";
      throw InputError(m.str());
    }
  };
  positive("lr", lr);
  positive("loss_scale", loss_scale);
  positive("initial_scale", initial_scale);
  // The scale multiplies fp32 gradients: past float's range it is no scale at all.
  for (auto [name, v] : {std::pair{"loss_scale", loss_scale}, std::pair{"initial_scale", initial_scale}})
    if (v > 1e30)
      throw InputError("mixed_precision: parameter '" + std::string(name) + "' = " + std::to_string(v) +
                       "; allowed: up to 1e30");
  t.schedule.kind = nn::ScheduleKind::warmup_cosine;
  t.schedule.peak_lr = static_cast<float>(lr);
  t.schedule.min_lr = static_cast<float>(lr / 10);
  t.schedule.total_steps = t.steps;
  t.schedule.warmup_steps = t.steps / 10;
  t.training.storage = storage(precision);
  t.scaling.kind = scaling(precision);
  if (t.scaling.kind == nn::LossScaling::fixed) t.scaling.scale = static_cast<float>(loss_scale);
  if (t.scaling.kind == nn::LossScaling::dynamic) {
    t.scaling.scale = static_cast<float>(initial_scale);
    t.scaling.growth_interval = static_cast<std::size_t>(growth);
  }
  t.eval_every = std::max<std::size_t>(1, t.steps / 10);
  t.eval_batches = 8;
  t.validate();
  return t;
}

// ---- the budget and the checks

double mp::gap_tolerance(double fp32_val_loss) {
  return std::max(gap_tolerance_nats, gap_tolerance_relative * fp32_val_loss);
}

bool mp::must_track_fp32(Precision precision) {
  return precision == Precision::fp16_static_scaling || precision == Precision::fp16_dynamic_scaling ||
         precision == Precision::bf16;
}

double mp::final_train_loss(const std::vector<nn::StepRecord>& history) {
  if (history.empty()) return std::numeric_limits<double>::quiet_NaN();
  const std::size_t k = std::max<std::size_t>(1, history.size() / 10);
  double sum = 0.0;
  for (std::size_t i = history.size() - k; i < history.size(); ++i) sum += history[i].loss;
  return sum / static_cast<double>(k);  // NaN propagates
}

mp::Outcome mp::train_budget(const nn::TrainConfig& config, const nn::TokenSplit& tokens, const Device& device,
                             void* stream) {
  nn::Trainer trainer(config, device, tokens, stream);
  trainer.run();
  Outcome o;
  o.history = trainer.history();
  o.evals = trainer.evals();
  o.final_val_loss = o.evals.empty() ? trainer.evaluate() : o.evals.back().loss;
  o.final_loss_scale = trainer.scaler().scale;
  return o;
}

std::size_t mp::forward_roundings(std::size_t layers) { return 15 * layers + 6; }
std::size_t mp::gradient_roundings(std::size_t layers) { return 23 * layers + 10; }

double mp::unit_roundoff(Precision precision) {
  switch (storage(precision)) {
    case DType::f16: return std::ldexp(1.0, -11);
    case DType::bf16: return std::ldexp(1.0, -8);
    default: return 0.0;
  }
}

mp::StepAgreement mp::first_step_agreement(const nn::TrainConfig& config, const nn::TrainConfig& fp32,
                                           const nn::TokenSplit& tokens, const std::vector<nn::StepRecord>& history,
                                           const Device& device) {
  StepAgreement a;
  std::size_t i = 0;
  while (i < history.size() && history[i].skipped) ++i;
  if (i == history.size()) return a;  // step 0: none applied
  a.step = i + 1;
  a.loss = history[i].loss;
  a.grad_norm = history[i].grad_norm;
  // The trainer's batches come from one sampler seeded with the case seed, `accumulate` (1 here)
  // per step: step i + 1 trained on the (i + 1)-th.
  nn::BatchSampler sampler(tokens.train, config.batch, config.seq_len, config.seed);
  nn::Batch batch = sampler.next();
  for (std::size_t j = 0; j < i * config.accumulate; ++j) batch = sampler.next();
  const nn::GptWeights weights = nn::GptWeights::initialize(config.model, config.seed, device);
  nn::GptWeights g32 = nn::GptWeights::zeros(config.model, device), g = nn::GptWeights::zeros(config.model, device);
  a.fp32_loss = nn::forward_backward(weights, batch, g32, fp32.training, 1.0f).loss;
  a.fp32_grad_norm = nn::global_norm(g32);
  const float scale = history[i].loss_scale;
  (void)nn::forward_backward(weights, batch, g, config.training, scale);

  const double normal = config.training.storage == DType::f16 ? std::ldexp(1.0, -14) : 0.0;
  const nn::GptWeights h32 = g32.to(Device::cpu()), h = g.to(Device::cpu());
  const auto n32 = h32.named(), n = h.named();
  double error_sq = 0.0, reference_sq = 0.0, nonzero = 0.0, below = 0.0, flushed = 0.0;
  for (std::size_t t = 0; t < n32.size(); ++t) {
    const float* x = n32[t].second->data<float>();
    const float* y = n[t].second->data<float>();
    for (std::int64_t e = 0; e < n32[t].second->numel(); ++e) {
      if (x[e] == 0.0f) continue;
      nonzero += 1.0;
      if (std::fabs(static_cast<double>(x[e]) * scale) < normal) {
        below += 1.0;
        flushed += y[e] == 0.0f;
        continue;
      }
      const double d = static_cast<double>(y[e]) / scale - x[e];
      error_sq += d * d;
      reference_sq += static_cast<double>(x[e]) * x[e];
    }
  }
  a.grad_error = reference_sq > 0 ? std::sqrt(error_sq / reference_sq) : 0.0;
  a.below_normal_fraction = nonzero > 0 ? below / nonzero : 0.0;
  a.flushed_fraction = nonzero > 0 ? flushed / nonzero : 0.0;
  a.below_normal_norm = std::sqrt(below) * normal / scale;
  return a;
}

// The bounds, to first order in the unit roundoff u of the storage format. Each of the n roundings
// on a path turns a stored x into x(1 + δ), |δ| <= u. In this pre-LN GPT at its initialization a
// relative error neither grows nor cancels through the blocks (every LayerNorm renormalizes its
// input), so what reaches the end of a path carries a relative error of at most n·u:
//   loss: the logits z carry ε <= n_f·u. A relative error ε of z changes a position's cross-entropy
//     by ε·(E_p[z] − z_y), and |E_p[z] − z_y| <= max(LSE(z) − z_y, H(p)) <= loss_pos + ln V, since
//     LSE(z) = E_p[z] + H(p) and H(p) <= ln V. Averaged over positions:
//     |loss − loss₃₂| <= n_f·u·(loss₃₂ + ln V).
//   gradient: the entries compared (scaled, in the format's normal range) carry n_b·u, so
//     ‖g − g₃₂‖ <= n_b·u·‖g₃₂‖ over them. The norm the optimizer applied also holds the entries
//     below the normal range, each within 2^-14/S of fp32's (both lie in [0, 2^-14/S] in
//     magnitude), so |‖g‖ − ‖g₃₂‖| <= n_b·u·‖g₃₂‖ + √(count below)·2^-14/S.
// A gradient left scaled (×S >= 1) or a scale applied twice is off by S − 1 or more in the norm.
void mp::check_first_step(Precision precision, const StepAgreement& a, std::size_t layers, std::size_t vocab) {
  if (precision == Precision::fp32) return;
  std::ostringstream m;
  m << "mixed_precision: variant " << to_string(precision) << ": ";
  if (a.step == 0) {
    m << "no step was applied: every step's gradients overflowed, so nothing trained";
    throw CheckFailed(m.str());
  }
  const double u = unit_roundoff(precision);
  const double loss_bound =
      static_cast<double>(forward_roundings(layers)) * u * (a.fp32_loss + std::log(static_cast<double>(vocab)));
  const double relative = static_cast<double>(gradient_roundings(layers)) * u;
  m << "at step " << a.step << " (the first applied, from the initialization) ";
  if (!(std::fabs(a.loss - a.fp32_loss) <= loss_bound)) {
    m << "the loss " << a.loss << " is " << std::fabs(a.loss - a.fp32_loss) << " from fp32's " << a.fp32_loss
      << " on the same batch; rounding allows " << loss_bound;
    throw CheckFailed(m.str());
  }
  if (!(a.grad_error <= relative)) {
    m << "the gradient differs from fp32's by " << a.grad_error << " of its norm (entries in the format's normal "
      << "range); rounding allows " << relative;
    throw CheckFailed(m.str());
  }
  const double norm_bound = relative * a.fp32_grad_norm + a.below_normal_norm;
  if (!(std::fabs(a.grad_norm - a.fp32_grad_norm) <= norm_bound)) {
    m << "the optimizer applied a gradient of norm " << a.grad_norm << " where fp32's is " << a.fp32_grad_norm
      << "; rounding allows " << norm_bound << " (was the loss scale divided out?)";
    throw CheckFailed(m.str());
  }
}

void mp::check(Precision precision, const std::vector<double>& val_losses,
               const std::vector<double>& fp32_val_losses) {
  std::ostringstream m;
  m << "mixed_precision: variant " << to_string(precision) << ": ";
  double gap = 0.0, fp32 = 0.0;
  for (std::size_t i = 0; i < fp32_val_losses.size(); ++i) {
    if (!std::isfinite(fp32_val_losses[i])) {
      m << "fp32's final validation loss is " << fp32_val_losses[i] << " on run " << i + 1 << " of "
        << fp32_val_losses.size() << "; the baseline itself did not train";
      throw CheckFailed(m.str());
    }
    gap += std::fabs(val_losses.at(i) - fp32_val_losses[i]);  // NaN propagates
    fp32 += fp32_val_losses[i];
  }
  if (!must_track_fp32(precision)) return;
  const double n = static_cast<double>(fp32_val_losses.size());
  gap /= n;
  fp32 /= n;
  if (!(gap <= gap_tolerance(fp32))) {
    m << "final validation loss";
    if (n > 1) m << " over " << n << " seeds:";
    for (std::size_t i = 0; i < val_losses.size(); ++i) m << (i ? ", " : " ") << val_losses[i];
    m << " is " << (n > 1 ? "on average " : "") << gap << " nats from fp32's";
    for (std::size_t i = 0; i < fp32_val_losses.size(); ++i) m << (i ? ", " : " ") << fp32_val_losses[i];
    m << "; it must be within max(" << gap_tolerance_nats << ", " << gap_tolerance_relative
      << " × fp32's) = " << gap_tolerance(fp32);
    throw CheckFailed(m.str());
  }
}

// ---- the run

namespace {

std::size_t parameter_count(const nn::GptWeights& w) {
  std::size_t n = 0;
  for (const auto& [name, t] : w.named()) n += static_cast<std::size_t>(t->numel());
  return n;
}

class MixedPrecisionRun : public Run {
 public:
  MixedPrecisionRun(mp::Precision precision, nn::TrainConfig config, nn::TrainConfig fp32, std::size_t seeds,
                    const Device& device)
      : precision_(precision), config_(std::move(config)), fp32_config_(std::move(fp32)), seeds_(seeds), device_(device),
        tokens_(nn::load_tokens(config_.data, config_.seq_len)), trainer_(config_, device_, tokens_) {}

  // One optimizer step of the variant, loss scaling and the overflow check included.
  void step() override { trainer_.step(); }

  // Trains the budget from each of the seeds (the case seed, seed + 1, ...) with the variant and
  // with fp32, the first applied step checked on each seed and the final gap over all of them
  // (mp::check); the training figures are means over the seeds, the curves the first seed's, the
  // memory one pass's at the first seed.
  std::vector<Metric> finish() override {
    std::vector<std::vector<Metric>> runs;
    for (std::size_t i = 0; i < seeds_; ++i) {
      nn::TrainConfig config = config_, fp32 = fp32_config_;
      config.seed = fp32.seed = config_.seed + i;
      runs.push_back(train_seed(config, fp32, i == 0));
    }
    mp::check(precision_, values_of(runs, "final_val_loss"), values_of(runs, "fp32_final_val_loss"));
    std::vector<Metric> out = over_seeds(runs, {"final_train_loss", "final_val_loss", "val_loss_gap_vs_fp32"});
    for (auto& m : noise_verdict("final_val_loss", "nats", Better::lower, values_of(runs, "final_val_loss"),
                                 values_of(runs, "fp32_final_val_loss")))
      out.push_back(std::move(m));
    if (seeds_ >= 2)
      series_.push_back(by_seed("final_val_loss", "nats", config_.seed, values_of(runs, "final_val_loss")));

    // One pass's activations on a fixed batch, gradients and weights allocated outside the scope.
    nn::BatchSampler sampler(tokens_.train, config_.batch, config_.seq_len, config_.seed);
    const nn::Batch batch = sampler.next();
    const nn::GptWeights weights = nn::GptWeights::initialize(config_.model, config_.seed, device_);
    nn::GptWeights grads = nn::GptWeights::zeros(config_.model, device_);
    auto activation_peak = [&](const nn::TrainingOptions& options) {
      memory::Scope scope(device_);
      nn::forward_backward(weights, batch, grads, options);
      return static_cast<double>(scope.peak_bytes());
    };
    const double peak = activation_peak(config_.training);
    const double fp32_peak = precision_ == mp::Precision::fp32 ? peak : activation_peak(fp32_config_.training);
    const bool half = mp::storage(precision_) != DType::f32;
    const double params = static_cast<double>(parameter_count(weights));
    // What a real 16-bit implementation would hold: every fp32 activation of the pass at 2 bytes,
    // plus the 16-bit copy of the weights the products read (README.md "Memory").
    const double analytic = half ? fp32_peak / 2 + 2 * params : fp32_peak;
    const std::vector<Metric> memory = {
        {"activation_peak_bytes", peak, "B", Better::lower},
        {"activation_bytes_if_16bit", analytic, "B", Better::lower, false},
        {"master_weight_bytes", static_cast<double>(weights.bytes()), "B", Better::lower},
        {"weight_copy_bytes_if_16bit", half ? 2 * params : 0.0, "B", Better::lower, false},
    };
    out.insert(out.end(), memory.begin(), memory.end());
    return out;
  }

  std::vector<Series> series() const override { return series_; }

 private:
  // The variant's and fp32's budgets from `config`'s seed, the first step checked, and their
  // training figures; the curves recorded when `curves`. A failed check names the seed.
  std::vector<Metric> train_seed(const nn::TrainConfig& config, const nn::TrainConfig& fp32_config, bool curves) {
    const mp::Outcome run = mp::train_budget(config, tokens_, device_);
    const mp::Outcome base = precision_ == mp::Precision::fp32 ? run : mp::train_budget(fp32_config, tokens_, device_);
    const mp::StepAgreement first = mp::first_step_agreement(config, fp32_config, tokens_, run.history, device_);
    try {
      mp::check_first_step(precision_, first, config.model.layers, config.model.vocab);
    } catch (const CheckFailed& e) {
      throw CheckFailed(std::string(e.what()) + " (seed " + std::to_string(config.seed) + ")");
    }
    if (curves) record_series(run, base);

    double zero_sum = 0.0;
    std::size_t overflows = 0, skipped = 0;
    for (const auto& r : run.history) {
      zero_sum += r.zero_grad_fraction;
      overflows += r.nonfinite_grads > 0;
      skipped += r.skipped;
    }
    const double steps = static_cast<double>(run.history.size());
    return {
        {"final_train_loss", mp::final_train_loss(run.history), "nats", Better::lower},
        {"final_val_loss", run.final_val_loss, "nats", Better::lower},
        {"fp32_final_val_loss", base.final_val_loss, "nats", Better::lower, false},
        {"val_loss_gap_vs_fp32", std::fabs(run.final_val_loss - base.final_val_loss), "nats", Better::lower},
        {"first_step_loss_gap", std::fabs(first.loss - first.fp32_loss), "nats", Better::lower, false},
        {"first_step_grad_error", first.grad_error, "", Better::lower, false},
        {"first_step_below_normal_fraction", first.below_normal_fraction, "", Better::lower, false},
        {"first_step_flushed_fraction", first.flushed_fraction, "", Better::lower, false},
        {"zero_grad_fraction", zero_sum / steps, "", Better::lower},
        {"zero_grad_fraction_first_step", run.history.front().zero_grad_fraction, "", Better::lower},
        {"overflow_steps", static_cast<double>(overflows), "steps", Better::lower},
        {"skipped_steps", static_cast<double>(skipped), "steps", Better::lower},
        {"final_loss_scale", run.final_loss_scale, "", Better::higher, false},
    };
  }

  void record_series(const mp::Outcome& run, const mp::Outcome& base) {
    auto per_step = [](const std::string& name, const std::string& unit, const std::vector<nn::StepRecord>& h,
                       auto value) {
      Series s{name, "step", unit, {}, {}};
      for (const auto& r : h) {
        s.x.push_back(static_cast<double>(r.step));
        s.y.push_back(value(r));
      }
      return s;
    };
    series_.clear();
    series_.push_back(per_step("train_loss", "nats", run.history, [](const auto& r) { return r.loss; }));
    series_.push_back(per_step("fp32_train_loss", "nats", base.history, [](const auto& r) { return r.loss; }));
    Series val{"val_loss", "step", "nats", {}, {}};
    for (const auto& e : run.evals) {
      val.x.push_back(static_cast<double>(e.step));
      val.y.push_back(e.loss);
    }
    series_.push_back(val);
    series_.push_back(per_step("loss_scale", "", run.history, [](const auto& r) { return double{r.loss_scale}; }));
    series_.push_back(
        per_step("zero_grad_fraction", "", run.history, [](const auto& r) { return r.zero_grad_fraction; }));
  }

  mp::Precision precision_;
  nn::TrainConfig config_, fp32_config_;
  std::size_t seeds_;
  Device device_;
  nn::TokenSplit tokens_;
  nn::Trainer trainer_;  // the timed steps' trainer; finish() trains fresh ones
  std::vector<Series> series_;
};

}  // namespace

// ---- prepare

static void check(const Case& c, DeviceKind) {
  (void)mp::train_config(c, mp::parse_precision(c.variant));
}

static std::unique_ptr<Run> start(const Case& c, const Device& device) {
  const mp::Precision precision = mp::parse_precision(c.variant);
  nn::TrainConfig config = mp::train_config(c, precision);
  nn::TrainConfig fp32 = mp::train_config(c, mp::Precision::fp32);
  return std::make_unique<MixedPrecisionRun>(precision, std::move(config), std::move(fp32),
                                             static_cast<std::size_t>(c.params.integer("seeds")), device);
}

std::unique_ptr<Technique> make_mixed_precision() {
  return make_technique(
      {"mixed_precision", "numerical stability vs speed and memory", summary, params, variants, check, start});
}

}  // namespace aiopt
