// The training engine: the whole model's gradient against finite differences, every activation
// policy against store_all, accumulation against the large batch, determinism, the trainer's
// learning, checkpoint/resume and the model cache.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "core/error.hpp"
#include "core/memory.hpp"
#include "core/threads.hpp"
#include "nn/batches.hpp"
#include "nn/corpus.hpp"
#include "nn/model_cache.hpp"
#include "nn/trainer.hpp"
#include "nn/training.hpp"
#include "support/files.hpp"
#include "support/largest_gradients.hpp"

#if AIOPT_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "core/cuda_check.hpp"
#endif

using namespace aiopt;
using namespace aiopt::nn;

namespace {

GptConfig micro_config() { return {.layers = 3, .channels = 32, .heads = 4, .context = 32, .vocab = 256}; }

// Training the micro model on a small synthetic corpus: `batch` windows of 16 tokens for `steps`
// steps, the schedule spanning them.
TrainConfig micro_training(std::size_t batch, std::size_t steps) {
  TrainConfig c;
  c.model = micro_config();
  c.data.train_bytes = 1 << 16;
  c.data.validation_bytes = 1 << 13;
  c.batch = batch;
  c.seq_len = 16;
  c.steps = steps;
  c.schedule.total_steps = steps;
  return c;
}

// A batch of windows from the synthetic corpus.
Batch corpus_batch(std::size_t batch, std::size_t len, std::uint64_t seed) {
  static const TokenSplit tokens = synthetic_tokens(SyntheticCorpus{7, 0}, 1 << 16, 1 << 14);
  BatchSampler sampler(tokens.train, batch, len, seed);
  return sampler.next();
}

std::vector<float> flat(const GptWeights& w) {
  std::vector<float> out;
  for (const auto& [name, t] : w.named()) {
    const float* p = t->data<float>();
    out.insert(out.end(), p, p + t->numel());
  }
  return out;
}

GptWeights gradient(const GptWeights& w, const Batch& b, const TrainingOptions& o) {
  GptWeights g = GptWeights::zeros(w.config, Device::cpu());
  forward_backward(w, b, g, o);
  return g;
}

}  // namespace

TEST_CASE("the whole model's gradient matches central finite differences", "[training]") {
  const GptConfig config = preset("tiny");
  GptWeights w = GptWeights::initialize(config, 11, Device::cpu());
  const Batch b = corpus_batch(2, 12, 3);
  // Softmax attention (flash) and the two causal linear attentions, each a model of its own.
  for (const TrainAttention attention : {TrainAttention::flash, TrainAttention::linear_elu, TrainAttention::performer}) {
    TrainingOptions o;
    o.attention = attention;
    GptWeights g = GptWeights::zeros(config, Device::cpu());
    forward_backward(w, b, g, o);

    INFO("attention " << to_string(attention));
    // The worst entry on tiny measures 1.2e-3 against the check's 1e-2.
    const test::GradientCheck fd =
        test::check_largest_gradients(w.named(), std::as_const(g).named(), 3, [&] { return evaluate_loss(w, b, o); });
    CHECK(fd.checked == w.named().size() * 3);
    WARN(to_string(attention) << ": worst relative error " << fd.worst << " over " << fd.checked << " entries");
  }
}

TEST_CASE("every activation policy gives store_all's gradient", "[training]") {
  GptConfig config = micro_config();
  config.layers = 5;
  const GptWeights w = GptWeights::initialize(config, 5, Device::cpu());
  const Batch b = corpus_batch(2, 20, 9);
  const GptWeights reference = gradient(w, b, TrainingOptions{});
  for (std::size_t k : {1, 2, 3, 5}) {
    TrainingOptions o;
    o.checkpoint_every = k;
    INFO("checkpoint_every " << k);
    // Recomputation runs the same kernels on the same inputs: bit-identical.
    CHECK(max_relative_difference(gradient(w, b, o), reference) == 0.0);
  }
  TrainingOptions selective;
  selective.selective = true;
  CHECK(max_relative_difference(gradient(w, b, selective), reference) == 0.0);
  TrainingOptions naive;
  naive.attention = TrainAttention::naive;
  // A different attention algorithm: the same math in another summation order.
  CHECK(max_relative_difference(gradient(w, b, naive), reference) < 1e-5);
}

