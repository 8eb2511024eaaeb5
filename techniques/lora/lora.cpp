#include "techniques/lora/lora.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <unistd.h>

#include "core/error.hpp"
#include "core/fault.hpp"
#include "core/memory.hpp"
#include "nn/model_cache.hpp"
#include "nn/training.hpp"
#include "techniques/model_params.hpp"
#include "techniques/technique_parts.hpp"

namespace aiopt {

// ---- parameters and variants

static std::string summary() {
  return "fine-tuning a trained GPT on a new dialect: every weight, low-rank adapters on a frozen base, or adapters "
         "on an int4 base; trainable parameters, optimizer state and peak memory against the loss reached";
}

static std::vector<ParamSpec> params() {
  std::vector<ParamSpec> out = model_params::specs("small", "tiny");
  out.push_back(integer_param("rank", 8, std::nullopt, 1, unbounded, "",
                              "r: the adapters' rank, 1 to min(in, out) of the adapted layers (lora, qlora)"));
  out.push_back(real_param("alpha", 16.0, std::nullopt, 0.0, unbounded, "",
                           "the adapters' scale is alpha / r (lora, qlora); must be positive"));
  out.push_back(choice_param("targets", "qv", std::nullopt, {"qv", "all"}, "",
                             "qv: the attention's query and value projections; all: every block linear layer"));
  out.push_back(choice_param("group_size", "64", std::nullopt, {"32", "64", "128"}, "weights",
                             "qlora: weights per int4 scale of the frozen base"));
  out.push_back(integer_param("batch", 8, 4, 1, unbounded, "sequences", "sequences per fine-tuning step"));
  out.push_back(integer_param("seq_len", 128, 64, 1, unbounded, "tokens", "tokens per sequence; at most the context"));
  out.push_back(integer_param("steps", 200, 20, 1, unbounded, "steps",
                              "fine-tuning steps on dialect 1, the budget finish() trains from the base"));
  out.push_back(real_param("lr", 5e-4, std::nullopt, 0.0, unbounded, "",
                           "full_finetune's peak learning rate (warmup a tenth of the steps, cosine to lr/10)"));
  out.push_back(real_param("adapter_lr", 3e-3, std::nullopt, 0.0, unbounded, "",
                           "lora's and qlora's peak learning rate, same schedule"));
  out.push_back(integer_param("eval_batches", 8, 2, 1, unbounded, "batches",
                              "validation batches each eval loss is averaged over"));
  return out;
}

const VariantTable<lora::Method>& lora::methods() {
  static const VariantTable<Method> table(
      "lora", {
                  {Method::full_finetune, "full_finetune", "every weight trainable (AdamW state for all of them)", true},
                  {Method::lora, "lora", "the base frozen in fp32; rank-r adapters y += (alpha/r)·x·Aᵀ·Bᵀ trained"},
                  {Method::qlora, "qlora",
                   "as lora with the frozen block linear weights held in int4, dequantized one layer at a time in "
                   "the pass (CPU: CUDA has no int4 dequantization kernel yet)",
                   false, {DeviceKind::cpu}},
              });
  return table;
}

static std::vector<Variant> variants() { return lora::methods().variants(); }

// ---- the case

lora::Plan lora::plan(const Case& c) {
  Plan p;
  p.method = parse_method(c.variant);
  const std::string preset = c.params.string("preset");
  p.base = nn::standard_training(preset);
  p.base.model = model_params::config(c.params);
  if (p.base.model.vocab != 256)
    throw InputError("lora: parameter 'vocab' = " + std::to_string(p.base.model.vocab) +
                     "; the corpus is bytes: allowed 0 (the preset's) or 256");
  p.base.seq_len = std::min(p.base.seq_len, p.base.model.context);

  nn::TrainConfig& t = p.fine_tune;
  t = p.base;
  t.seed = c.seed;
  t.data.dialect = 1;
  t.data.train_bytes = std::size_t{1} << 20;
  t.batch = static_cast<std::size_t>(c.params.integer("batch"));
  t.seq_len = static_cast<std::size_t>(c.params.integer("seq_len"));
  if (t.seq_len > t.model.context)
    throw InputError("lora: parameter 'seq_len' = " + std::to_string(t.seq_len) + "; allowed: 1 to the model's context of " +
                     std::to_string(t.model.context) + " (" + t.model.describe() + ")");
  t.steps = static_cast<std::size_t>(c.params.integer("steps"));
  t.eval_every = 0;
  t.eval_batches = static_cast<std::size_t>(c.params.integer("eval_batches"));
  const double lr = c.params.real(p.method == Method::full_finetune ? "lr" : "adapter_lr");
  if (!(lr > 0.0)) throw InputError("lora: the learning rate must be positive, got " + std::to_string(lr));
  t.schedule.peak_lr = static_cast<float>(lr);
  t.schedule.min_lr = static_cast<float>(lr / 10);
  t.schedule.total_steps = t.steps;
  t.schedule.warmup_steps = t.steps / 10;
  if (p.method != Method::full_finetune) {
    nn::LoraConfig l;
    const std::int64_t rank = c.params.integer("rank");
    l.rank = static_cast<std::size_t>(std::max<std::int64_t>(rank, 0));
    l.alpha = static_cast<float>(c.params.real("alpha"));
    l.targets = nn::parse_lora_targets(c.params.string("targets"));
    l.seed = c.seed;
    l.int4_base = p.method == Method::qlora;
    l.int4_group = std::stoul(c.params.string("group_size"));
    try {
      l.validate(t.model);
    } catch (const InputError& e) {
      throw InputError(std::string("lora: ") + e.what());
    }
    t.lora = l;
  }
  t.validate();
  return p;
}

namespace {

// The weights as the pass reads them, in fp32: the trainer's, with QLoRA's int4 base dequantized
// into the block linear tensors.
nn::GptWeights fp32_weights(const nn::Trainer& trainer) {
  const nn::GptWeights& w = trainer.weights();
  const nn::Int4Base* base = trainer.int4_base();
  if (!base) return w.to(w.wte.device());
  nn::GptWeights out = nn::GptWeights::allocate(w.config, w.wte.device());
  auto mine = out.named();
  const auto theirs = w.named();
  for (std::size_t i = 0; i < mine.size(); ++i)
    if (theirs[i].second->numel() != 0) mine[i].second->copy_from(*theirs[i].second);
  for (std::size_t l = 0; l < out.blocks.size(); ++l)
    for (nn::BlockLinear linear : nn::block_linears)
      base->dequantize(l, linear, nn::block_linear_weight(out.blocks[l], linear).data<float>());
  return out;
}

double max_abs(const Tensor& t) {
  const Tensor host = t.to(Device::cpu());
  double m = 0.0;
  for (std::int64_t i = 0; i < host.numel(); ++i) m = std::max(m, std::fabs(double{host.data<float>()[i]}));
  return m;
}

double max_abs_difference(const Tensor& a, const Tensor& b) {
  const Tensor ha = a.to(Device::cpu()), hb = b.to(Device::cpu());
  double m = 0.0;
  for (std::int64_t i = 0; i < ha.numel(); ++i) {
    const double d = std::fabs(double{ha.data<float>()[i]} - double{hb.data<float>()[i]});
    m = std::isnan(d) ? INFINITY : std::max(m, d);
  }
  return m;
}

}  // namespace

double lora::merged_logit_difference(const nn::Trainer& trainer, const nn::Batch& batch, void* stream) {
  const nn::LoraAdapters* adapters = trainer.adapters();
  if (!adapters) throw std::logic_error("lora::merged_logit_difference: the trainer has no adapters");
  const Tensor unmerged =
      nn::forward_logits(trainer.weights(), batch, trainer.config().training, stream, trainer.adaptation());
  nn::GptWeights merged = fp32_weights(trainer);
  if (fault::active("lora.merge_unscaled")) {
    nn::LoraConfig unscaled = adapters->config();
    unscaled.alpha = static_cast<float>(unscaled.rank);
    nn::LoraAdapters copy = nn::LoraAdapters::initialize(adapters->model(), unscaled, merged.wte.device());
    copy.copy_from(*adapters);
    copy.merge_into(merged, stream);
  } else {
    adapters->merge_into(merged, stream);
  }
  const Tensor logits = nn::forward_logits(merged, batch, trainer.config().training, stream);
  const double scale = max_abs(unmerged);
  return scale > 0 ? max_abs_difference(logits, unmerged) / scale : max_abs_difference(logits, unmerged);
}

std::optional<std::string> lora::changed_weight(const nn::Trainer& trainer, const nn::GptWeights& base) {
  const auto mine = trainer.weights().named();
  const auto theirs = base.named();
  for (std::size_t i = 0; i < mine.size(); ++i) {
    if (mine[i].second->numel() == 0) continue;  // held in int4
    const Tensor a = mine[i].second->to(Device::cpu()), b = theirs[i].second->to(Device::cpu());
    if (a.bytes() != b.bytes() || std::memcmp(a.data<float>(), b.data<float>(), a.bytes()) != 0) return mine[i].first;
  }
  return std::nullopt;
}

// ---- the run

namespace {

std::size_t block_linear_bytes(const nn::GptWeights& w) {
  std::size_t n = 0;
  for (const auto& b : w.blocks)
    for (nn::BlockLinear linear : nn::block_linears) n += nn::block_linear_weight(b, linear).bytes();
  return n;
}

class LoraRun : public Run {
 public:
  LoraRun(lora::Plan plan, const Device& device)
      : plan_(std::move(plan)), device_(device), base_(nn::trained_model(plan_.base, device_).weights),
        tokens_(nn::load_tokens(plan_.fine_tune.data, plan_.fine_tune.seq_len)),
        timed_(plan_.fine_tune, device_, tokens_, base_) {}

