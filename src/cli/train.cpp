// aiopt train: trains the GPT on the built-in synthetic corpus or a text file's bytes, printing
// progress (loss, LR, tokens/s) and validation losses, and writes the trained weights as a
// checkpoint that `aiopt generate --checkpoint` reads. --init starts from a checkpoint's weights
// (fine-tuning a published GPT-2, its text encoded by the checkpoint's tokenizer). --save-state /
// --resume keep and restore the whole training state, so a stopped run continues exactly.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "cli/blas_warnings.hpp"
#include "cli/commands.hpp"
#include "cli/device_flag.hpp"
#include "cli/model_flags.hpp"
#include "cli/number_checks.hpp"
#include "core/error.hpp"
#include "core/hardware.hpp"
#include "core/threads.hpp"
#include "nn/checkpoint.hpp"
#include "nn/gemm_ceiling.hpp"
#include "nn/pretrained.hpp"
#include "nn/trainer.hpp"

namespace aiopt::cli {

namespace {

struct TrainOptions {
  ModelFlags model;
  std::string init;
  std::string data;
  int dialect = 0;
  std::uint64_t corpus_seed = 1;
  // Unset: the preset's standard recipe (nn::standard_training).
  std::optional<std::size_t> steps, batch, seq_len, warmup, eval_every;
  std::optional<float> lr, min_lr;
  std::size_t accumulate = 1;
  std::string schedule = "warmup_cosine";
  std::string optimizer = "adamw";
  float weight_decay = 0.1f;
  float clip = 1.0f;
  std::uint64_t seed = 1;
  std::size_t eval_batches = 8;
  std::size_t log_every = 10;
  std::string attention = "flash";
  std::size_t checkpoint_every = 0;
  bool selective = false;
  std::string precision = "f32";
  std::string out;
  std::string save_state;
  std::string resume;
  std::string device = "cpu";
  std::optional<int> threads;
};

// The recipe of the preset (--init: its dimensions replaced by the checkpoint's, and the text
// encoded by the checkpoint's tokenizer) with the flags applied.
nn::TrainConfig make_config(const TrainOptions& o, const std::optional<nn::CheckpointSource>& init) {
  nn::TrainConfig c = nn::standard_training(o.model.preset_name());
  if (init) {
    c.model = nn::checkpoint_config(init->files, init->hints);
    o.model.check_agree(c.model, "--init", o.init);
    c.seq_len = std::min(c.seq_len, c.model.context);
    c.data.tokenizer = init->tokenizer;
  } else {
    c.model = o.model.applied_to(c.model);
  }
  c.seed = o.seed;
  c.data.file = o.data;
  c.data.dialect = o.dialect;
  c.data.corpus_seed = o.corpus_seed;
  if (o.batch) c.batch = *o.batch;
  if (o.seq_len) c.seq_len = *o.seq_len;
  c.accumulate = o.accumulate;
  if (o.steps) c.steps = *o.steps;
  c.optimizer.kind = nn::parse_optimizer(o.optimizer);
  c.optimizer.weight_decay = o.weight_decay;
  c.optimizer.clip_norm = o.clip;
  c.schedule.kind = nn::parse_schedule(o.schedule);
  if (o.lr) c.schedule.peak_lr = *o.lr;
  c.schedule.min_lr = o.min_lr.value_or(c.schedule.peak_lr / 10.0f);
  c.schedule.total_steps = c.steps;
  c.schedule.warmup_steps = o.warmup.value_or(c.steps / 10);
  try {
    c.training.attention = nn::parse_train_attention(o.attention);
  } catch (const InputError& e) {
    throw InputError(std::string("--attention: ") + e.what());
  }
  c.training.feature_seed = o.seed;
  c.training.checkpoint_every = o.checkpoint_every;
  c.training.selective = o.selective;
  c.training.storage = parse_dtype(o.precision);
  if (c.training.storage == DType::f16) {
    c.scaling.kind = nn::LossScaling::dynamic;
    c.scaling.scale = 65536.0f;
  }
  if (o.eval_every) c.eval_every = *o.eval_every;
  c.eval_batches = o.eval_batches;
  c.validate();
  return c;
}

// The median step's model FLOP/s (6 · parameters · tokens) beside the GEMM ceiling: the same
// step's matrix products alone, timed at the same shapes on the same threads.
void report_throughput(const nn::Trainer& trainer, const Device& device) {
  std::vector<double> seconds;
  for (const auto& r : trainer.history()) seconds.push_back(r.seconds);
  if (seconds.empty()) return;
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  const nn::TrainConfig& c = trainer.config();
  const double flops = nn::training_step_flops(c.model, c.batch * c.seq_len * c.accumulate);
  char line[200];
  std::snprintf(line, sizeof line, "median step %.1f ms: %.1f GFLOP/s (6 · parameters · tokens)", median * 1e3,
                flops / median * 1e-9);
  std::cout << line;
  if (device.is_cpu()) {
    const nn::GemmCeiling ceiling = nn::gemm_ceiling(c.model, c.batch, c.seq_len);
    std::snprintf(line, sizeof line, "; its GEMMs alone: %.1f ms per micro-batch at %.1f GFLOP/s, so the step takes %.2fx its GEMM time",
                  ceiling.seconds * 1e3, ceiling.gflops(),
                  median / (ceiling.seconds * static_cast<double>(c.accumulate)));
    std::cout << line;
  }
  std::cout << "\n";
}

int run_train(const TrainOptions& o) {
  if (o.threads) set_threads(*o.threads);
  if (o.log_every == 0) throw InputError("--log-every must be at least 1");
  warn_about_blas_kernels();
  if (const auto busy = hardware::busy_cores())
    if (const auto warning = hardware::busy_machine_warning(*busy, hardware::cpu().logical_cores, threads()))
      spdlog::warn("{}", *warning);
  if (!o.init.empty() && !o.resume.empty())
    throw InputError("--init and --resume both set the weights; give one (a resumed run keeps its own)");
  std::optional<nn::CheckpointSource> init;
  if (!o.init.empty()) init = nn::open_checkpoint(o.init, o.model.heads());
  const nn::TrainConfig config = make_config(o, init);
  const Device device = parse_device(o.device);
  nn::Trainer trainer(config, device);
  if (!o.resume.empty()) trainer.resume(o.resume);
  if (init) {
    trainer.weights().copy_from(nn::load_checkpoint(init->files, device, init->hints));
    std::cout << "init: " << o.init << " (" << nn::checkpoint_format(init->files) << ", "
              << init->files.bytes() << " bytes)\n";
  }

  const double unigram = nn::unigram_entropy(trainer.tokens().validation);
  std::cout << "model: " << config.model.describe() << " (" << config.model.parameter_count() << " parameters) on "
            << to_string(device) << ", " << threads() << " threads\n";
  std::cout << "data: " << config.data.describe() << ": " << trainer.tokens().train.size() << " train, "
            << trainer.tokens().validation.size() << " validation tokens; unigram entropy " << unigram << " nats\n";
  std::cout << "batch " << config.batch << " × " << config.seq_len << (config.accumulate > 1 ? " × " : "")
            << (config.accumulate > 1 ? std::to_string(config.accumulate) : "") << ", " << config.steps
            << " steps, " << o.optimizer << ", " << o.schedule << " peak lr " << config.schedule.peak_lr << "\n";
  if (trainer.steps_done() > 0) std::cout << "resumed at step " << trainer.steps_done() << " from " << o.resume << "\n";
  std::cout.flush();

  double seconds = 0.0;
  std::size_t tokens = 0, skipped = 0;
  char line[200];
  trainer.run(
      [&](const nn::StepRecord& r) {
        seconds += r.seconds;
        tokens += config.batch * config.seq_len * config.accumulate;
        skipped += r.skipped;
        if (r.step % o.log_every == 0 || r.step == config.steps) {
          std::snprintf(line, sizeof line, "step %6zu/%zu  loss %.4f  lr %.3g  grad norm %.3g  %.0f tokens/s%s\n",
                        r.step, config.steps, r.loss, static_cast<double>(r.lr), r.grad_norm,
                        static_cast<double>(tokens) / seconds, r.skipped ? "  (skipped: overflow)" : "");
          std::cout << line << std::flush;
        }
      },
      [&](const nn::EvalRecord& e) {
        std::snprintf(line, sizeof line, "step %6zu  validation loss %.4f (unigram %.4f)\n", e.step, e.loss, unigram);
        std::cout << line << std::flush;
      });
  std::snprintf(line, sizeof line, "trained %zu tokens in %.1f s (%.0f tokens/s)%s\n", tokens, seconds,
                static_cast<double>(tokens) / seconds,
                skipped ? (", " + std::to_string(skipped) + " steps skipped").c_str() : "");
  std::cout << line;
  report_throughput(trainer, device);
  if (!o.out.empty()) {
    std::map<std::string, std::string> metadata = {{"attention", std::string(to_string(config.training.attention))}};
    // The tokenizer the text was encoded with, for generate and the techniques to find.
    if (!config.data.tokenizer.empty())
      metadata["tokenizer"] = std::filesystem::absolute(config.data.tokenizer).string();
    nn::save_checkpoint(trainer.weights(), o.out, metadata);
    std::cout << "weights: " << o.out << "\n";
  }
  if (!o.save_state.empty()) {
    trainer.save(o.save_state);
    std::cout << "training state: " << o.save_state << "\n";
  }
  return 0;
}

}  // namespace

void add_train(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<TrainOptions>();
  auto* cmd = app.add_subcommand("train", "Train the GPT on the built-in corpus or a text file");
  add_model_flags(*cmd, o->model, false);
  cmd->add_option("--init", o->init,
                  "Start from this checkpoint's weights (a Hugging Face GPT-2 folder or a safetensors file): its "
                  "dimensions, and its tokenizer for the text")
      ->check(CLI::ExistingPath);
  cmd->add_option("--data", o->data,
                  "Train on this file's text: its bytes, or its tokens under --init's tokenizer (default: the "
                  "built-in synthetic corpus)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--dialect", o->dialect, "Synthetic corpus dialect: 0 (default) or 1")
      ->check(CLI::IsMember({0, 1}));
  cmd->add_option("--corpus-seed", o->corpus_seed, "Seed of the synthetic corpus (default 1)");
  cmd->add_option("--steps", o->steps, "Optimizer steps (default: tiny 300, small 800)")->check(positive_number());
  cmd->add_option("--batch", o->batch, "Sequences per micro-batch (default: tiny 8, small 16)")
      ->check(positive_number());
  cmd->add_option("--seq-len", o->seq_len, "Tokens per sequence (default: tiny 64, small 128)")
      ->check(positive_number());
  cmd->add_option("--accumulate", o->accumulate, "Micro-batches per optimizer step (default 1)")
      ->check(positive_number());
  cmd->add_option("--lr", o->lr, "Peak learning rate (default: tiny 3e-3, small 2e-3)")->check(positive_number());
  cmd->add_option("--min-lr", o->min_lr, "Final learning rate of decaying schedules (default: lr / 10)")
      ->check(non_negative_number());
  cmd->add_option("--schedule", o->schedule, "LR schedule (default warmup_cosine)");
  cmd->add_option("--warmup", o->warmup, "Warmup steps (default: a tenth of the steps)");
  cmd->add_option("--optimizer", o->optimizer, "adamw (default) or sgd");
  cmd->add_option("--weight-decay", o->weight_decay, "Decoupled weight decay on matrices (default 0.1)")
      ->check(non_negative_number());
  cmd->add_option("--clip", o->clip, "Clip the gradient's global norm to this; 0: off (default 1)")
      ->check(non_negative_number());
  cmd->add_option("--seed", o->seed, "Seed of the initial weights and the batches (default 1)");
  cmd->add_option("--eval-every", o->eval_every, "Validation every N steps; 0: at the end only (default 100)");
  cmd->add_option("--eval-batches", o->eval_batches, "Validation batches (default 8)")->check(positive_number());
  cmd->add_option("--log-every", o->log_every, "Progress line every N steps (default 10)");
  cmd->add_option("--attention", o->attention,
                  "flash (default) or naive: exact softmax; linear_elu or performer: causal linear attention, CPU "
                  "only, not loadable by generate");
  cmd->add_option("--checkpoint-every", o->checkpoint_every,
                  "Gradient checkpointing: keep every k-th block's input and recompute; 0: keep all (default)");
  cmd->add_flag("--selective", o->selective, "Recompute LayerNorm and GELU outputs in the backward");
  cmd->add_option("--precision", o->precision, "Activation and gradient storage: f32 (default), bf16, f16 "
                                                "(f16 uses dynamic loss scaling)")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}));
  cmd->add_option("--out", o->out, "Write the trained weights to this safetensors file");
  cmd->add_option("--save-state", o->save_state, "Write the whole training state (for --resume) to this file");
  cmd->add_option("--resume", o->resume, "Continue the run saved by --save-state in this file")
      ->check(CLI::ExistingFile);
  cmd->add_option("--device", o->device, "cpu (default), cuda or cuda:N");
  cmd->add_option("--threads", o->threads, "CPU threads (default: all cores)")->check(positive_number());
  cmd->callback([o, &exit_code] { exit_code = run_train(*o); });
}

}  // namespace aiopt::cli