TEST_CASE("checkpointing lowers the measured activation peak", "[training]") {
  GptConfig config = micro_config();
  config.layers = 8;
  const GptWeights w = GptWeights::initialize(config, 5, Device::cpu());
  const Batch b = corpus_batch(4, 32, 1);
  auto peak = [&](const TrainingOptions& o) {
    GptWeights g = GptWeights::zeros(config, Device::cpu());
    memory::Scope scope(Device::cpu());
    forward_backward(w, b, g, o);
    return scope.peak_bytes();
  };
  const std::size_t all = peak(TrainingOptions{});
  TrainingOptions every3;
  every3.checkpoint_every = 3;
  TrainingOptions every1;
  every1.checkpoint_every = 1;
  TrainingOptions selective;
  selective.selective = true;
  const std::size_t p3 = peak(every3), p1 = peak(every1), ps = peak(selective);
  INFO("store_all " << all << ", every 3 " << p3 << ", every 1 " << p1 << ", selective " << ps);
  CHECK(p3 < all);
  CHECK(p1 < p3);
  CHECK(ps < all);
}

TEST_CASE("k accumulated micro-batches give the large batch's gradient", "[training]") {
  const GptConfig config = micro_config();
  const GptWeights w = GptWeights::initialize(config, 2, Device::cpu());
  const Batch large = corpus_batch(6, 16, 4);
  GptWeights g_large = GptWeights::zeros(config, Device::cpu());
  forward_backward(w, large, g_large, TrainingOptions{});
  GptWeights g_acc = GptWeights::zeros(config, Device::cpu());
  const std::size_t k = 3, rows = 2;
  for (std::size_t i = 0; i < k; ++i) {
    Batch micro;
    micro.batch = rows;
    micro.seq_len = large.seq_len;
    const auto span = rows * large.seq_len;
    micro.inputs.assign(large.inputs.begin() + static_cast<long>(i * span),
                        large.inputs.begin() + static_cast<long>((i + 1) * span));
    micro.targets.assign(large.targets.begin() + static_cast<long>(i * span),
                         large.targets.begin() + static_cast<long>((i + 1) * span));
    forward_backward(w, micro, g_acc, TrainingOptions{}, 1.0f / static_cast<float>(k));
  }
  // The same sums grouped differently: fp32 reassociation only.
  CHECK(max_relative_difference(g_acc, g_large) < 1e-6);
}

// Zero entries of a gradient, leaving out the key bias: softmax ignores a shift shared by every
// key, so that gradient is exactly zero and what fp32 computes for it is rounding noise, which
// lands on 0.0 for some thread counts.
std::size_t zeros_outside_key_bias(const GptWeights& g) {
  const std::size_t c = g.config.channels;
  std::size_t zeros = 0;
  for (const auto& [name, t] : g.named()) {
    const float* p = t->data<float>();
    const bool qkv_bias = name.ends_with("attn.c_attn.bias");
    for (std::size_t i = 0; i < static_cast<std::size_t>(t->numel()); ++i)
      if (p[i] == 0.0f && !(qkv_bias && i >= c && i < 2 * c)) ++zeros;
  }
  return zeros;
}

