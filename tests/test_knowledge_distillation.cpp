// knowledge_distillation: the training pass's distillation head (α = 0 against the plain
// cross-entropy, the whole model's gradient against finite differences, KL 0 for a student equal
// to its teacher), the trainer and the model cache with a teacher, the technique's parameters, its
// formulas, both variants' quick runs, the two runtime checks failing on broken variants, bad
// parameters refused by the CLI with exit code 2, and ([gpu]) a CUDA distillation step against the CPU.
//
// Tolerances, and why:
//   α = 0 against cross-entropy: the two heads are different kernels (kernels/cpu/cross_entropy,
//   kernels/cpu/distillation_loss) computing the same softmax in another summation order; their
//   logit gradients could differ by a few fp32 roundings, which the backward would carry into every
//   weight's gradient: held to 1e-5 of each tensor's largest gradient (measured: 0, the same bits,
//   on the AVX-512 CPU the README names; the tolerance covers another SIMD path's order).
//   Finite differences: as tests/test_training.cpp's whole-model check (h = 1e-2 on fp32 losses,
//   1 % plus a 1e-3 floor), here on the distillation loss that forward_backward returns.
//   Student = teacher: the training pass's logits and the inference forward's differ by fp32
//   rounding only, so T²·KL is below 1e-6 nats (measured ~1e-10) and every gradient below 1e-4 of
//   what the same student gets from a different teacher.
//   CUDA against CPU ([gpu]): fp32 in another summation order through a 3-block model, held as
//   tests/test_training.cpp holds the cross-entropy pass (1e-5 of the loss, 1e-4 of the gradients).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/fault.hpp"
#include "nn/batches.hpp"
#include "nn/corpus.hpp"
#include "nn/model_cache.hpp"
#include "nn/trainer.hpp"
#include "nn/training.hpp"
#include "support/files.hpp"
#include "support/largest_gradients.hpp"
#include "support/metrics.hpp"
#include "support/model_cache.hpp"
#include "support/process.hpp"
#include "support/technique_run.hpp"
#include "techniques/knowledge_distillation/knowledge_distillation.hpp"

using namespace aiopt;
using namespace aiopt::nn;
namespace kd = aiopt::knowledge_distillation;
using aiopt::test::metric;
using aiopt::test::run_aiopt;

namespace {

GptConfig student_config() { return {.layers = 3, .channels = 32, .heads = 4, .context = 32, .vocab = 256}; }
GptConfig teacher_model() { return {.layers = 2, .channels = 48, .heads = 4, .context = 64, .vocab = 256}; }

Batch corpus_batch(std::size_t batch, std::size_t len, std::uint64_t seed) {
  static const TokenSplit tokens = synthetic_tokens(SyntheticCorpus{7, 0}, 1 << 16, 1 << 14);
  BatchSampler sampler(tokens.train, batch, len, seed);
  return sampler.next();
}

std::shared_ptr<Gpt> random_teacher(std::uint64_t seed) {
  return std::make_shared<Gpt>(GptWeights::initialize(teacher_model(), seed, Device::cpu()));
}

GptWeights gradient(const GptWeights& w, const Batch& b, const TrainingOptions& o, double* loss = nullptr) {
  GptWeights g = GptWeights::zeros(w.config, w.wte.device());
  const double l = forward_backward(w, b, g, o).loss;
  if (loss) *loss = l;
  return g;
}

// The largest |a − b| of any tensor over that tensor's largest |b|.
double worst_tensor_difference(const GptWeights& a, const GptWeights& b) {
  const auto an = a.named(), bn = b.named();
  double worst = 0.0;
  for (std::size_t t = 0; t < an.size(); ++t) {
    const float* x = an[t].second->data<float>();
    const float* y = bn[t].second->data<float>();
    const auto n = static_cast<std::size_t>(an[t].second->numel());
    double diff = 0.0, scale = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      diff = std::max(diff, static_cast<double>(std::abs(x[i] - y[i])));
      scale = std::max(scale, static_cast<double>(std::abs(y[i])));
    }
    if (scale > 0) worst = std::max(worst, diff / scale);
  }
  return worst;
}

std::vector<float> flat(const GptWeights& w) {
  std::vector<float> out;
  const GptWeights host = w.to(Device::cpu());
  for (const auto& [name, t] : host.named()) {
    const float* p = t->data<float>();
    out.insert(out.end(), p, p + t->numel());
  }
  return out;
}

