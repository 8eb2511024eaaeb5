#include "techniques/knowledge_distillation/knowledge_distillation.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "core/error.hpp"
#include "harness/seed_spread.hpp"
#include "kernels/cpu/distillation_loss.hpp"
#include "nn/config.hpp"
#include "nn/decoding.hpp"
#include "nn/model_cache.hpp"
#include "nn/training.hpp"
#include "techniques/technique_parts.hpp"
#include "techniques/training_case.hpp"

namespace aiopt {

namespace kd = knowledge_distillation;

// ---- parameters and variants

static std::string summary() {
  return "a small student trained on the data alone or against a trained teacher's soft targets";
}

static std::vector<ParamSpec> params() {
  std::vector<ParamSpec> out =
      training_case::params(300, 40, "the student's training budget, the same for both variants");
  out.push_back(choice_param("teacher", "small", std::nullopt, {"tiny", "small", "medium"}, "",
                             "the teacher's preset, trained by nn::standard_training and kept in the model cache"));
  out.push_back(real_param("temperature", 2.0, std::nullopt, 0.0, unbounded, "",
                           "T: both distributions softened as softmax(logits/T); at least 1e-6"));
  out.push_back(real_param("alpha", 0.5, std::nullopt, 0.0, 1.0, "",
                           "weight of the soft term α·T²·KL; the hard-label cross-entropy gets 1 − α"));
  out.push_back(real_param("peak_lr", 3e-3, std::nullopt, 0.0, unbounded, "",
                           "the student's peak learning rate (AdamW, warmup_cosine)"));
  out.push_back(integer_param("decode_tokens", 64, 16, 1, unbounded, "tokens",
                              "greedy tokens each model decodes with a KV cache for the decode speedup"));
  out.push_back(seeds_param(2));
  return out;
}

const VariantTable<kd::Variant>& kd::variants() {
  static const VariantTable<Variant> table(
      "knowledge_distillation",
      {
          {Variant::hard_labels, "hard_labels", "the student trained on the data alone (cross-entropy)", true},
          {Variant::distilled, "distilled",
           "the student trained on α·T²·KL(teacher ‖ student at T) + (1 − α)·cross-entropy"},
      });
  return table;
}

static std::vector<Variant> variants() { return kd::variants().variants(); }

// ---- the case

nn::TrainConfig kd::teacher_config(const Case& c) { return nn::standard_training(c.params.string("teacher")); }

nn::TrainConfig kd::student_config(const Case& c, Variant variant) {
  nn::TrainConfig t = training_case::base_config("knowledge_distillation", c);
  const double temperature = c.params.real("temperature"), alpha = c.params.real("alpha");
  const double peak = c.params.real("peak_lr");
  if (!(temperature >= kernels::cpu::min_temperature) || !std::isfinite(temperature)) {
    std::ostringstream m;
    m << "knowledge_distillation: parameter 'temperature' = " << temperature << "; allowed: a finite number >= "
      << kernels::cpu::min_temperature;
    throw InputError(m.str());
  }
  if (!(alpha >= 0.0 && alpha <= 1.0)) {
    std::ostringstream m;
    m << "knowledge_distillation: parameter 'alpha' = " << alpha << "; allowed: 0 to 1";
    throw InputError(m.str());
  }
  if (!(peak > 0) || !std::isfinite(peak)) {
    std::ostringstream m;
    m << "knowledge_distillation: parameter 'peak_lr' = " << peak << "; allowed: a positive finite number";
    throw InputError(m.str());
  }
  const nn::TrainConfig teacher = teacher_config(c);
  if (t.model.vocab != teacher.model.vocab)
    throw InputError("knowledge_distillation: parameter 'vocab' = " + std::to_string(t.model.vocab) +
                     "; the student shares the teacher's vocabulary of " + std::to_string(teacher.model.vocab) +
                     " (allowed: 0, the preset's, or " + std::to_string(teacher.model.vocab) + ")");
  if (t.seq_len > teacher.model.context)
    throw InputError("knowledge_distillation: parameter 'seq_len' = " + std::to_string(t.seq_len) +
                     "; allowed: up to the teacher's context of " + std::to_string(teacher.model.context));
  t.schedule.kind = nn::ScheduleKind::warmup_cosine;
  t.schedule.peak_lr = static_cast<float>(peak);
  t.schedule.min_lr = t.schedule.peak_lr / 10.0f;
  t.schedule.warmup_steps = t.steps / 10;
  t.eval_every = std::max<std::size_t>(1, t.steps / 10);
  t.eval_batches = 8;
  if (variant == Variant::distilled)
    t.distillation = nn::TrainConfig::Distillation{
        std::make_shared<const nn::TrainConfig>(teacher),
        {static_cast<float>(temperature), static_cast<float>(alpha)}};
  t.validate();
  return t;
}

// ---- what the student keeps

kd::Agreement kd::agreement(nn::Gpt& student, nn::Gpt& teacher, std::span<const nn::Batch> windows) {
  double agree = 0.0, kl = 0.0;
  std::size_t positions = 0;
  const kernels::cpu::Distillation at_one{1.0f, 1.0f};
  for (const nn::Batch& b : windows) {
    const Tensor s = student.forward(b.inputs, b.batch, b.seq_len, nn::Logits::all).to(Device::cpu());
    const Tensor t = teacher.forward(b.inputs, b.batch, b.seq_len, nn::Logits::all).to(Device::cpu());
    const std::size_t rows = b.batch * b.seq_len, vocab = student.config().vocab;
    std::vector<float> losses(rows), row_kl(rows);
    kernels::cpu::distillation_loss(s.data<float>(), t.data<float>(), b.targets.data(), losses.data(), row_kl.data(),
                                    nullptr, rows, vocab, at_one);
    for (std::size_t r = 0; r < rows; ++r) {
      const std::span<const float> sr(s.data<float>() + r * vocab, vocab), tr(t.data<float>() + r * vocab, vocab);
      agree += nn::argmax(sr) == nn::argmax(tr);
      kl += row_kl[r];
    }
    positions += rows;
  }
  return {agree / static_cast<double>(positions), kl / static_cast<double>(positions)};
}

double kd::unigram_loss(std::span<const std::int32_t> train, std::size_t vocab, std::span<const nn::Batch> windows) {
  std::vector<double> count(vocab, 1.0);
  for (auto t : train) count[static_cast<std::size_t>(t)] += 1.0;
  const double total = static_cast<double>(train.size() + vocab);
  double sum = 0.0;
  std::size_t n = 0;
  for (const nn::Batch& b : windows)
    for (auto y : b.targets) sum -= std::log(count[static_cast<std::size_t>(y)] / total), ++n;
  return sum / static_cast<double>(n);
}

double kd::quality_retained(double unigram, double student, double teacher) {
  if (!(unigram > teacher)) return std::numeric_limits<double>::quiet_NaN();
  return (unigram - student) / (unigram - teacher);
}

// ---- the runtime checks

double kd::check_alpha_zero_equivalence(const nn::TrainConfig& config, std::shared_ptr<nn::Gpt> teacher,
                                      const nn::TokenSplit& tokens, const Device& device) {
  nn::TrainConfig hard = config;
  hard.distillation.reset();
  nn::TrainConfig soft = config;
  soft.distillation = nn::TrainConfig::Distillation{std::make_shared<const nn::TrainConfig>(*config.distillation->teacher),
                                                    {1.0f, 0.0f}};
  nn::Trainer a(hard, device, tokens), b(soft, device, tokens);
  b.set_teacher(std::move(teacher));
  double largest = 0.0;
  for (std::size_t i = 0; i < equivalence_steps; ++i) {
    const double want = a.step().loss, got = b.step().loss;
    largest = std::max(largest, std::fabs(got - want));
    if (!(std::fabs(got - want) <= equivalence_tolerance)) {
      std::ostringstream m;
      m << "knowledge_distillation: at T = 1, alpha = 0 the distilled loss of step " << i + 1 << " is " << got
        << " nats where hard-label training's is " << want << " (seed " << config.seed << "); allowed ±"
        << equivalence_tolerance;
      throw CheckFailed(m.str());
    }
  }
  return largest;
}

double kd::check_self_distillation(std::shared_ptr<nn::Gpt> teacher, const nn::Batch& window, float temperature) {
  const nn::GptWeights& w = teacher->weights();
  nn::GptWeights grads = nn::GptWeights::zeros(w.config, w.wte.device());
  nn::TrainingOptions options;
  options.distill = {teacher, {temperature, 1.0f}};
  const double loss = nn::forward_backward(w, window, grads, options, 1.0f, teacher->stream()).loss;
  if (!(loss <= self_kl_tolerance)) {
    std::ostringstream m;
    m << "knowledge_distillation: the teacher distilled into itself at T = " << temperature << " has T²·KL = " << loss
      << " nats; a student equal to its teacher has 0 (allowed " << self_kl_tolerance << ")";
    throw CheckFailed(m.str());
  }
  return loss;
}

// ---- the run

namespace {

// One seed's student: its training record and what it keeps of the teacher.
struct Student {
  std::vector<nn::StepRecord> history;
  std::vector<nn::EvalRecord> evals;
  std::vector<Metric> metrics;
};

// Milliseconds per greedy decode step with an f32 KV cache: the median over `repeats` generations
// of `count` tokens after `prompt`, after one generation that warms the caches and threads.
double decode_ms(nn::Gpt& model, std::span<const std::int32_t> prompt, std::size_t count) {
  constexpr int repeats = 3;
  (void)nn::generate(model, prompt, count, nn::SamplingParams{}, DType::f32);
  std::vector<double> steps;
  for (int i = 0; i < repeats; ++i) {
    const nn::Generation g = nn::generate(model, prompt, count, nn::SamplingParams{}, DType::f32);
    steps.insert(steps.end(), g.step_ms.begin(), g.step_ms.end());
  }
  if (steps.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::nth_element(steps.begin(), steps.begin() + static_cast<std::ptrdiff_t>(steps.size() / 2), steps.end());
  return steps[steps.size() / 2];
}

class DistillationRun : public Run {
 public:
  DistillationRun(kd::Variant variant, nn::TrainConfig config, nn::TrainConfig baseline, std::shared_ptr<nn::Gpt> teacher,
                  double teacher_loss, std::size_t seeds, std::size_t decode_tokens, const Device& device)
      : variant_(variant), config_(std::move(config)), baseline_(std::move(baseline)), teacher_(std::move(teacher)),
        teacher_loss_(teacher_loss), seeds_(seeds), decode_tokens_(decode_tokens), device_(device),
        tokens_(nn::load_tokens(config_.data, config_.seq_len)),
        windows_(nn::validation_batches(tokens_.validation, config_.batch, config_.seq_len, config_.eval_batches)),
        trainer_(config_, device_, tokens_) {
    if (config_.distillation) trainer_.set_teacher(teacher_);
  }

  // One optimizer step of the student; a distilled step also runs the teacher's forward.
  void step() override { trainer_.step(); }

  // Trains the student from each of the seeds (the case seed, seed + 1, ...), and the hard-label
  // baseline from the same seeds unless this is it; the distilled variant first runs its two
  // checks. The metrics are means over the seeds, the curves the first seed's.
  std::vector<Metric> finish() override {
    const bool distilled = variant_ == kd::Variant::distilled;
    double self_kl = 0.0, alpha_zero_gap = 0.0;
    if (distilled) {
      alpha_zero_gap = kd::check_alpha_zero_equivalence(config_, teacher_, tokens_, device_);
      self_kl = kd::check_self_distillation(teacher_, windows_.front(), config_.distillation->loss.temperature);
    }
    const double unigram = kd::unigram_loss(tokens_.train, config_.model.vocab, windows_);
    const double teacher_decode = decode_ms(*teacher_, prompt(), decode_tokens_);
    std::vector<std::vector<Metric>> runs, baseline_runs;
    for (std::size_t i = 0; i < seeds_; ++i) {
      nn::TrainConfig config = config_;
      config.seed = config_.seed + i;
      const Student s = train(config, unigram, teacher_decode);
      if (i == 0) record_series(s);
      runs.push_back(s.metrics);
      if (!distilled || seeds_ < 2) continue;
      nn::TrainConfig base = baseline_;
      base.seed = baseline_.seed + i;
      baseline_runs.push_back(train(base, unigram, teacher_decode).metrics);
    }
    if (!distilled) baseline_runs = runs;
    std::vector<Metric> out =
        over_seeds(runs, {"student_val_loss", "teacher_agreement", "kl_teacher_student", "quality_retained"});
    for (const auto& [name, unit, better] :
         {std::tuple{"student_val_loss", "nats", Better::lower}, std::tuple{"teacher_agreement", "", Better::higher},
          std::tuple{"kl_teacher_student", "nats", Better::lower}})
      for (auto& m : noise_verdict(name, unit, better, values_of(runs, name), values_of(baseline_runs, name)))
        out.push_back(std::move(m));
    out.push_back({"teacher_val_loss", teacher_loss_, "nats", Better::lower, false});
    out.push_back({"unigram_val_loss", unigram, "nats", Better::lower, false});
    out.push_back({"parameter_ratio",
                   static_cast<double>(config_.model.parameter_count()) /
                       static_cast<double>(teacher_->config().parameter_count()),
                   "", Better::lower, false});
    if (distilled) {
      out.push_back({"self_distillation_kl", self_kl, "nats", Better::lower, false});
      out.push_back({"alpha_zero_loss_gap", alpha_zero_gap, "nats", Better::lower, false});
    }
    if (seeds_ >= 2)
      series_.push_back(by_seed("student_val_loss", "nats", config_.seed, values_of(runs, "student_val_loss")));
    return out;
  }

  std::vector<Series> series() const override { return series_; }

 private:
  // The first validation window's first 16 tokens.
  std::span<const std::int32_t> prompt() const {
    return std::span<const std::int32_t>(windows_.front().inputs).first(std::min<std::size_t>(16, config_.seq_len));
  }

  Student train(const nn::TrainConfig& config, double unigram, double teacher_decode) const {
    nn::Trainer trainer(config, device_, tokens_);
    if (config.distillation) trainer.set_teacher(teacher_);
    trainer.run();
    Student s{trainer.history(), trainer.evals(), {}};
    for (const auto& r : s.history)
      if (!std::isfinite(r.loss)) {
        std::ostringstream m;
        m << "knowledge_distillation: step " << r.step << "'s training loss is " << r.loss << " (seed " << config.seed
          << "); a finite loss of finite logits cannot become non-finite in a correct fp32 run";
        throw CheckFailed(m.str());
      }
    const double loss = s.evals.back().loss;
    nn::Gpt student(nn::GptWeights::allocate(config.model, device_));
    student.weights().copy_from(trainer.weights());
    const kd::Agreement a = kd::agreement(student, *teacher_, windows_);
    const double student_decode = decode_ms(student, prompt(), decode_tokens_);
    s.metrics = {
        {"student_val_loss", loss, "nats", Better::lower},
        {"teacher_agreement", a.top1, "", Better::higher},
        {"kl_teacher_student", a.kl, "nats", Better::lower},
        {"quality_retained", kd::quality_retained(unigram, loss, teacher_loss_), "", Better::higher},
        // What the student's size buys at inference, the same for both variants' students: not
        // compared between them.
        {"decode_speedup", teacher_decode / student_decode, "x", Better::higher, false, true},
        {"student_decode_ms", student_decode, "ms", Better::lower, false, true},
        {"teacher_decode_ms", teacher_decode, "ms", Better::lower, false, true},
    };
    return s;
  }

  // x: the 1-based step number; train_loss is the loss the variant differentiates (the
  // distillation loss for distilled), val_loss the hard-label cross-entropy on validation.
  void record_series(const Student& s) {
    Series train{"train_loss", "step", "nats", {}, {}}, val{"val_loss", "step", "nats", {}, {}};
    for (const auto& r : s.history) {
      train.x.push_back(static_cast<double>(r.step));
      train.y.push_back(r.loss);
    }
    for (const auto& e : s.evals) {
      val.x.push_back(static_cast<double>(e.step));
      val.y.push_back(e.loss);
    }
    series_ = {train, val};
  }

  kd::Variant variant_;
  nn::TrainConfig config_;
  nn::TrainConfig baseline_;  // hard_labels from the same seeds
  std::shared_ptr<nn::Gpt> teacher_;
  double teacher_loss_;
  std::size_t seeds_, decode_tokens_;
  Device device_;
  nn::TokenSplit tokens_;
  std::vector<nn::Batch> windows_;  // the validation windows every figure is taken on
  nn::Trainer trainer_;             // the timed steps' trainer; finish() trains fresh ones
  std::vector<Series> series_;
};

}  // namespace

// ---- prepare

static void check(const Case& c, DeviceKind) { (void)kd::student_config(c, kd::variants().parse(c.variant)); }

static std::unique_ptr<Run> start(const Case& c, const Device& device) {
  const kd::Variant variant = kd::variants().parse(c.variant);
  nn::TrainConfig config = kd::student_config(c, variant);
  nn::TrainConfig baseline = kd::student_config(c, kd::Variant::hard_labels);
  nn::CachedModel cached = nn::trained_model(kd::teacher_config(c), device);
  auto teacher = std::make_shared<nn::Gpt>(std::move(cached.weights));
  // The teacher's loss on the student's validation windows (the cache's figure is on its own).
  const std::vector<nn::Batch> windows =
      nn::validation_batches(nn::load_tokens(config.data, config.seq_len).validation, config.batch, config.seq_len,
                             config.eval_batches);
  double teacher_loss = 0.0;
  for (const nn::Batch& b : windows) teacher_loss += nn::evaluate_loss(teacher->weights(), b);
  teacher_loss /= static_cast<double>(windows.size());
  return std::make_unique<DistillationRun>(variant, std::move(config), std::move(baseline), std::move(teacher),
                                           teacher_loss, static_cast<std::size_t>(c.params.integer("seeds")),
                                           static_cast<std::size_t>(c.params.integer("decode_tokens")), device);
}

std::unique_ptr<Technique> make_knowledge_distillation() {
  return make_technique(
      {"knowledge_distillation", "size vs retained quality", summary, params, variants, check, start});
}

}  // namespace aiopt
