// The model level of quantization: the GPT trained on the built-in corpus (from the model
// cache) or a checkpoint's (a published GPT-2, with its tokenizer), its block linear layers stored
// in the variant's format, greedy decoding timed, and quality against the fp32 model on validation
// windows: perplexity, top-1 agreement of the next token, logits error.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "nn/batches.hpp"
#include "nn/checkpoint.hpp"
#include "nn/decoding.hpp"
#include "nn/gpt.hpp"
#include "nn/model_cache.hpp"
#include "nn/pretrained.hpp"
#include "nn/safetensors.hpp"
#include "nn/trainer.hpp"
#include "techniques/quantization/quantization.hpp"
#include "techniques/model_params.hpp"
#include "techniques/quantization/quantized_linears.hpp"

namespace aiopt::quantization {

namespace cpu = kernels::cpu;

namespace {

struct ModelCase {
  std::string preset, variant;
  std::string checkpoint;  // empty: the preset's trained model
  std::string data;        // with a checkpoint: the text file; empty: the built-in corpus
  Format format = Format::fp32;
  bool qat = false;  // int4 weights learned by fine-tuning with fake quantization
  std::size_t qat_steps = 0;
  double qat_lr = 0.0;
  std::size_t group = 64;
  cpu::Int4Mode mode = cpu::Int4Mode::symmetric;
  std::size_t prompt_len = 0, gen_tokens = 0, eval_windows = 0, calibration_tokens = 0;

  static ModelCase from(const Case& c) {
    ModelCase m;
    m.preset = c.params.string("preset");
    m.checkpoint = model_params::checkpoint(c.params);
    m.data = c.params.string("data");
    m.variant = c.variant;
    const Scheme scheme = schemes().parse(c.variant);
    m.qat = scheme.qat;
    m.format = scheme.format;
    m.qat_steps = static_cast<std::size_t>(c.params.integer("qat_steps"));
    m.qat_lr = c.params.real("qat_lr");
    m.group = std::stoul(c.params.string("group_size"));
    m.mode = c.params.boolean("zero_point") ? cpu::Int4Mode::asymmetric : cpu::Int4Mode::symmetric;
    m.prompt_len = static_cast<std::size_t>(c.params.integer("prompt_len"));
    m.gen_tokens = static_cast<std::size_t>(c.params.integer("gen_tokens"));
    m.eval_windows = static_cast<std::size_t>(c.params.integer("eval_windows"));
    m.calibration_tokens = static_cast<std::size_t>(c.params.integer("calibration_rows"));
    return m;
  }