TrainConfig micro_training(const GptConfig& model, std::size_t steps, std::uint64_t seed) {
  TrainConfig c;
  c.model = model;
  c.seed = seed;
  c.data.train_bytes = 1 << 16;
  c.data.validation_bytes = 1 << 13;
  c.batch = 2;
  c.seq_len = 16;
  c.steps = steps;
  c.schedule.total_steps = steps;
  c.eval_batches = 2;
  return c;
}

const std::unique_ptr<Technique> technique = make_knowledge_distillation();

// The quick parameters with the tiny preset as the teacher (trained in the tests' model cache in
// seconds) and a one-block student of width 32 under it; 12 steps, one seed, 4 decoded tokens.
Case make_case(const std::string& variant, const std::map<std::string, Value>& changes = {}) {
  std::map<std::string, Value> all = {{"teacher", std::string("tiny")},
                                      {"layers", std::int64_t{1}},
                                      {"channels", std::int64_t{32}},
                                      {"heads", std::int64_t{2}},
                                      {"steps", std::int64_t{12}},
                                      {"seeds", std::int64_t{1}},
                                      {"decode_tokens", std::int64_t{4}}};
  for (const auto& [k, v] : changes) all[k] = v;
  return aiopt::test::quick_case(*technique, variant, all, 5);
}

}  // namespace

// ---- the training pass

TEST_CASE("distillation at alpha 0 gives the cross-entropy gradients", "[knowledge_distillation]") {
  const GptWeights w = GptWeights::initialize(student_config(), 3, Device::cpu());
  const Batch b = corpus_batch(3, 20, 4);
  double plain_loss = 0.0, distilled_loss = 0.0;
  const GptWeights plain = gradient(w, b, TrainingOptions{}, &plain_loss);
  for (const float temperature : {1.0f, 4.0f}) {
    INFO("T " << temperature);
    TrainingOptions o;
    o.distill = {random_teacher(9), {temperature, 0.0f}};
    const GptWeights distilled = gradient(w, b, o, &distilled_loss);
    CHECK(distilled_loss == Approx(plain_loss).epsilon(1e-6));
    const double worst = worst_tensor_difference(distilled, plain);
    WARN("T " << temperature << ": worst gradient difference " << worst << " of a tensor's largest");
    CHECK(worst < 1e-5);
  }
  // The soft term does move them: α = 0.5 differs from the cross-entropy by far more.
  TrainingOptions half;
  half.distill = {random_teacher(9), {2.0f, 0.5f}};
  CHECK(worst_tensor_difference(gradient(w, b, half), plain) > 1e-2);
}

TEST_CASE("the whole model's distillation gradient matches central finite differences", "[knowledge_distillation]") {
  GptWeights w = GptWeights::initialize(student_config(), 11, Device::cpu());
  const Batch b = corpus_batch(2, 12, 3);
  TrainingOptions o;
  o.distill = {random_teacher(12), {2.0f, 0.7f}};
  const GptWeights g = gradient(w, b, o);
  auto loss = [&] {
    GptWeights scratch = GptWeights::zeros(w.config, Device::cpu());
    return forward_backward(w, b, scratch, o).loss;
  };
  const test::GradientCheck fd = test::check_largest_gradients(w.named(), g.named(), 2, loss);
  CHECK(fd.checked == w.named().size() * 2);
  WARN("distillation: worst relative error " << fd.worst << " over " << fd.checked << " entries");
}

TEST_CASE("a student equal to its teacher has KL 0 and no gradient from it", "[knowledge_distillation]") {
  auto teacher = random_teacher(21);
  const Batch b = corpus_batch(2, 24, 5);
  for (const float temperature : {1.0f, 2.0f, 8.0f}) {
    INFO("T " << temperature);
    TrainingOptions o;
    o.distill = {teacher, {temperature, 1.0f}};
    double self = 0.0;
    const GptWeights g = gradient(teacher->weights(), b, o, &self);
    CHECK(self >= 0.0);
    CHECK(self < 1e-6);
    CHECK(kd::check_self_distillation(teacher, b, temperature) == Approx(self).margin(1e-12));
    // Against another teacher the same student gets a real gradient; from itself, rounding only.
    TrainingOptions other;
    other.distill = {random_teacher(22), {temperature, 1.0f}};
    const GptWeights real = gradient(teacher->weights(), b, other);
    double largest = 0.0, self_largest = 0.0;
    for (float v : flat(real)) largest = std::max(largest, static_cast<double>(std::abs(v)));
    for (float v : flat(g)) self_largest = std::max(self_largest, static_cast<double>(std::abs(v)));
    CHECK(self_largest < 1e-4 * largest);
  }
}

