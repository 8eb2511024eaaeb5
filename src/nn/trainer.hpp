#pragma once
// The trainer: (B, T) windows of a token corpus, forward/backward with micro-batch accumulation,
// optional loss scaling, clipping and the optimizer under an LR schedule, evaluation on the
// validation split, progress records, and checkpoints that resume exactly (weights, optimizer
// state, step, sampler position, loss scale, in one safetensors file).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/device.hpp"
#include "nn/batches.hpp"
#include "nn/config.hpp"
#include "nn/corpus.hpp"
#include "nn/lora.hpp"
#include "nn/loss_scaler.hpp"
#include "nn/lr_schedule.hpp"
#include "nn/optimizer.hpp"
#include "nn/training.hpp"
#include "nn/weights.hpp"

namespace aiopt::nn {

// Where the tokens come from: a text file's bytes, or the built-in synthetic corpus.
struct DataSource {
  std::string file;  // empty: the synthetic corpus
  std::uint64_t corpus_seed = 1;
  int dialect = 0;
  std::size_t train_bytes = std::size_t{4} << 20;
  std::size_t validation_bytes = std::size_t{1} << 17;
  double validation_fraction = 0.1;  // of a file
  // A folder with vocab.json and merges.txt: the text is encoded by that byte-level BPE
  // (nn/bpe_tokenizer.hpp); empty: every byte is a token.
  std::string tokenizer;

  std::string describe() const;  // "synthetic dialect 0 (seed 1, 4 MiB)" or the file name
};
// Throws InputError naming the file when it cannot be read or is too small for seq_len windows
// (counted in tokens, after the tokenizer), or naming the tokenizer's file when it is malformed.
TokenSplit load_tokens(const DataSource& source, std::size_t seq_len);

struct TrainConfig {
  GptConfig model;
  std::uint64_t seed = 1;  // weight initialization and window sampling
  DataSource data;
  std::size_t batch = 8;       // sequences per micro-batch
  std::size_t seq_len = 128;   // T
  std::size_t accumulate = 1;  // micro-batches per optimizer step: the effective batch is batch × accumulate
  std::size_t steps = 200;     // optimizer steps
  OptimizerConfig optimizer;
  LrSchedule schedule;         // its total_steps is the budget the schedule is shaped for
  TrainingOptions training;
  LossScaler scaling;
  std::size_t eval_every = 50;  // 0: evaluate at the end only
  std::size_t eval_batches = 8;
  // Fine-tuning with low-rank adapters: every weight of the model frozen (no gradient, no
  // optimizer state), the adapters trained; with lora->int4_base the block linear weights are
  // held in int4 (QLoRA). None: every weight trains.
  std::optional<LoraConfig> lora;
  // Knowledge distillation (TrainingOptions::Distill) from the model `teacher` trains: its weights
  // come from the model cache (nn/model_cache.hpp) or Trainer::set_teacher. The teacher's
  // vocabulary is the model's, and its context holds seq_len.
  struct Distillation {
    std::shared_ptr<const TrainConfig> teacher;
    kernels::cpu::Distillation loss;
  };
  std::optional<Distillation> distillation;