  // How the messages name the model.
  std::string model_name() const { return checkpoint.empty() ? "the " + preset + " model" : checkpoint; }
};

// The text a checkpoint's quality is measured on (validation: the last tenth of a file, or the
// built-in corpus's validation stream), encoded by its tokenizer, and the recipe QAT fine-tunes
// it with (the tiny preset's optimizer, windows of up to 128 tokens).
nn::TrainConfig checkpoint_recipe(const nn::GptConfig& config, const ModelCase& mc, const std::string& tokenizer) {
  nn::TrainConfig t = nn::standard_training("tiny");
  t.model = config;
  t.seq_len = std::min<std::size_t>(128, config.context);
  t.data.file = mc.data;
  t.data.train_bytes = std::size_t{1} << 20;
  t.data.tokenizer = tokenizer;
  if (tokenizer.empty() && config.vocab != 256)
    throw InputError("quantization: checkpoint " + mc.checkpoint + " has a vocabulary of " +
                     std::to_string(config.vocab) +
                     " and no tokenizer (vocab.json and merges.txt beside it), so text cannot be given to it");
  return t;
}

// Cross-entropy (nats) of every position of logits (rows, V) against targets, and the argmax.
void score(const Tensor& logits, std::span<const std::int32_t> targets, std::size_t vocab, std::vector<double>& nll,
           std::vector<std::int32_t>& argmax) {
  const float* l = logits.data<float>();
  for (std::size_t r = 0; r < targets.size(); ++r) {
    const float* row = l + r * vocab;
    const float* top = std::max_element(row, row + vocab);
    double sum = 0.0;
    for (std::size_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - *top);
    nll.push_back(std::log(sum) + *top - row[targets[r]]);
    argmax.push_back(static_cast<std::int32_t>(top - row));
  }
}

// The block linear weights replaced by their int4 quantize-dequantize round trip (host weights).
void fake_quantize_int4(nn::GptWeights& w, std::size_t group, cpu::Int4Mode mode) {
  for (auto& b : w.blocks)
    for (Tensor* t : {&b.attn_c_attn_weight, &b.attn_c_proj_weight, &b.mlp_c_fc_weight, &b.mlp_c_proj_weight}) {
      const auto n = static_cast<std::size_t>(t->shape()[0]), k = static_cast<std::size_t>(t->shape()[1]);
      const cpu::Int4Matrix q = cpu::quantize_int4(t->data<float>(), n, k, group, mode);
      cpu::dequantize_int4(q, t->data<float>());
    }
}

// `trained` fine-tuned for `steps` steps of the standard recipe's data at peak LR `lr` (warmup
// over a tenth, cosine to lr/10), with `fake_quant` or without; fresh AdamW state.
nn::GptWeights fine_tune(const nn::GptWeights& trained, const nn::TrainConfig& recipe, const nn::TokenSplit& tokens,
                         std::size_t steps, double lr, nn::TrainingOptions::FakeQuant fake_quant) {
  nn::TrainConfig t = recipe;
  t.seed = recipe.seed + 1;  // windows the pretraining did not draw in this order
  t.steps = steps;
  t.schedule.peak_lr = static_cast<float>(lr);
  t.schedule.min_lr = static_cast<float>(lr / 10);
  t.schedule.total_steps = steps;
  t.schedule.warmup_steps = steps / 10;
  t.eval_every = 0;
  t.training.fake_quant = std::move(fake_quant);
  nn::Trainer trainer(t, Device::cpu(), tokens);
  trainer.weights().copy_from(trained);
  for (std::size_t i = 0; i < steps; ++i) trainer.step();
  nn::GptWeights out = nn::GptWeights::allocate(trained.config, Device::cpu());
  out.copy_from(trainer.weights());
  return out;
}

class ModelRun : public Run {
 public:
  ModelRun(const ModelCase& mc, std::uint64_t seed) : mc_(mc) {
    // The formats stored straight from the checkpoint load the embeddings, LayerNorms and biases
    // in fp32 and read each block linear weight in turn (QuantizedLinears), so the prepared peak
    // holds one fp32 layer beside the format's bytes, never the fp32 model. int8_static
    // calibrates on the fp32 model and QAT fine-tunes it: both load it whole, as fp32 does. A
    // GPT-2 checkpoint (Conv1D layout) or sharded one is loaded whole whatever the format.
    const bool streamed = mc.format != Format::fp32 && mc.format != Format::int8_static && !mc.qat;
    std::optional<nn::SafetensorsFile> source;  // empty where the weights are loaded whole
    nn::GptWeights weights;
    if (mc.checkpoint.empty()) {
      training_ = nn::standard_training(mc.preset);
      nn::CachedModel trained =
          streamed ? nn::trained_model_file(training_) : nn::trained_model(training_, Device::cpu());
      if (streamed && !trained.path.empty()) {
        source.emplace(trained.path.string());
        trained.weights = nn::load_checkpoint_except(*source, is_block_linear_weight);
      }
      trained_loss_ = trained.validation_loss;
      weights = std::move(trained.weights);
    } else {
      const nn::CheckpointSource checkpoint = nn::open_checkpoint(mc.checkpoint);
      const bool one_own_file =
          nn::checkpoint_format(checkpoint.files) == "aiopt-gpt" && checkpoint.files.files().size() == 1;
      if (streamed && one_own_file) {
        source.emplace(checkpoint.files.files().front());
        weights = nn::load_checkpoint_except(*source, is_block_linear_weight);
      } else {
        weights = nn::load_checkpoint(checkpoint.files, Device::cpu(), checkpoint.hints);
      }
      training_ = checkpoint_recipe(weights.config, mc, checkpoint.tokenizer);
    }
    const nn::TrainConfig& training = training_;
    model_ = std::make_unique<nn::Gpt>(std::move(weights));
    const nn::GptConfig cfg = model_->config();  // a copy: the QAT branch replaces model_
    if (mc.prompt_len + mc.gen_tokens > cfg.context)
      throw InputError("quantization: prompt_len + gen_tokens = " + std::to_string(mc.prompt_len + mc.gen_tokens) +
                       " exceeds " + mc.model_name() + "'s context of " + std::to_string(cfg.context));
    if (mc.format == Format::int4_weight_only && cfg.channels % mc.group != 0)
      throw NotApplicable("quantization: group_size " + std::to_string(mc.group) + " does not divide " +
                          mc.model_name() + "'s width " + std::to_string(cfg.channels));

    const nn::TokenSplit tokens = nn::load_tokens(training.data, training.seq_len);
    if (mc.qat) {
      // The int4 model learned with fake quantization, and beside it post-training int4 of the
      // same fine-tuning without it, so the comparison is not flattered by the extra steps.
      const nn::GptWeights& trained_weights = model_->weights();
      const nn::TrainingOptions::FakeQuant int4{
          "int4 g" + std::to_string(mc.group) + (mc.mode == cpu::Int4Mode::asymmetric ? " zero point" : ""),
          [group = mc.group, mode = mc.mode](nn::GptWeights& w) { fake_quantize_int4(w, group, mode); }};
      nn::GptWeights plain = fine_tune(trained_weights, training, tokens, mc.qat_steps, mc.qat_lr, {});
      ptq_model_ = std::make_unique<nn::Gpt>(std::move(plain));
      ptq_model_->set_linear_layers(
          std::make_shared<QuantizedLinears>(ptq_model_->weights(), Format::int4_weight_only, mc.group, mc.mode));
      nn::GptWeights learned = fine_tune(trained_weights, training, tokens, mc.qat_steps, mc.qat_lr, int4);
      model_ = std::make_unique<nn::Gpt>(std::move(learned));
    }
    seq_len_ = std::min<std::size_t>(128, cfg.context);
    windows_ = nn::validation_batches(tokens.validation, mc.eval_windows, seq_len_, 1).at(0);
    // The prompt: validation text, at an offset the evaluation windows' order does not fix.
    if (tokens.validation.size() < mc.prompt_len)
      throw InputError("quantization: prompt_len " + std::to_string(mc.prompt_len) + " exceeds the " +
                       std::to_string(tokens.validation.size()) + " tokens of validation text");
    const std::size_t offsets = std::min<std::size_t>(1000, tokens.validation.size() - mc.prompt_len + 1);
    const std::size_t offset = static_cast<std::size_t>(seed % offsets);
    prompt_.assign(tokens.validation.begin() + static_cast<long>(offset),
                   tokens.validation.begin() + static_cast<long>(offset + mc.prompt_len));

    fp32_bytes_ = fp32_linear_bytes(cfg);
    // Every format but fp32 frees the model's fp32 linear weights as it stores them
    // (QuantizedLinears), so the run holds its format's bytes; finish() loads the fp32 model again
    // for the reference.
    if (mc.format != Format::fp32) {
      StaticScales scales;
      if (mc.format == Format::int8_static) {
        // Calibration on training text (never the evaluation windows).
        const std::size_t rows = std::max<std::size_t>(1, mc.calibration_tokens / seq_len_);
        const std::span<const std::int32_t> calibration(tokens.train.data(), rows * seq_len_);
        scales = calibrate(*model_, calibration, rows, seq_len_);
      }
      linears_ = std::make_shared<QuantizedLinears>(model_->weights(), mc.format, mc.group, mc.mode,
                                                    mc.format == Format::int8_static ? &scales : nullptr,
                                                    source ? &*source : nullptr);
    }
  }