TEST_CASE("bad distillation input is refused with InputError", "[knowledge_distillation]") {
  const GptWeights w = GptWeights::initialize(student_config(), 1, Device::cpu());
  GptWeights g = GptWeights::zeros(student_config(), Device::cpu());
  const Batch b = corpus_batch(1, 8, 1);
  TrainingOptions o;
  o.distill = {random_teacher(2), {0.0f, 0.5f}};
  CHECK_THROWS_AS(forward_backward(w, b, g, o), InputError);
  o.distill.loss = {1.0f, 1.5f};
  CHECK_THROWS_AS(forward_backward(w, b, g, o), InputError);
  o.distill.loss = {1.0f, 0.5f};
  Batch ignored = b;
  ignored.targets[2] = -1;
  CHECK_THROWS_WITH(forward_backward(w, ignored, g, o), Catch::Contains("uncounted"));
  GptConfig other = teacher_model();
  other.vocab = 300;
  o.distill.teacher = std::make_shared<Gpt>(GptWeights::initialize(other, 1, Device::cpu()));
  CHECK_THROWS_WITH(forward_backward(w, b, g, o), Catch::Contains("vocabulary"));
  other = teacher_model();
  other.context = 4;
  o.distill.teacher = std::make_shared<Gpt>(GptWeights::initialize(other, 1, Device::cpu()));
  CHECK_THROWS_WITH(forward_backward(w, b, g, o), Catch::Contains("teacher's context"));
}

// ---- the trainer and the model cache

TEST_CASE("a distilled training config names its teacher in its identity", "[knowledge_distillation]") {
  const TrainConfig plain = micro_training(student_config(), 4, 1);
  TrainConfig distilled = plain;
  distilled.distillation =
      TrainConfig::Distillation{std::make_shared<const TrainConfig>(micro_training(teacher_model(), 5, 2)), {2.0f, 0.5f}};
  REQUIRE_NOTHROW(distilled.validate());
  CHECK(model_cache_key(distilled) != model_cache_key(plain));
  CHECK(distilled.identity().at("distillation").at("teacher") == distilled.distillation->teacher->identity());
  TrainConfig hotter = distilled;
  hotter.distillation->loss.temperature = 4.0f;
  CHECK(model_cache_key(hotter) != model_cache_key(distilled));
  // The identity of a run without distillation is what it was before distillation existed.
  CHECK_FALSE(plain.identity().contains("distillation"));
  TrainConfig negative_alpha = distilled;
  negative_alpha.distillation->loss.alpha = -0.5f;
  CHECK_THROWS_AS(negative_alpha.validate(), InputError);
  TrainConfig no_teacher = distilled;
  no_teacher.distillation->teacher = nullptr;
  CHECK_THROWS_AS(no_teacher.validate(), InputError);
  // A trainer without its teacher refuses to step rather than train on hard labels silently.
  Trainer trainer(distilled, Device::cpu());
  CHECK_THROWS_WITH(trainer.step(), Catch::Contains("set_teacher"));
  CHECK_THROWS_AS(trainer.set_teacher(std::make_shared<Gpt>(GptWeights::initialize(student_config(), 1, Device::cpu()))),
                  InputError);
  trainer.set_teacher(random_teacher(3));
  CHECK(std::isfinite(trainer.step().loss));
}

TEST_CASE("the model cache trains a distilled student once and then loads it", "[knowledge_distillation]") {
  test::TempDir dir;
  REQUIRE(setenv("AIOPT_CACHE", dir.file("cache").c_str(), 1) == 0);
  const TrainConfig teacher = micro_training(teacher_model(), 6, 2);
  TrainConfig c = micro_training(student_config(), 4, 1);
  c.distillation = TrainConfig::Distillation{std::make_shared<const TrainConfig>(teacher), {2.0f, 0.5f}};
  const CachedModel trained = trained_model(c, Device::cpu());
  CHECK_FALSE(trained.from_cache);
  REQUIRE_FALSE(trained.path.empty());
  // The teacher went into the cache on the way.
  CHECK(trained_model(teacher, Device::cpu()).from_cache);
  const CachedModel loaded = trained_model(c, Device::cpu());
  CHECK(loaded.from_cache);
  CHECK(loaded.path == trained.path);
  CHECK(loaded.validation_loss == trained.validation_loss);
  CHECK(flat(loaded.weights) == flat(trained.weights));
  // The distilled student is not the hard-label one of the same seed.
  TrainConfig hard = c;
  hard.distillation.reset();
  CHECK(flat(trained_model(hard, Device::cpu()).weights) != flat(trained.weights));
  unsetenv("AIOPT_CACHE");
}

