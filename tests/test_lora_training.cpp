// Fine-tuning with low-rank adapters (nn/lora.hpp, nn/training.hpp, nn/trainer.hpp): the
// adapters' gradients against the full model's through W_eff = W + s·B·A and against finite
// differences, frozen weights, merge and unmerge, QLoRA's int4 base, the adapter file, and the
// lora technique's runtime checks with their faults.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "core/error.hpp"
#include "core/fault.hpp"
#include "core/memory.hpp"
#include "core/rng.hpp"
#include "nn/batches.hpp"
#include "nn/corpus.hpp"
#include "nn/lora.hpp"
#include "nn/trainer.hpp"
#include "nn/training.hpp"
#include "support/files.hpp"
#include "support/largest_gradients.hpp"
#include "support/process.hpp"
#include "techniques/lora/lora.hpp"

using namespace aiopt;
using namespace aiopt::nn;

namespace {

GptConfig micro_config() { return {.layers = 2, .channels = 32, .heads = 4, .context = 32, .vocab = 256}; }

Batch corpus_batch(std::size_t batch, std::size_t len, std::uint64_t seed, int dialect = 0) {
  const TokenSplit tokens = synthetic_tokens(SyntheticCorpus{7, dialect}, 1 << 16, 1 << 14);
  BatchSampler sampler(tokens.train, batch, len, seed);
  return sampler.next();
}

// Adapters whose B is random too (lora_init leaves it zero, which would hide every term through B).
LoraAdapters random_adapters(const GptConfig& model, LoraConfig config, std::uint64_t seed) {
  LoraAdapters a = LoraAdapters::initialize(model, config, Device::cpu());
  std::uint64_t k = 0;
  for (auto& ad : a.adapters()) {
    float* b = ad.b.data<float>();
    for (std::int64_t i = 0; i < ad.b.numel(); ++i) b[i] = 0.2f * (2.0f * rng::uniform(seed, k++) - 1.0f);
  }
  return a;
}

GptWeights frozen_grads(const GptConfig& c) {
  return gradients_for(c, Device::cpu(), [](const std::string&) { return false; });
}

// A fine-tuning recipe on the micro model: dialect 1, `steps` steps.
TrainConfig micro_fine_tune(std::size_t steps, std::optional<LoraConfig> lora) {
  TrainConfig c;
  c.model = micro_config();
  c.data.dialect = 1;
  c.data.train_bytes = 1 << 16;
  c.data.validation_bytes = 1 << 13;
  c.batch = 4;
  c.seq_len = 16;
  c.steps = steps;
  c.schedule.total_steps = steps;
  c.schedule.peak_lr = 3e-3f;
  c.eval_every = 0;
  c.eval_batches = 2;
  c.lora = lora;
  return c;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.data<float>(), b.data<float>(), a.bytes()) == 0;
}

}  // namespace

TEST_CASE("lora sites cover the query and value slices or every block linear layer", "[lora_training]") {
  const GptConfig c = micro_config();
  const auto qv = lora_sites(c, LoraTargets::qv);
  REQUIRE(qv.size() == 2 * c.layers);
  CHECK(qv[0].name == "h.0.attn.c_attn.q");
  CHECK(qv[0].offset == 0);
  CHECK(qv[1].offset == 2 * c.channels);
  CHECK(qv[1].out_total == 3 * c.channels);
  const auto all = lora_sites(c, LoraTargets::all);
  REQUIRE(all.size() == 4 * c.layers);
  CHECK(all[3].in == 4 * c.channels);
  CHECK(all[3].out == c.channels);
}