  // Throws InputError naming the field for any value out of range.
  void validate() const;
  // Every field that changes the trained weights (not steps' progress reporting): the model
  // cache's key and a checkpoint's identity.
  nlohmann::json identity() const;
};

// The training recipe techniques use when they need a trained model of a preset (and the defaults
// of `aiopt train`): the built-in corpus, AdamW with warmup and cosine decay, sized so that tiny
// trains in seconds and small in a few minutes on a 2-core CPU. Throws InputError for an unknown
// preset or one whose vocabulary is not 256 (bytes).
TrainConfig standard_training(const std::string& preset);

struct StepRecord {
  std::size_t step = 0;  // 1-based: the number of optimizer steps taken after this one
  double loss = 0.0;     // mean training loss over the effective batch
  float lr = 0.0f;
  double grad_norm = 0.0;
  bool skipped = false;  // gradients overflowed; the update was not applied
  float loss_scale = 1.0f;
  double zero_grad_fraction = 0.0;  // gradient entries exactly zero (fp16 underflow shows here)
  std::size_t nonfinite_grads = 0;
  double seconds = 0.0;  // wall time of this step
  double tokens_per_second = 0.0;
};

struct EvalRecord {
  std::size_t step = 0;
  double loss = 0.0;  // mean validation loss, nats per token
};

class Trainer {
 public:
  // Initializes the weights from config.seed on `device` and loads the data.
  Trainer(TrainConfig config, const Device& device, void* stream = nullptr);
  // The same with tokens already loaded (several trainers over one corpus).
  Trainer(TrainConfig config, const Device& device, TokenSplit tokens, void* stream = nullptr);
  // Fine-tuning: the weights start as `init` (same config; any device) instead of config.seed's
  // initialization. Under QLoRA the block linear weights are quantized from `init` straight into
  // int4, never held in fp32 by the trainer.
  Trainer(TrainConfig config, const Device& device, TokenSplit tokens, const GptWeights& init, void* stream = nullptr);

  // The teacher of config.distillation, on this trainer's device, its config the teacher
  // TrainConfig's model (InputError otherwise, or when the config has no distillation). A
  // distillation run's step() throws InputError until it has one.
  void set_teacher(std::shared_ptr<Gpt> teacher);

  StepRecord step();
  double evaluate() const;
  // Steps until config.steps, evaluating every eval_every steps and after the last.
  void run(const std::function<void(const StepRecord&)>& on_step = {},
           const std::function<void(const EvalRecord&)>& on_eval = {});

  // One safetensors file: weights under their names, optimizer state, and the progress (step,
  // sampler draws, loss scaler) with the config's identity in the metadata.
  void save(const std::string& path) const;
  // Restores a save of a run with the same identity (InputError naming what differs otherwise);
  // the run continues as if it had never stopped.
  void resume(const std::string& path);

  const TrainConfig& config() const { return config_; }
  std::size_t steps_done() const { return steps_done_; }
  // Under QLoRA the block linear tensors are empty: int4_base() holds them.
  const GptWeights& weights() const { return weights_; }
  GptWeights& weights() { return weights_; }
  const LoraAdapters* adapters() const { return adapters_ ? &*adapters_ : nullptr; }
  const Int4Base* int4_base() const { return base_ ? &*base_ : nullptr; }
  // The model as a pass reads it: the adapters and the int4 base, when there are any.
  Adaptation adaptation() const;
  const Optimizer& optimizer() const { return optimizer_; }
  // Elements of the tensors the optimizer updates.
  std::size_t trainable_parameters() const;
  // The last step's gradient of the mean loss, times the loss scale it ran with (1 without scaling).
  const GptWeights& gradients() const { return grads_; }
  const TokenSplit& tokens() const { return tokens_; }
  const std::vector<StepRecord>& history() const { return history_; }
  const std::vector<EvalRecord>& evals() const { return evals_; }
  const LossScaler& scaler() const { return scaler_; }

 private:
  Trainer(TrainConfig config, const Device& device, TokenSplit tokens, const GptWeights* init, void* stream);

  TrainConfig config_;
  void* stream_;
  TokenSplit tokens_;
  std::optional<Int4Base> base_;
  GptWeights weights_;
  GptWeights grads_;  // empty tensors for frozen weights
  std::optional<LoraAdapters> adapters_, adapter_grads_;
  Optimizer optimizer_;
  BatchSampler sampler_;
  std::vector<Batch> validation_;
  LossScaler scaler_;
  std::size_t steps_done_ = 0;
  std::vector<StepRecord> history_;
  std::vector<EvalRecord> evals_;

  std::vector<std::pair<std::string, const Tensor*>> trainable_tensors() const;
  std::vector<Trainable> trainables();
};

}  // namespace aiopt::nn