TEST_CASE("fp16 storage without loss scaling loses small gradients that scaling keeps", "[training]") {
  const GptConfig config = micro_config();
  const GptWeights w = GptWeights::initialize(config, 3, Device::cpu());
  // 256 positions: the mean's 1/256 puts the loss gradients of unlikely tokens below fp16's
  // smallest subnormal (2^-24 ≈ 6e-8), as at real batch sizes.
  const Batch b = corpus_batch(8, 32, 5);
  auto zeros = [&](DType storage, float scale) {
    TrainingOptions o;
    o.storage = storage;
    GptWeights g = GptWeights::zeros(config, Device::cpu());
    forward_backward(w, b, g, o, scale);
    CHECK(gradient_census(g).nonfinite == 0);
    return zeros_outside_key_bias(g);
  };
  const std::size_t f32 = zeros(DType::f32, 1.0f);
  const std::size_t f16 = zeros(DType::f16, 1.0f);
  const std::size_t scaled = zeros(DType::f16, 1024.0f);
  const std::size_t bf16 = zeros(DType::bf16, 1.0f);
  INFO("zero entries outside the key bias: f32 " << f32 << ", f16 " << f16 << ", f16 ×1024 " << scaled << ", bf16 "
                                                 << bf16);
  // fp32 keeps every entry here; fp16 flushes some to zero, a loss scale of 2^10 brings most of
  // them back, and bf16 (fp32's exponent range) loses none.
  CHECK(f32 == 0);
  CHECK(f16 > 10);
  CHECK(scaled * 4 < f16);
  CHECK(bf16 == 0);
}

TEST_CASE("the same seed and threads give bit-identical training losses", "[training]") {
  TrainConfig c = micro_training(4, 5);
  auto losses = [&] {
    Trainer t(c, Device::cpu());
    std::vector<double> out;
    for (int i = 0; i < 5; ++i) out.push_back(t.step().loss);
    return out;
  };
  CHECK(losses() == losses());
}

TEST_CASE("training tiny lowers the validation loss well below the unigram entropy", "[training]") {
  TrainConfig c;
  c.model = preset("tiny");
  c.data.train_bytes = 1 << 20;
  c.data.validation_bytes = 1 << 15;
  c.batch = 8;
  c.seq_len = 64;
  c.steps = 200;
  c.schedule.kind = ScheduleKind::warmup_cosine;
  c.schedule.peak_lr = 3e-3f;
  c.schedule.min_lr = 3e-4f;
  c.schedule.warmup_steps = 20;
  c.schedule.total_steps = 200;
  c.eval_every = 0;
  Trainer t(c, Device::cpu());
  const double before = t.evaluate();
  t.run();
  const double after = t.evals().back().loss;
  const double unigram = unigram_entropy(t.tokens().validation);
  INFO("validation loss " << before << " -> " << after << ", unigram entropy " << unigram);
  CHECK(before > unigram);
  // "Well below": at least 20 % under what byte frequencies alone give.
  CHECK(after < 0.8 * unigram);
}

TEST_CASE("a saved training state resumes with the same next-step loss", "[training]") {
  test::TempDir dir;
  TrainConfig c = micro_training(4, 10);
  c.schedule.warmup_steps = 2;
  Trainer first(c, Device::cpu());
  for (int i = 0; i < 4; ++i) first.step();
  first.save(dir.file("state.safetensors"));
  const StepRecord expected = first.step();

  Trainer second(c, Device::cpu());
  second.resume(dir.file("state.safetensors"));
  CHECK(second.steps_done() == 4);
  const StepRecord got = second.step();
  CHECK(got.loss == expected.loss);
  CHECK(got.lr == expected.lr);
  CHECK(flat(second.weights()) == flat(first.weights()));

  TrainConfig other = c;
  other.batch = 8;
  Trainer third(other, Device::cpu());
  CHECK_THROWS_AS(third.resume(dir.file("state.safetensors")), InputError);
}