TEST_CASE("adapter gradients equal the full model's gradient through W plus s times B A", "[lora_training]") {
  // With W_eff = W + s·B·A for each adapted slice, ∂L/∂B = s·G·Aᵀ and ∂L/∂A = s·Bᵀ·G, where G is
  // ∂L/∂W_eff: the plain pass on merged weights gives G with no adapter code involved.
  const GptConfig c = micro_config();
  const GptWeights w = GptWeights::initialize(c, 5, Device::cpu());
  const Batch b = corpus_batch(2, 16, 9);
  for (const LoraTargets targets : {LoraTargets::qv, LoraTargets::all}) {
    INFO("targets " << to_string(targets));
    LoraConfig config;
    config.rank = 4;
    config.alpha = 6.0f;
    config.targets = targets;
    const LoraAdapters adapters = random_adapters(c, config, 3);
    LoraAdapters adapter_grads = adapters.zeros_like();
    GptWeights none = frozen_grads(c);
    const double loss = forward_backward(w, b, none, {}, 1.0f, nullptr, {&adapters, &adapter_grads, nullptr}).loss;

    GptWeights merged = w.to(Device::cpu());
    adapters.merge_into(merged);
    GptWeights g = GptWeights::zeros(c, Device::cpu());
    const double merged_loss = forward_backward(merged, b, g, {}).loss;
    CHECK(loss == Approx(merged_loss).epsilon(1e-5));

    const float s = config.scale();
    double worst = 0.0, largest = 0.0;
    for (std::size_t i = 0; i < adapters.adapters().size(); ++i) {
      const auto& ad = adapters.adapters()[i];
      const auto& gr = adapter_grads.adapters()[i];
      const LoraSite& site = ad.site;
      const float* G = block_linear_weight(g.blocks[site.layer], site.linear).data<float>() + site.offset * site.in;
      const float* A = ad.a.data<float>();
      const float* B = ad.b.data<float>();
      const std::size_t r = config.rank;
      for (std::size_t o = 0; o < site.out; ++o)
        for (std::size_t k = 0; k < r; ++k) {
          double ref = 0.0;  // s·Σ_j G[o, j]·A[k, j]
          for (std::size_t j = 0; j < site.in; ++j) ref += double{G[o * site.in + j]} * A[k * site.in + j];
          ref *= s;
          worst = std::max(worst, std::abs(ref - gr.b.data<float>()[o * r + k]));
          largest = std::max(largest, std::abs(ref));
        }
      for (std::size_t k = 0; k < r; ++k)
        for (std::size_t j = 0; j < site.in; ++j) {
          double ref = 0.0;  // s·Σ_o B[o, k]·G[o, j]
          for (std::size_t o = 0; o < site.out; ++o) ref += double{B[o * r + k]} * G[o * site.in + j];
          ref *= s;
          worst = std::max(worst, std::abs(ref - gr.a.data<float>()[k * site.in + j]));
          largest = std::max(largest, std::abs(ref));
        }
    }
    REQUIRE(largest > 0.0);
    // Two fp32 passes of different association through two blocks: 1e-4 of the largest entry.
    CHECK(worst < 1e-4 * largest);
    WARN(to_string(targets) << ": worst |dA, dB − s·(G terms)| " << worst << " of largest " << largest);
  }
}

TEST_CASE("adapter gradients match central finite differences of the loss", "[lora_training]") {
  const GptConfig c = micro_config();
  const GptWeights w = GptWeights::initialize(c, 7, Device::cpu());
  const Batch b = corpus_batch(2, 12, 4);
  LoraConfig config;
  config.rank = 2;
  config.alpha = 4.0f;
  config.targets = LoraTargets::all;
  LoraAdapters adapters = random_adapters(c, config, 8);
  LoraAdapters grads = adapters.zeros_like();
  GptWeights none = frozen_grads(c);
  forward_backward(w, b, none, {}, 1.0f, nullptr, {&adapters, &grads, nullptr});
  const test::GradientCheck fd =
      test::check_largest_gradients(adapters.named(), std::as_const(grads).named(), 1, [&] {
        return evaluate_loss(w, b, {}, nullptr, {&adapters, nullptr, nullptr});
      });
  CHECK(fd.checked == adapters.named().size());
}

