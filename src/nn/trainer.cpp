#include "nn/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <utility>

#include "core/error.hpp"
#include "core/fault.hpp"
#include "nn/bpe_tokenizer.hpp"
#include "nn/safetensors.hpp"

namespace aiopt::nn {

namespace {

constexpr std::size_t min_split_tokens = 1024;

nlohmann::json config_json(const GptConfig& c) {
  return {{"layers", c.layers}, {"channels", c.channels}, {"heads", c.heads},
          {"context", c.context}, {"vocab", c.vocab},     {"layernorm_eps", c.layernorm_eps}};
}

std::string mib_text(std::size_t bytes) {
  const double mib = static_cast<double>(bytes) / (1024.0 * 1024.0);
  char text[32];
  std::snprintf(text, sizeof text, "%.3g MiB", mib);
  return text;
}

void require(bool ok, const std::string& message) {
  if (!ok) throw InputError("training config: " + message);
}

}  // namespace

std::string DataSource::describe() const {
  const std::string encoding = tokenizer.empty() ? "" : ", encoded by " + tokenizer;
  if (!file.empty()) return file + encoding;
  return "synthetic dialect " + std::to_string(dialect) + " (seed " + std::to_string(corpus_seed) + ", " +
         mib_text(train_bytes) + encoding + ")";
}

namespace {

TokenSplit byte_tokens(const DataSource& source, std::size_t need) {
  if (!source.file.empty()) return file_tokens(source.file, source.validation_fraction, need);
  if (source.train_bytes < need || source.validation_bytes < need)
    throw InputError("training data: the synthetic corpus needs at least " + std::to_string(need) +
                     " train and validation bytes");
  return synthetic_tokens(SyntheticCorpus{source.corpus_seed, source.dialect}, source.train_bytes,
                          source.validation_bytes);
}

}  // namespace

TokenSplit load_tokens(const DataSource& source, std::size_t seq_len) {
  const std::size_t need = std::max(min_split_tokens, seq_len + 1);
  TokenSplit bytes = byte_tokens(source, need);
  if (source.tokenizer.empty()) return bytes;
  const std::filesystem::path folder(source.tokenizer);
  const BpeTokenizer bpe = BpeTokenizer::load(folder / "vocab.json", folder / "merges.txt");
  const auto encode = [&](const std::vector<std::int32_t>& b) {
    const std::string text(b.begin(), b.end());
    return bpe.encode(text);
  };
  TokenSplit out{encode(bytes.train), encode(bytes.validation)};
  if (out.train.size() < need || out.validation.size() < need)
    throw InputError("training data " + source.describe() + ": " + std::to_string(out.train.size()) + " training and " +
                     std::to_string(out.validation.size()) + " validation tokens after " + source.tokenizer +
                     "'s tokenizer; at least " + std::to_string(need) + " of each are needed");
  return out;
}

void TrainConfig::validate() const {
  model.validate();
  require(batch > 0, "batch must be positive");
  require(seq_len > 0 && seq_len <= model.context,
          "seq_len " + std::to_string(seq_len) + " must be in [1, context " + std::to_string(model.context) + "]");
  require(accumulate > 0, "accumulate must be positive");
  require(steps > 0, "steps must be positive");
  require(eval_batches > 0, "eval_batches must be positive");
  require(optimizer.clip_norm >= 0.0f && std::isfinite(optimizer.clip_norm), "clip_norm must be >= 0");
  require(optimizer.weight_decay >= 0.0f, "weight_decay must be >= 0");
  require(optimizer.beta1 >= 0.0f && optimizer.beta1 < 1.0f && optimizer.beta2 >= 0.0f && optimizer.beta2 < 1.0f,
          "beta1 and beta2 must be in [0, 1)");
  require(optimizer.momentum >= 0.0f && optimizer.momentum < 1.0f, "momentum must be in [0, 1)");
  require(data.dialect == 0 || data.dialect == 1, "dialect must be 0 or 1");
  require(data.validation_fraction > 0.0 && data.validation_fraction <= 0.5, "validation_fraction must be in (0, 0.5]");
  schedule.validate();
  training.validate();
  scaling.validate();
  if (lora) {
    lora->validate(model);
    require(!lora->int4_base || (training.storage == DType::f32 && !training.fake_quant.apply),
            "QLoRA's int4 base trains with f32 storage and no fake quantization");
  }
  if (distillation) {
    require(distillation->teacher != nullptr, "distillation needs a teacher's training config");
    distillation->teacher->validate();
    const GptConfig& t = distillation->teacher->model;
    require(t.vocab == model.vocab, "the distillation teacher's vocabulary of " + std::to_string(t.vocab) +
                                        " differs from the model's " + std::to_string(model.vocab));
    require(seq_len <= t.context, "seq_len " + std::to_string(seq_len) + " exceeds the distillation teacher's context of " +
                                      std::to_string(t.context));
    try {
      kernels::cpu::check_distillation(distillation->loss, "training config: distillation");
    } catch (const std::invalid_argument& e) {
      throw InputError(e.what());
    }
  }
}

nlohmann::json TrainConfig::identity() const {
  nlohmann::json id = {
      {"model", config_json(model)},
      {"seed", seed},
      {"data",
       {{"file", data.file},
        {"corpus_seed", data.corpus_seed},
        {"dialect", data.dialect},
        {"train_bytes", data.train_bytes},
        {"validation_bytes", data.validation_bytes},
        {"validation_fraction", data.validation_fraction}}},
      {"batch", batch},
      {"seq_len", seq_len},
      {"accumulate", accumulate},
      {"steps", steps},
      {"optimizer",
       {{"kind", to_string(optimizer.kind)},
        {"beta1", optimizer.beta1},
        {"beta2", optimizer.beta2},
        {"eps", optimizer.eps},
        {"weight_decay", optimizer.weight_decay},
        {"momentum", optimizer.momentum},
        {"clip_norm", optimizer.clip_norm}}},
      {"schedule",
       {{"kind", to_string(schedule.kind)},
        {"peak_lr", schedule.peak_lr},
        {"min_lr", schedule.min_lr},
        {"total_steps", schedule.total_steps},
        {"warmup_steps", schedule.warmup_steps},
        {"step_every", schedule.step_every},
        {"step_gamma", schedule.step_gamma},
        {"one_cycle_div", schedule.one_cycle_div},
        {"decay_fraction", schedule.decay_fraction}}},
      {"training",
       {{"attention", to_string(training.attention)},
        {"checkpoint_every", training.checkpoint_every},
        {"selective", training.selective},
        {"storage", to_string(training.storage)},
        {"fake_quant", training.fake_quant.name}}},
      {"scaling",
       {{"kind", to_string(scaling.kind)},
        {"scale", scaling.scale},
        {"growth", scaling.growth},
        {"backoff", scaling.backoff},
        {"growth_interval", scaling.growth_interval}}},
  };
  // The projections' seed changes the trained model only under performer; elsewhere it is left
  // out, so the identity (and the model cache's key) of every other run stays what it was.
  if (training.attention == TrainAttention::performer) id["training"]["feature_seed"] = training.feature_seed;
  // Likewise the tokenizer, named only where the text is not read as bytes.
  if (!data.tokenizer.empty()) id["data"]["tokenizer"] = data.tokenizer;
  if (lora) id["lora"] = lora->identity();
  // And the teacher, its temperature and alpha, only for a distilled model.
  if (distillation)
    id["distillation"] = {{"teacher", distillation->teacher->identity()},
                          {"temperature", distillation->loss.temperature},
                          {"alpha", distillation->loss.alpha}};
  return id;
}

TrainConfig standard_training(const std::string& preset_name) {
  TrainConfig c;
  c.model = preset(preset_name);
  if (c.model.vocab != 256)
    throw InputError("preset " + preset_name + " has a vocabulary of " + std::to_string(c.model.vocab) +
                     "; training reads bytes, so it needs 256");
  const bool tiny = c.model.parameter_count() < 1'000'000;
  c.batch = tiny ? 8 : 16;
  c.seq_len = std::min<std::size_t>(tiny ? 64 : 128, c.model.context);
  c.steps = tiny ? 300 : 800;
  c.schedule.kind = ScheduleKind::warmup_cosine;
  c.schedule.peak_lr = tiny ? 3e-3f : 2e-3f;
  c.schedule.min_lr = c.schedule.peak_lr / 10.0f;
  c.schedule.total_steps = c.steps;
  c.schedule.warmup_steps = c.steps / 10;
  c.eval_every = 100;
  return c;
}

Trainer::Trainer(TrainConfig config, const Device& device, void* stream)
    : Trainer(config, device, (config.validate(), load_tokens(config.data, config.seq_len)), stream) {}

namespace {

bool is_block_linear_weight(const std::string& name) {
  for (BlockLinear linear : block_linears)
    if (name.ends_with(std::string(block_linear_name(linear)) + ".weight")) return true;
  return false;
}

// The trainer's weights: `init` copied, or config.seed's initialization; under QLoRA the block
// linear tensors are left empty and quantized from `init` into `base`.
GptWeights initial_weights(const TrainConfig& config, const Device& device, const GptWeights* init,
                           std::optional<Int4Base>& base) {
  if (!init) {
    if (config.lora && config.lora->int4_base)
      throw InputError("training: QLoRA fine-tunes a trained model; give the weights to start from");
    return GptWeights::initialize(config.model, config.seed, device);
  }
  const GptConfig& a = init->config;
  if (a.layers != config.model.layers || a.channels != config.model.channels || a.heads != config.model.heads ||
      a.context != config.model.context || a.vocab != config.model.vocab)
    throw InputError("training: initial weights of " + a.describe() + " for a model " + config.model.describe());
  if (!(config.lora && config.lora->int4_base)) return init->to(device);
  if (!device.is_cpu()) throw InputError("training: QLoRA's int4 base runs on the CPU only (no CUDA dequantization kernel yet)");
  const GptWeights host = init->wte.device().is_cpu() ? GptWeights() : init->to(Device::cpu());
  const GptWeights& source = init->wte.device().is_cpu() ? *init : host;
  base = Int4Base::quantize(source, config.lora->int4_group);
  GptWeights w;
  w.config = config.model;
  w.blocks.resize(config.model.layers);
  auto mine = w.named();
  const auto theirs = source.named();
  for (std::size_t i = 0; i < mine.size(); ++i)
    if (!is_block_linear_weight(mine[i].first)) *mine[i].second = theirs[i].second->to(device);
  return w;
}

// Gradient tensors: all zeros without LoRA; none under it (every weight frozen), except that the
// fault "lora.base_trains" (tests only, core/fault.hpp) forgets to freeze the fp32 weights.
GptWeights initial_gradients(const TrainConfig& config, const Device& device) {
  if (!config.lora) return GptWeights::zeros(config.model, device);
  const bool unfrozen = fault::active("lora.base_trains") && !config.lora->int4_base;
  return gradients_for(config.model, device, [&](const std::string&) { return unfrozen; });
}

}  // namespace

Trainer::Trainer(TrainConfig config, const Device& device, TokenSplit tokens, void* stream)
    : Trainer(std::move(config), device, std::move(tokens), nullptr, stream) {}

Trainer::Trainer(TrainConfig config, const Device& device, TokenSplit tokens, const GptWeights& init, void* stream)
    : Trainer(std::move(config), device, std::move(tokens), &init, stream) {}

Trainer::Trainer(TrainConfig config, const Device& device, TokenSplit tokens, const GptWeights* init, void* stream)
    : config_((config.validate(), std::move(config))), stream_(stream), tokens_(std::move(tokens)),
      weights_(initial_weights(config_, device, init, base_)), grads_(initial_gradients(config_, device)),
      adapters_(config_.lora ? std::optional(LoraAdapters::initialize(config_.model, *config_.lora, device))
                             : std::nullopt),
      adapter_grads_(adapters_ ? std::optional(adapters_->zeros_like()) : std::nullopt),
      optimizer_(config_.optimizer, trainable_tensors()),
      sampler_(tokens_.train, config_.batch, config_.seq_len, config_.seed),
      validation_(validation_batches(tokens_.validation, config_.batch, config_.seq_len, config_.eval_batches)),
      scaler_(config_.scaling) {
  for (auto t : tokens_.train)
    if (t < 0 || static_cast<std::size_t>(t) >= config_.model.vocab)
      throw InputError("training data: token " + std::to_string(t) + " is outside the model's vocabulary of " +
                       std::to_string(config_.model.vocab));
}

void Trainer::set_teacher(std::shared_ptr<Gpt> teacher) {
  if (!config_.distillation) throw InputError("trainer: a teacher for a run without distillation");
  if (!teacher || config_json(teacher->config()) != config_json(config_.distillation->teacher->model))
    throw InputError("trainer: the teacher is " + (teacher ? teacher->config().describe() : std::string("null")) +
                     "; its training config is for " + config_.distillation->teacher->model.describe());
  if (teacher->device() != weights_.wte.device())
    throw InputError("trainer: the teacher is on " + to_string(teacher->device()) + " and the student on " +
                     to_string(weights_.wte.device()));
  config_.training.distill = {std::move(teacher), config_.distillation->loss};
}

StepRecord Trainer::step() {
  if (config_.distillation && !config_.training.distill.teacher)
    throw InputError("trainer: a distillation run needs its teacher (Trainer::set_teacher)");
  const auto start = std::chrono::steady_clock::now();
  StepRecord record;
  // The fault "lr_scheduling.off_by_one" (tests only, core/fault.hpp) reads the schedule a step ahead.
  record.lr = config_.schedule.at(steps_done_ + (fault::active("lr_scheduling.off_by_one") ? 1 : 0));
  record.loss_scale = scaler_.scale;
  grads_.set_zero(stream_);
  if (adapter_grads_) adapter_grads_->set_zero(stream_);
  // Each micro-batch's mean-loss gradient enters with 1/k, so k of them sum to the gradient of the
  // mean over the effective batch (all micro-batches have the same number of targets).
  const float micro_scale = scaler_.scale / static_cast<float>(config_.accumulate);
  double loss = 0.0;
  for (std::size_t i = 0; i < config_.accumulate; ++i)
    loss += forward_backward(weights_, sampler_.next(), grads_, config_.training, micro_scale, stream_, adaptation())
                .loss;
  record.loss = loss / static_cast<double>(config_.accumulate);

  const GradientCensus census = gradient_census(grads_, stream_, adapter_grads_ ? &*adapter_grads_ : nullptr);
  record.zero_grad_fraction = census.zero_fraction();
  record.nonfinite_grads = census.nonfinite;
  // A step whose gradients overflowed is skipped, under any scaling: applying inf or NaN would
  // destroy the weights.
  if (scaler_.update(census.nonfinite > 0)) {
    // The fault "mixed_precision.unscaled_gradient" (tests only) applies the scaled gradients as they are.
    const float unscale = fault::active("mixed_precision.unscaled_gradient") ? 1.0f : 1.0f / record.loss_scale;
    const OptimizerStep applied = optimizer_.step(trainables(), record.lr, unscale, stream_);
    record.grad_norm = applied.grad_norm;
  } else {
    record.skipped = true;
    record.grad_norm = INFINITY;
  }
  ++steps_done_;
  record.step = steps_done_;
  record.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double tokens = static_cast<double>(config_.batch * config_.seq_len * config_.accumulate);
  record.tokens_per_second = record.seconds > 0 ? tokens / record.seconds : 0.0;
  history_.push_back(record);
  return record;
}

Adaptation Trainer::adaptation() const {
  return {adapters_ ? &*adapters_ : nullptr, adapter_grads_ ? const_cast<LoraAdapters*>(&*adapter_grads_) : nullptr,
          base_ ? &*base_ : nullptr};
}

std::vector<std::pair<std::string, const Tensor*>> Trainer::trainable_tensors() const {
  std::vector<std::pair<std::string, const Tensor*>> out;
  const auto grads = grads_.named();
  const auto weights = weights_.named();
  for (std::size_t i = 0; i < weights.size(); ++i)
    if (grads[i].second->numel() != 0) out.push_back(weights[i]);
  if (adapters_)
    for (const auto& named : adapters_->named()) out.push_back(named);
  return out;
}

std::vector<Trainable> Trainer::trainables() {
  std::vector<Trainable> out;
  const auto grads = grads_.named();
  const auto weights = weights_.named();
  for (std::size_t i = 0; i < weights.size(); ++i)
    if (grads[i].second->numel() != 0) out.push_back({weights[i].first, weights[i].second, grads[i].second});
  if (adapters_) {
    const auto a = adapters_->named();
    const auto g = adapter_grads_->named();
    for (std::size_t i = 0; i < a.size(); ++i) out.push_back({a[i].first, a[i].second, g[i].second});
  }
  return out;
}

std::size_t Trainer::trainable_parameters() const {
  std::size_t n = 0;
  for (const auto& [name, t] : trainable_tensors()) n += static_cast<std::size_t>(t->numel());
  return n;
}

double Trainer::evaluate() const {
  double sum = 0.0;
  for (const Batch& b : validation_) sum += evaluate_loss(weights_, b, config_.training, stream_, adaptation());
  return sum / static_cast<double>(validation_.size());
}

void Trainer::run(const std::function<void(const StepRecord&)>& on_step,
                  const std::function<void(const EvalRecord&)>& on_eval) {
  while (steps_done_ < config_.steps) {
    const StepRecord r = step();
    if (on_step) on_step(r);
    const bool last = steps_done_ == config_.steps;
    if (last || (config_.eval_every > 0 && steps_done_ % config_.eval_every == 0)) {
      evals_.push_back({steps_done_, evaluate()});
      if (on_eval) on_eval(evals_.back());
    }
  }
}

void Trainer::save(const std::string& path) const {
  const Device cpu = Device::cpu();
  std::vector<Tensor> host;  // host copies, alive until written
  std::vector<std::pair<std::string, const Tensor*>> tensors;
  auto add = [&](const std::string& name, const Tensor& t) {
    host.push_back(t.to(cpu));
    tensors.emplace_back(name, nullptr);
  };
  for (const auto& [name, t] : weights_.named())
    if (t->numel() != 0) add(name, *t);  // under QLoRA the int4 base comes from the initial weights
  if (adapters_)
    for (const auto& [name, t] : adapters_->named()) add(name, *t);
  for (const auto& [name, t] : optimizer_.state()) add(name, *t);
  for (std::size_t i = 0; i < tensors.size(); ++i) tensors[i].second = &host[i];
  const nlohmann::json progress = {{"steps_done", steps_done_},
                                   {"optimizer_steps", optimizer_.steps_taken()},
                                   {"sampler_draws", sampler_.draws()},
                                   {"loss_scale", scaler_.scale},
                                   {"clean_steps", scaler_.clean_steps}};
  const std::map<std::string, std::string> metadata = {
      {"format", "aiopt-train-1"},
      {"config", config_json(config_.model).dump()},
      {"identity", config_.identity().dump()},
      {"progress", progress.dump()},
  };
  write_safetensors(path, tensors, metadata);
}

void Trainer::resume(const std::string& path) {
  const SafetensorsFile file(path);
  const auto& meta = file.metadata();
  auto field = [&](const std::string& key) -> const std::string& {
    const auto it = meta.find(key);
    if (it == meta.end()) throw InputError(path + ": not a training checkpoint (no '" + key + "' in its metadata)");
    return it->second;
  };
  if (field("format") != "aiopt-train-1")
    throw InputError(path + ": training checkpoint format '" + field("format") + "' is not aiopt-train-1");
  nlohmann::json saved, progress;
  try {
    saved = nlohmann::json::parse(field("identity"));
    progress = nlohmann::json::parse(field("progress"));
  } catch (const nlohmann::json::exception& e) {
    throw InputError(path + ": unreadable training metadata: " + e.what());
  }
  // The run's identity must match except for its length: a resumed run may go on for longer.
  nlohmann::json mine = config_.identity();
  saved.erase("steps");
  mine.erase("steps");
  if (saved != mine) {
    for (auto it = mine.begin(); it != mine.end(); ++it)
      if (!saved.contains(it.key()) || saved[it.key()] != it.value())
        throw InputError(path + ": saved for a different run: '" + it.key() + "' is " +
                         (saved.contains(it.key()) ? saved[it.key()].dump() : "absent") + " there and " +
                         it.value().dump() + " here");
    throw InputError(path + ": saved for a different run");
  }
  auto restore = [&](const std::string& name, Tensor& t) {
    const Tensor host = file.read_f32(name);
    if (host.shape() != t.shape())
      throw InputError(path + ": tensor '" + name + "' is " + host.shape_string() + ", expected " + t.shape_string());
    t.copy_from(host);
  };
  for (auto& [name, t] : weights_.named())
    if (t->numel() != 0) restore(name, *t);
  if (adapters_)
    for (auto& [name, t] : adapters_->named()) restore(name, *t);
  for (auto& [name, t] : optimizer_.state()) restore(name, *t);
  try {
    steps_done_ = progress.at("steps_done").get<std::size_t>();
    optimizer_.set_steps_taken(progress.at("optimizer_steps").get<std::int64_t>());
    sampler_.set_draws(progress.at("sampler_draws").get<std::uint64_t>());
    scaler_.scale = progress.at("loss_scale").get<float>();
    scaler_.clean_steps = progress.at("clean_steps").get<std::size_t>();
  } catch (const nlohmann::json::exception& e) {
    throw InputError(path + ": incomplete training progress: " + e.what());
  }
  history_.clear();
  evals_.clear();
}

}  // namespace aiopt::nn