TEST_CASE("the model cache trains once and then loads the same weights", "[training]") {
  test::TempDir dir;
  REQUIRE(setenv("AIOPT_CACHE", dir.file("cache").c_str(), 1) == 0);
  TrainConfig c = micro_training(2, 3);
  const CachedModel trained = trained_model(c, Device::cpu());
  CHECK_FALSE(trained.from_cache);
  REQUIRE_FALSE(trained.path.empty());
  const CachedModel loaded = trained_model(c, Device::cpu());
  CHECK(loaded.from_cache);
  CHECK(loaded.validation_loss == trained.validation_loss);
  CHECK(flat(loaded.weights) == flat(trained.weights));
  TrainConfig longer = c;
  longer.steps = 4;
  CHECK(model_cache_key(longer) != model_cache_key(c));
  unsetenv("AIOPT_CACHE");
}

TEST_CASE("bad training input is refused with InputError", "[training]") {
  const GptConfig config = micro_config();
  const GptWeights w = GptWeights::initialize(config, 1, Device::cpu());
  GptWeights g = GptWeights::zeros(config, Device::cpu());
  Batch b = corpus_batch(1, 8, 1);
  b.inputs[3] = 300;
  CHECK_THROWS_AS(forward_backward(w, b, g, TrainingOptions{}), InputError);
  Batch too_long = corpus_batch(1, 8, 1);
  too_long.seq_len = 64;
  CHECK_THROWS_AS(forward_backward(w, too_long, g, TrainingOptions{}), InputError);
  TrainingOptions bad;
  bad.storage = DType::i8;
  CHECK_THROWS_AS(forward_backward(w, corpus_batch(1, 8, 1), g, bad), InputError);
  GptConfig other = config;
  other.layers = 2;
  GptWeights wrong = GptWeights::zeros(other, Device::cpu());
  CHECK_THROWS_AS(forward_backward(w, corpus_batch(1, 8, 1), wrong, TrainingOptions{}), InputError);
}

#if AIOPT_HAVE_CUDA
TEST_CASE("the CUDA training pass gives the CPU's loss and gradients", "[training][gpu]") {
  const GptConfig config = micro_config();
  const GptWeights w = GptWeights::initialize(config, 21, Device::cpu());
  const GptWeights wc = w.to(Device::cuda());
  const Batch b = corpus_batch(2, 24, 6);
  for (const TrainAttention attention : {TrainAttention::flash, TrainAttention::naive}) {
    INFO("attention " << to_string(attention));
    TrainingOptions o;
    o.attention = attention;
    GptWeights g = GptWeights::zeros(config, Device::cpu());
    GptWeights gc = GptWeights::zeros(config, Device::cuda());
    const double loss = forward_backward(w, b, g, o).loss;
    const double loss_cuda = forward_backward(wc, b, gc, o).loss;
    // Both sum in fp32 in different orders through a 3-block model: a few hundred roundings of
    // relative size 2^-24 compound to well under 1e-5 in the loss and 1e-4 of the largest gradient.
    CHECK(std::abs(loss - loss_cuda) < 1e-5 * loss);
    const GptWeights back = gc.to(Device::cpu());
    CHECK(max_relative_difference(back, g) < 1e-4);
    CHECK(evaluate_loss(wc, b) == Approx(evaluate_loss(w, b)).epsilon(1e-5));
  }
}

TEST_CASE("a trainer on a non-blocking stream steps as on the default stream", "[training][gpu]") {
  // The host reads (the loss, the gradient census, the norm) must wait for the trainer's stream,
  // which a cudaStreamNonBlocking stream does not order against the legacy one. The same kernels
  // in the same order give the same bits.
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  {
    const TrainConfig c = micro_training(4, 4);
    Trainer on_default(c, Device::cuda());
    Trainer on_stream(c, Device::cuda(), stream);
    for (int i = 0; i < 4; ++i) {
      INFO("step " << i);
      const StepRecord want = on_default.step();
      const StepRecord got = on_stream.step();
      CHECK(got.loss == want.loss);
      CHECK(got.grad_norm == want.grad_norm);
      CHECK(got.zero_grad_fraction == want.zero_grad_fraction);
    }
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
}
#endif