// ---- the technique

TEST_CASE("the technique declares its contract", "[knowledge_distillation]") {
  const Technique& t = *technique;
  CHECK(t.name() == "knowledge_distillation");
  CHECK(t.trade_off() == "size vs retained quality");
  CHECK(t.baseline() == "hard_labels");
  REQUIRE(t.find_variant("distilled"));
  CHECK(t.find_variant("distilled")->runs_on(DeviceKind::cpu));
  CHECK(t.find_variant("distilled")->runs_on(DeviceKind::cuda));
  const Case c = make_case("distilled", {{"temperature", 4.0}, {"alpha", 0.25}});
  const TrainConfig config = kd::student_config(c, kd::Variant::distilled);
  REQUIRE(config.distillation);
  CHECK(config.distillation->loss.temperature == 4.0f);
  CHECK(config.distillation->loss.alpha == 0.25f);
  CHECK(config.distillation->teacher->identity() == standard_training("tiny").identity());
  CHECK(config.model.layers == 1);
  CHECK_FALSE(kd::student_config(c, kd::Variant::hard_labels).distillation);
  // Same steps, data and seed for both variants.
  const TrainConfig hard = kd::student_config(c, kd::Variant::hard_labels);
  CHECK(hard.steps == config.steps);
  CHECK(hard.seed == config.seed);
  CHECK(hard.data.describe() == config.data.describe());
}

TEST_CASE("bad parameters are input errors naming the parameter", "[knowledge_distillation]") {
  for (const double t : {0.0, -1.0, 1e-7})
    CHECK_THROWS_WITH(technique->validate(make_case("distilled", {{"temperature", t}}), DeviceKind::cpu),
                      Catch::Contains("'temperature'"));
  for (const double a : {-0.1, 1.5}) CHECK_THROWS_AS(technique->validate(make_case("distilled", {{"alpha", a}}), DeviceKind::cpu), InputError);
  CHECK_THROWS_WITH(technique->validate(make_case("distilled", {{"seq_len", std::int64_t{200}}}), DeviceKind::cpu),
                    Catch::Contains("seq_len"));
  CHECK_THROWS_WITH(technique->validate(make_case("distilled", {{"vocab", std::int64_t{512}}}), DeviceKind::cpu),
                    Catch::Contains("'vocab'"));
  CHECK_NOTHROW(technique->validate(make_case("distilled", {{"temperature", 1e-6}, {"alpha", 1.0}}), DeviceKind::cpu));
}