  // One greedy generation of gen_tokens after the prompt with an f32 KV cache.
  void step() override {
    model_->set_linear_layers(linears_);
    nn::generate(*model_, prompt_, mc_.gen_tokens, nn::SamplingParams{}, DType::f32);
  }

  std::vector<Metric> finish() override {
    const nn::GptConfig& cfg = model_->config();
    // Decode speed from one more generation, timed per call by generate().
    model_->set_linear_layers(linears_);
    const nn::Generation timed = nn::generate(*model_, prompt_, mc_.gen_tokens, nn::SamplingParams{}, DType::f32);
    double decode_ms = 0.0;
    for (double ms : timed.step_ms) decode_ms += ms;
    const double per_token = decode_ms / static_cast<double>(std::max<std::size_t>(1, timed.step_ms.size()));

    // Quality on the validation windows, this format against fp32.
    std::vector<double> nll, nll_ref;
    std::vector<std::int32_t> top, top_ref;
    double max_abs = 0.0, ref_max = 0.0, sum_abs = 0.0;
    // Saturations counted over the validation windows alone: the counter also runs through every
    // timed generation, and how many of those there were depends on the machine's speed.
    const bool counts_clips = linears_ && mc_.format == Format::int8_static;
    const cpu::ClipCount clip_before = counts_clips ? linears_->clipped() : cpu::ClipCount{};
    const Tensor logits = model_->forward(windows_.inputs, windows_.batch, windows_.seq_len, nn::Logits::all);
    const cpu::ClipCount clip_after = counts_clips ? linears_->clipped() : cpu::ClipCount{};
    const cpu::ClipCount clip{clip_after.clipped - clip_before.clipped, clip_after.total - clip_before.total};
    // The fp32 model as trained (QAT fine-tunes a copy of it), loaded again from the model cache
    // or the checkpoint where the run freed its fp32 linear weights.
    std::optional<nn::Gpt> loaded;
    if (linears_ || mc_.qat)
      loaded.emplace(mc_.checkpoint.empty() ? nn::trained_model(training_, Device::cpu()).weights
                                            : nn::pretrained_weights(mc_.checkpoint, Device::cpu()));
    nn::Gpt& fp32 = loaded ? *loaded : *model_;
    const Tensor reference = fp32.forward(windows_.inputs, windows_.batch, windows_.seq_len, nn::Logits::all);
    score(logits, windows_.targets, cfg.vocab, nll, top);
    score(reference, windows_.targets, cfg.vocab, nll_ref, top_ref);
    const float* a = logits.data<float>();
    const float* b = reference.data<float>();
    const auto n = static_cast<std::size_t>(logits.numel());
    for (std::size_t i = 0; i < n; ++i) {
      const double d = std::abs(static_cast<double>(a[i]) - b[i]);
      if (!(d <= max_abs)) max_abs = d;  // a NaN propagates
      sum_abs += d;
      ref_max = std::max(ref_max, std::abs(static_cast<double>(b[i])));
    }
    double mean_nll = 0.0, mean_ref = 0.0;
    std::size_t agree = 0;
    for (std::size_t i = 0; i < nll.size(); ++i) {
      mean_nll += nll[i];
      mean_ref += nll_ref[i];
      agree += top[i] == top_ref[i];
    }
    mean_nll /= static_cast<double>(nll.size());
    mean_ref /= static_cast<double>(nll.size());
    const double perplexity = std::exp(mean_nll), reference_perplexity = std::exp(mean_ref);
    const double agreement = static_cast<double>(agree) / static_cast<double>(nll.size());
    // A checkpoint's loss as trained is not recorded in it: its fp32 loss on these windows stands in.
    if (!mc_.checkpoint.empty()) trained_loss_ = mean_ref;
    // A kernel that is wrong, not merely imprecise, scrambles the logits: the model then predicts
    // worse than its byte frequencies would (perplexity of the trained fp32 model × 1.5), and its
    // top choice rarely matches fp32's. The formats' own error is far inside both bounds (README).
    if (!std::isfinite(perplexity) || perplexity > 1.5 * reference_perplexity || agreement < 0.5)
      throw CheckFailed("quantization: the " + mc_.variant + " model's perplexity is " +
                        std::to_string(perplexity) + " against fp32's " + std::to_string(reference_perplexity) +
                        " and its top-1 agreement " + std::to_string(agreement) +
                        "; a quantized product is wrong, not just imprecise");

    const std::size_t bytes = linears_ ? linears_->weight_bytes() : fp32_bytes_;
    std::vector<Metric> out = {
        time_metric("decode_tokens_per_s", 1000.0 / per_token, "tok/s", Better::higher),
        time_metric("decode_ms_per_token", per_token, "ms", Better::lower),
        {"linear_weight_bytes", static_cast<double>(bytes), "B", Better::lower},
        {"perplexity", perplexity, "", Better::lower},
        {"perplexity_increase", perplexity / reference_perplexity - 1.0, "", Better::lower},
        {"top1_agreement", agreement, "", Better::higher},
        {"logits_max_rel_error", max_abs / ref_max, "", Better::lower},
        {"logits_mean_abs_error", sum_abs / static_cast<double>(n), "", Better::lower},
        {"trained_validation_loss", trained_loss_, "nats", Better::lower, false},
    };
    if (mc_.format == Format::int8_static) out.push_back({"clipped_fraction", clip.fraction(), "", Better::lower});
    if (ptq_model_) {
      std::vector<double> ptq_nll;
      std::vector<std::int32_t> ptq_top;
      score(ptq_model_->forward(windows_.inputs, windows_.batch, windows_.seq_len, nn::Logits::all), windows_.targets,
            cfg.vocab, ptq_nll, ptq_top);
      double mean_ptq = 0.0;
      for (double v : ptq_nll) mean_ptq += v;
      mean_ptq /= static_cast<double>(ptq_nll.size());
      out.push_back({"ptq_perplexity_same_steps", std::exp(mean_ptq), "", Better::lower, false});
      out.push_back({"qat_perplexity_gain", std::exp(mean_ptq) / perplexity - 1.0, "", Better::higher, false});
    }
    return out;
  }