TEST_CASE("with B zero the adapted pass is the plain one and frozen weights get no gradient", "[lora_training]") {
  const GptConfig c = micro_config();
  const GptWeights w = GptWeights::initialize(c, 2, Device::cpu());
  const Batch b = corpus_batch(2, 16, 1);
  LoraConfig config;
  config.rank = 8;
  const LoraAdapters adapters = LoraAdapters::initialize(c, config, Device::cpu());
  LoraAdapters grads = adapters.zeros_like();
  GptWeights none = frozen_grads(c);
  const double adapted = forward_backward(w, b, none, {}, 1.0f, nullptr, {&adapters, &grads, nullptr}).loss;
  GptWeights g = GptWeights::zeros(c, Device::cpu());
  CHECK(adapted == forward_backward(w, b, g, {}).loss);
  for (const auto& [name, t] : none.named()) CHECK(t->numel() == 0);
  // B = 0: A's gradient s·Bᵀ·G is zero, B's is not.
  double a_norm = 0.0, b_norm = 0.0;
  for (const auto& ad : grads.adapters()) {
    for (std::int64_t i = 0; i < ad.a.numel(); ++i) a_norm += std::abs(ad.a.data<float>()[i]);
    for (std::int64_t i = 0; i < ad.b.numel(); ++i) b_norm += std::abs(ad.b.data<float>()[i]);
  }
  CHECK(a_norm == 0.0);
  CHECK(b_norm > 0.0);
}

TEST_CASE("the int4 base pass equals the pass on its dequantized weights bit for bit", "[lora_training]") {
  const GptConfig c = micro_config();
  const GptWeights w = GptWeights::initialize(c, 4, Device::cpu());
  const Batch b = corpus_batch(2, 16, 5);
  const Int4Base base = Int4Base::quantize(w, 32);
  GptWeights rounded = w.to(Device::cpu());
  GptWeights holed = w.to(Device::cpu());
  for (std::size_t l = 0; l < c.layers; ++l)
    for (BlockLinear linear : block_linears) {
      base.dequantize(l, linear, block_linear_weight(rounded.blocks[l], linear).data<float>());
      block_linear_weight(holed.blocks[l], linear) = Tensor();
    }
  LoraConfig config;
  config.rank = 4;
  const LoraAdapters adapters = random_adapters(c, config, 6);
  LoraAdapters g_int4 = adapters.zeros_like(), g_fp32 = adapters.zeros_like();
  GptWeights none = frozen_grads(c);
  const double l_int4 = forward_backward(holed, b, none, {}, 1.0f, nullptr, {&adapters, &g_int4, &base}).loss;
  const double l_fp32 = forward_backward(rounded, b, none, {}, 1.0f, nullptr, {&adapters, &g_fp32, nullptr}).loss;
  CHECK(l_int4 == l_fp32);
  const auto x = g_int4.named(), y = g_fp32.named();
  for (std::size_t i = 0; i < x.size(); ++i) CHECK(same_bits(*x[i].second, *y[i].second));
  // 4 bits and one f16 scale per 32 weights: 0.5625 bytes a weight against fp32's 4.
  CHECK(base.bytes() * 64 == base.weights() * 36);
}

TEST_CASE("LoRA fine-tuning trains the adapters alone and keeps every weight bit-identical", "[lora_training]") {
  const GptWeights base = GptWeights::initialize(micro_config(), 3, Device::cpu());
  LoraConfig config;
  config.rank = 4;
  Trainer t(micro_fine_tune(6, config), Device::cpu(), load_tokens(micro_fine_tune(6, config).data, 16), base);
  const double before = t.evaluate();
  for (int i = 0; i < 6; ++i) t.step();
  CHECK(t.evaluate() < before);
  CHECK_FALSE(lora::changed_weight(t, base).has_value());
  CHECK(t.trainable_parameters() == t.adapters()->parameters());
  // AdamW: m and v for each adapter element, nothing for the frozen weights.
  CHECK(t.optimizer().state_bytes() == 2 * t.adapters()->bytes());
  double b_norm = 0.0;
  for (const auto& ad : t.adapters()->adapters())
    for (std::int64_t i = 0; i < ad.b.numel(); ++i) b_norm += std::abs(ad.b.data<float>()[i]);
  CHECK(b_norm > 0.0);
  CHECK(lora::merged_logit_difference(t, corpus_batch(2, 16, 3, 1)) <= lora::merge_tolerance);
}