TEST_CASE("bad parameters exit 2 through the CLI before anything runs", "[knowledge_distillation][cli]") {
  for (const std::string set : {"temperature=0", "temperature=-2", "temperature=1e-9", "alpha=1.5", "alpha=-0.5"}) {
    INFO(set);
    const auto r = run_aiopt({"bench", "--technique", "knowledge_distillation", "--variant", "distilled", "--quick",
                              "--device", "cpu", "--set", set, "--format", "json"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(set.substr(0, set.find('='))) != std::string::npos);
    CHECK(r.out.find("\"results\"") == std::string::npos);
  }
}

TEST_CASE("the unigram loss and the quality retained follow their definitions", "[knowledge_distillation]") {
  // Train: 0 three times, 1 once; vocab 4 → p = (4, 2, 1, 1) / 8 with add-one smoothing.
  const std::vector<std::int32_t> train = {0, 0, 0, 1};
  Batch b;
  b.batch = 1;
  b.seq_len = 3;
  b.inputs = {0, 0, 0};
  b.targets = {0, 1, 3};
  const std::vector<Batch> windows = {b};
  CHECK(kd::unigram_loss(train, 4, windows) == Approx(-(std::log(0.5) + std::log(0.25) + std::log(0.125)) / 3.0));
  CHECK(kd::quality_retained(5.0, 3.0, 1.0) == Approx(0.5));
  CHECK(kd::quality_retained(5.0, 1.0, 1.0) == Approx(1.0));
  CHECK(kd::quality_retained(5.0, 5.0, 1.0) == Approx(0.0));
  CHECK(std::isnan(kd::quality_retained(1.0, 2.0, 3.0)));
}

TEST_CASE("top-1 agreement and KL of a model with itself are 1 and 0", "[knowledge_distillation]") {
  Gpt a(GptWeights::initialize(teacher_model(), 4, Device::cpu()));
  Gpt other(GptWeights::initialize(teacher_model(), 5, Device::cpu()));
  const std::vector<Batch> windows = {corpus_batch(2, 16, 1), corpus_batch(1, 16, 2)};
  const kd::Agreement self = kd::agreement(a, a, windows);
  CHECK(self.top1 == 1.0);
  CHECK(self.kl == 0.0);
  const kd::Agreement apart = kd::agreement(a, other, windows);
  CHECK(apart.top1 < 1.0);
  CHECK(apart.kl > 1e-3);
}

TEST_CASE("both variants' quick runs pass their checks and report the trade-off", "[knowledge_distillation]") {
  test::TestModelCache cache;
  for (const char* variant : {"hard_labels", "distilled"}) {
    INFO(variant);
    std::vector<Series> series;
    const auto m = aiopt::test::run_case(*technique, make_case(variant, {{"seeds", std::int64_t{2}}}), Device::cpu(), 1,
                                         &series);
    CHECK(metric(m, "parameter_ratio").value > 0.0);
    CHECK(metric(m, "parameter_ratio").value < 1.0);
    CHECK(metric(m, "teacher_agreement").value > 0.0);
    CHECK(metric(m, "teacher_agreement").value <= 1.0);
    CHECK(metric(m, "kl_teacher_student").value > 0.0);
    CHECK(metric(m, "student_val_loss").value > metric(m, "teacher_val_loss").value);
    CHECK(metric(m, "unigram_val_loss").value > metric(m, "teacher_val_loss").value);
    CHECK(std::isfinite(metric(m, "quality_retained").value));
    CHECK(metric(m, "decode_speedup").value > 0.0);
    CHECK(metric(m, "student_val_loss_std").value >= 0.0);
    CHECK(std::isfinite(metric(m, "student_val_loss_within_noise").value));
    aiopt::test::find_series(series, "train_loss");
    aiopt::test::find_series(series, "val_loss");
    aiopt::test::find_series(series, "student_val_loss_by_seed");
    if (std::string(variant) == "distilled") CHECK(metric(m, "self_distillation_kl").value < kd::self_kl_tolerance);
  }
}

TEST_CASE("a distilled loss at alpha 0 that is not the cross-entropy fails the case", "[knowledge_distillation]") {
  test::TestModelCache cache;
  const Result r = aiopt::test::broken_run(*technique, make_case("distilled"), "knowledge_distillation.alpha_swapped");
  CHECK_THAT(r.message, Catch::Contains("T = 1, alpha = 0"));
}

TEST_CASE("a teacher fed the wrong positions fails the case", "[knowledge_distillation]") {
  test::TestModelCache cache;
  const Result r =
      aiopt::test::broken_run(*technique, make_case("distilled"), "knowledge_distillation.teacher_fed_targets");
  CHECK_THAT(r.message, Catch::Contains("distilled into itself"));
}

#if AIOPT_HAVE_CUDA
TEST_CASE("a CUDA distillation step gives the CPU's loss and gradients", "[knowledge_distillation][gpu]") {
  const GptWeights w = GptWeights::initialize(student_config(), 21, Device::cpu());
  const GptWeights wc = w.to(Device::cuda());
  const GptWeights tw = GptWeights::initialize(teacher_model(), 22, Device::cpu());
  const Batch b = corpus_batch(2, 24, 6);
  for (const float alpha : {0.0f, 0.5f, 1.0f}) {
    INFO("alpha " << alpha);
    TrainingOptions o, oc;
    o.distill = {std::make_shared<Gpt>(tw.to(Device::cpu())), {2.0f, alpha}};
    oc.distill = {std::make_shared<Gpt>(tw.to(Device::cuda())), {2.0f, alpha}};
    double loss = 0.0, loss_cuda = 0.0;
    const GptWeights g = gradient(w, b, o, &loss);
    const GptWeights gc = gradient(wc, b, oc, &loss_cuda);
    CHECK(std::abs(loss - loss_cuda) < 1e-5 * loss);
    CHECK(max_relative_difference(gc.to(Device::cpu()), g) < 1e-4);
  }
}
#endif