 private:
  ModelCase mc_;
  nn::TrainConfig training_;  // the trained model's recipe (its key in the model cache), or a checkpoint's text
  std::unique_ptr<nn::Gpt> model_;
  std::unique_ptr<nn::Gpt> ptq_model_;  // qat: int4 after the same fine-tuning without fake quantization
  std::shared_ptr<QuantizedLinears> linears_;
  std::vector<std::int32_t> prompt_;
  nn::Batch windows_;
  std::size_t seq_len_ = 0;
  double trained_loss_ = 0.0;
  std::size_t fp32_bytes_ = 0;  // the fp32 block linear weights' bytes
};

}  // namespace

const Choices<Level>& levels() {
  static const Choices<Level> names{{Level::gemm, "gemm"}, {Level::model, "model"}};
  return names;
}

bool is_model_level(const Case& c) { return c.params.has("level") && levels().of(c.params, "level") == Level::model; }

void validate_model(const Case& c, DeviceKind device) {
  const ModelCase mc = ModelCase::from(c);
  if (device != DeviceKind::cpu)
    throw NotApplicable("quantization: level=model runs on the cpu; on cuda only level=gemm is built");
  if (mc.format == Format::fp8)
    throw NotApplicable("quantization: fp8 runs on cuda only, and level=model on the cpu only");
  nn::GptConfig cfg;
  if (mc.checkpoint.empty()) {
    cfg = nn::preset(mc.preset);
  } else {
    const nn::CheckpointSource checkpoint = nn::open_checkpoint(mc.checkpoint);
    cfg = nn::checkpoint_config(checkpoint.files, checkpoint.hints);
    checkpoint_recipe(cfg, mc, checkpoint.tokenizer);
  }
  if (!mc.data.empty() && mc.checkpoint.empty())
    throw InputError("quantization: 'data' is the text a checkpoint is measured on; give 'checkpoint' too (the "
                     "presets' models are measured on the built-in corpus they were trained on)");
  if (mc.prompt_len == 0 || mc.prompt_len + mc.gen_tokens > cfg.context)
    throw InputError("quantization: prompt_len + gen_tokens = " + std::to_string(mc.prompt_len + mc.gen_tokens) +
                     " must be in [1, " + std::to_string(cfg.context) + "], " + mc.model_name() + "'s context");
}

std::unique_ptr<Run> prepare_model(const Case& c) {
  return std::make_unique<ModelRun>(ModelCase::from(c), c.seed);
}

}  // namespace aiopt::quantization