  // One fine-tuning step: forward, backward (frozen weights get no gradient), the update.
  void step() override { timed_.step(); }

  std::vector<Metric> finish() override {
    const lora::Method method = plan_.method;
    std::ostringstream where;
    where << "lora: variant " << lora::to_string(method) << " (" << plan_.fine_tune.model.describe();
    if (plan_.fine_tune.lora) where << ", r = " << plan_.fine_tune.lora->rank << ", " << nn::to_string(plan_.fine_tune.lora->targets);
    where << "): ";

    // Peak memory of fine-tuning: the trainer made from the base (its weights, gradients and
    // optimizer state) and two steps' activations; the base model itself is loaded outside.
    std::size_t peak = 0;
    {
      memory::Scope scope(device_);
      nn::Trainer probe(plan_.fine_tune, device_, tokens_, base_);
      probe.step();
      probe.step();
      peak = scope.peak_bytes();
    }

    // Quality: the budget trained from the base, then evaluated on both dialects.
    nn::TrainConfig dialect0 = plan_.fine_tune;
    dialect0.data.dialect = 0;
    const nn::TokenSplit old_tokens = nn::load_tokens(dialect0.data, dialect0.seq_len);
    const auto validation = [&](const nn::TokenSplit& t) {
      return nn::validation_batches(t.validation, plan_.fine_tune.batch, plan_.fine_tune.seq_len,
                                    plan_.fine_tune.eval_batches);
    };
    const std::vector<nn::Batch> task = validation(tokens_), old = validation(old_tokens);
    const auto loss_on = [&](const std::vector<nn::Batch>& batches, const nn::GptWeights& w, const nn::Adaptation& a) {
      double sum = 0.0;
      for (const nn::Batch& b : batches) sum += nn::evaluate_loss(w, b, plan_.fine_tune.training, nullptr, a);
      return sum / static_cast<double>(batches.size());
    };
    const double base_task = loss_on(task, base_, {}), base_old = loss_on(old, base_, {});

    nn::Trainer trainer(plan_.fine_tune, device_, tokens_, base_);
    const auto start = std::chrono::steady_clock::now();
    losses_.clear();
    for (std::size_t s = 0; s < plan_.fine_tune.steps; ++s) losses_.push_back(trainer.step().loss);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const nn::Adaptation reads = trainer.adaptation();
    const double task_loss = loss_on(task, trainer.weights(), {reads.adapters, nullptr, reads.base});
    const double old_loss = loss_on(old, trainer.weights(), {reads.adapters, nullptr, reads.base});

    const double total = static_cast<double>(base_.config.parameter_count());
    const double trainable = static_cast<double>(trainer.trainable_parameters());
    std::vector<Metric> out = {
        {"eval_loss_task", task_loss, "nats", Better::lower},
        {"eval_loss_forgetting", old_loss, "nats", Better::lower},
        {"base_eval_loss_task", base_task, "nats", Better::lower, false},
        {"base_eval_loss_forgetting", base_old, "nats", Better::lower, false},
        {"final_train_loss", losses_.back(), "nats", Better::lower},
        {"trainable_parameters", trainable, "", Better::lower},
        {"trainable_fraction", trainable / total, "", Better::lower},
        {"optimizer_state_bytes", static_cast<double>(trainer.optimizer().state_bytes()), "B", Better::lower},
        {"peak_training_bytes", static_cast<double>(peak), "B", Better::lower},
        {"fine_tune_seconds", seconds, "s", Better::lower, false},
    };
    const nn::Int4Base* int4 = trainer.int4_base();
    const double fp32_linear = static_cast<double>(block_linear_bytes(base_));
    const double held = int4 ? static_cast<double>(int4->bytes()) : fp32_linear;
    out.push_back({"base_linear_bytes", held, "B", Better::lower});
    out.push_back({"base_linear_bytes_vs_fp32", held / fp32_linear, "", Better::lower});

    if (method == lora::Method::full_finetune) return out;

    // The checks: the frozen weights untouched, merging exact, the adapters' file read back.
    if (const auto changed = lora::changed_weight(trainer, base_))
      throw CheckFailed(where.str() + "frozen weight " + *changed + " changed during fine-tuning");
    const double merge = lora::merged_logit_difference(trainer, task.front());
    if (!(merge <= lora::merge_tolerance)) {
      std::ostringstream m;
      m << where.str() << "merged and unmerged logits differ by " << merge << " of the largest; allowed "
        << lora::merge_tolerance;
      throw CheckFailed(m.str());
    }
    const std::filesystem::path file =
        std::filesystem::temp_directory_path() / ("aiopt-lora-" + std::to_string(::getpid()) + ".safetensors");
    trainer.adapters()->save(file.string());
    const double file_bytes = static_cast<double>(std::filesystem::file_size(file));
    const nn::LoraAdapters loaded = nn::LoraAdapters::load(file.string(), base_.config, device_);
    std::filesystem::remove(file);
    const auto saved = trainer.adapters()->named(), back = loaded.named();
    for (std::size_t i = 0; i < saved.size(); ++i)
      if (max_abs_difference(*saved[i].second, *back[i].second) != 0.0)
        throw CheckFailed(where.str() + "adapter tensor " + saved[i].first + " differs after a save and load");
    out.push_back({"adapter_bytes", file_bytes, "B", Better::lower});
    out.push_back({"merged_max_logit_difference", merge, "", Better::lower});
    return out;
  }

  std::vector<Series> series() const override {
    Series loss{"train_loss", "step", "nats", {}, losses_};
    for (std::size_t t = 0; t < losses_.size(); ++t) loss.x.push_back(static_cast<double>(t + 1));
    return {loss};
  }

 private:
  lora::Plan plan_;
  Device device_;
  nn::GptWeights base_;   // the model trained on dialect 0
  nn::TokenSplit tokens_;  // dialect 1
  nn::Trainer timed_;      // the timed steps' trainer; finish() trains a fresh one
  std::vector<double> losses_;
};

}  // namespace

// ---- prepare

static void check(const Case& c, DeviceKind) { (void)lora::plan(c); }

static std::unique_ptr<Run> start(const Case& c, const Device& device) {
  return std::make_unique<LoraRun>(lora::plan(c), device);
}

std::unique_ptr<Technique> make_lora() {
  return make_technique({"lora", "trainable parameters vs quality", summary, params, variants, check, start});
}

}  // namespace aiopt