TEST_CASE("a saved LoRA and QLoRA fine-tuning state resumes with the same next-step loss", "[lora_training]") {
  const GptWeights base = GptWeights::initialize(micro_config(), 3, Device::cpu());
  for (const bool int4 : {false, true}) {
    INFO("int4 base " << int4);
    LoraConfig config;
    config.rank = 4;
    config.int4_base = int4;
    config.int4_group = 32;
    const TrainConfig recipe = micro_fine_tune(8, config);
    const TokenSplit tokens = load_tokens(recipe.data, 16);
    const test::TempDir dir;
    Trainer first(recipe, Device::cpu(), tokens, base);
    for (int i = 0; i < 3; ++i) first.step();
    first.save(dir.file("state.safetensors"));
    const StepRecord expected = first.step();
    Trainer second(recipe, Device::cpu(), tokens, base);
    second.resume(dir.file("state.safetensors"));
    CHECK(second.step().loss == expected.loss);
    const auto x = first.adapters()->named(), y = second.adapters()->named();
    for (std::size_t i = 0; i < x.size(); ++i) CHECK(same_bits(*x[i].second, *y[i].second));
    if (int4) CHECK(second.int4_base()->bytes() * 64 == second.int4_base()->weights() * 36);
  }
}

TEST_CASE("the lora checks fail on an unfrozen base and on a merge without the scale", "[lora_training]") {
  const GptWeights base = GptWeights::initialize(micro_config(), 3, Device::cpu());
  LoraConfig config;
  config.rank = 4;
  config.alpha = 16.0f;  // scale 4: a merge without it is far off
  const TrainConfig recipe = micro_fine_tune(4, config);
  const TokenSplit tokens = load_tokens(recipe.data, 16);
  {
    const fault::Scope unfrozen("lora.base_trains");
    Trainer t(recipe, Device::cpu(), tokens, base);
    for (int i = 0; i < 4; ++i) t.step();
    CHECK(lora::changed_weight(t, base).has_value());
  }
  Trainer t(recipe, Device::cpu(), tokens, base);
  for (int i = 0; i < 4; ++i) t.step();
  const Batch b = corpus_batch(2, 16, 3, 1);
  const double right = lora::merged_logit_difference(t, b);
  WARN("merged vs unmerged " << right);
  CHECK(right <= lora::merge_tolerance);
  const fault::Scope unscaled("lora.merge_unscaled");
  CHECK(lora::merged_logit_difference(t, b) > 100 * lora::merge_tolerance);
}

TEST_CASE("merge then unmerge restores the weights and the adapter file reads back exactly", "[lora_training]") {
  const GptConfig c = micro_config();
  const GptWeights w = GptWeights::initialize(c, 9, Device::cpu());
  LoraConfig config;
  config.rank = 3;
  config.targets = LoraTargets::all;
  const LoraAdapters adapters = random_adapters(c, config, 2);
  GptWeights round = w.to(Device::cpu());
  adapters.merge_into(round);
  adapters.unmerge_from(round);
  CHECK(max_relative_difference(round, w) < 1e-6);

  const test::TempDir dir;
  const std::string path = dir.file("adapters.safetensors");
  adapters.save(path);
  const LoraAdapters back = LoraAdapters::load(path, c, Device::cpu());
  CHECK(back.config().rank == 3);
  CHECK(back.config().targets == LoraTargets::all);
  const auto x = adapters.named(), y = back.named();
  REQUIRE(x.size() == y.size());
  for (std::size_t i = 0; i < x.size(); ++i) CHECK(same_bits(*x[i].second, *y[i].second));

  GptConfig other = c;
  other.channels = 64;
  other.heads = 4;
  CHECK_THROWS_AS(LoraAdapters::load(path, other, Device::cpu()), InputError);
  CHECK_THROWS_AS(LoraAdapters::load(dir.file("missing.safetensors"), c, Device::cpu()), InputError);
}

TEST_CASE("bad LoRA settings are refused with InputError naming the value", "[lora_training]") {
  const GptConfig c = micro_config();
  LoraConfig config;
  config.rank = 0;
  CHECK_THROWS_WITH(config.validate(c), Catch::Contains("rank = 0"));
  config.rank = 33;  // above min(in, out) = 32
  CHECK_THROWS_WITH(config.validate(c), Catch::Contains("rank = 33"));
  config.rank = 32;
  CHECK_NOTHROW(config.validate(c));
  config.alpha = 0.0f;
  CHECK_THROWS_WITH(config.validate(c), Catch::Contains("alpha"));
  config.alpha = 1.0f;
  config.int4_base = true;
  config.int4_group = 48;
  CHECK_THROWS_WITH(config.validate(c), Catch::Contains("group = 48"));
  CHECK_THROWS_AS(parse_lora_targets("k"), InputError);
}

TEST_CASE("the CUDA adapted pass gives the CPU's loss and adapter gradients", "[lora_training][gpu]") {
  const GptConfig c = micro_config();
  const GptWeights w = GptWeights::initialize(c, 21, Device::cpu());
  const GptWeights wc = w.to(Device::cuda());
  const Batch b = corpus_batch(2, 24, 6);
  for (const LoraTargets targets : {LoraTargets::qv, LoraTargets::all}) {
    INFO("targets " << to_string(targets));
    LoraConfig config;
    config.rank = 4;
    config.targets = targets;
    const LoraAdapters adapters = random_adapters(c, config, 11);
    LoraAdapters adapters_cuda = LoraAdapters::initialize(c, config, Device::cuda());
    adapters_cuda.copy_from(adapters);
    LoraAdapters g = adapters.zeros_like(), g_cuda = adapters_cuda.zeros_like();
    GptWeights none = frozen_grads(c);
    GptWeights none_cuda = gradients_for(c, Device::cuda(), [](const std::string&) { return false; });
    const double loss = forward_backward(w, b, none, {}, 1.0f, nullptr, {&adapters, &g, nullptr}).loss;
    const double loss_cuda =
        forward_backward(wc, b, none_cuda, {}, 1.0f, nullptr, {&adapters_cuda, &g_cuda, nullptr}).loss;
    // As the plain pass's CUDA test (test_training.cpp): different fp32 summation orders.
    CHECK(std::abs(loss - loss_cuda) < 1e-5 * loss);
    const auto x = g.named(), y = g_cuda.named();
    double worst = 0.0, largest = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const Tensor back = y[i].second->to(Device::cpu());
      for (std::int64_t e = 0; e < back.numel(); ++e) {
        worst = std::max(worst, double{std::abs(back.data<float>()[e] - x[i].second->data<float>()[e])});
        largest = std::max(largest, double{std::abs(x[i].second->data<float>()[e])});
      }
    }
    CHECK(worst < 1e-4 * largest);
  }
}

TEST_CASE("bad lora parameters exit 2 before anything runs", "[lora_training]") {
  struct Bad {
    std::string set, message;
  };
  // tiny: C = 64, so a rank above 64 is no longer low for the qv slices (64 × 64).
  for (const Bad& bad : {Bad{"rank=0", "rank"}, Bad{"rank=65", "rank = 65"}, Bad{"alpha=0", "alpha"},
                         Bad{"targets=k", "targets"}, Bad{"group_size=48", "group_size"}}) {
    const auto r = test::run_aiopt({"bench", "--technique", "lora", "--quick", "--set", bad.set, "--progress", "never"});
    INFO(bad.set << ": " << r.err);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains(bad.message));
  }
}
