#include "techniques/gradient_accumulation/gradient_accumulation.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "core/error.hpp"
#include "core/fault.hpp"
#include "core/memory.hpp"
#include "core/rng.hpp"
#include "nn/training.hpp"
#include "techniques/model_params.hpp"
#include "techniques/technique_parts.hpp"

namespace aiopt {

namespace ga = gradient_accumulation;

// ---- parameters and variants

static std::string summary() {
  return "one optimizer step's gradient from one pass over b·k sequences vs k accumulated micro-batches of b; "
         "equal gradients and loss trajectories, and the gradient noise scale";
}

static std::vector<ParamSpec> params() {
  std::vector<ParamSpec> out = model_params::specs("small", "tiny");
  out.push_back(integer_param("micro_batch", 4, 2, 1, unbounded, "sequences", "b: sequences per micro-batch"));
  out.push_back(integer_param("k", 4, std::nullopt, 1, unbounded, "micro-batches",
                              "micro-batches per optimizer step; the effective batch is b·k sequences (the noise "
                              "scale needs k >= 2)"));
  out.push_back(integer_param("seq_len", 64, 32, 1, unbounded, "tokens", "tokens per sequence; at most the model's context"));
  out.push_back(integer_param("steps", 20, 10, 1, unbounded, "steps",
                              "optimizer steps of the loss-trajectory comparison, trained from one initialization "
                              "both ways"));
  out.push_back(integer_param("noise_batches", 4, 2, 1, unbounded, "batches",
                              "large batches of b·k fresh windows the gradient noise scale is averaged over"));
  return out;
}

const VariantTable<ga::Method>& ga::methods() {
  static const VariantTable<Method> table(
      "gradient_accumulation",
      {
          {Method::large_batch, "large_batch", "one forward and backward pass over all b·k sequences", true},
          {Method::accumulate, "accumulate", "k passes over micro-batches of b sequences, each gradient added with 1/k"},
      });
  return table;
}

static std::vector<Variant> variants() { return ga::methods().variants(); }

// ---- the case

ga::Shape ga::Shape::from(const Case& c) {
  Shape s;
  s.model = model_params::config(c.params);
  const auto count = [&](const char* name) { return static_cast<std::size_t>(c.params.integer(name)); };
  s.micro_batch = count("micro_batch");
  s.k = count("k");
  s.seq_len = count("seq_len");
  s.steps = count("steps");
  s.noise_batches = count("noise_batches");
  if (s.seq_len > s.model.context)
    throw InputError("gradient_accumulation: parameter 'seq_len' = " + std::to_string(s.seq_len) +
                     "; allowed: 1 to the model's context of " + std::to_string(s.model.context) + " (" +
                     s.model.describe() + ")");
  s.seed = c.seed;
  s.window_seed = rng::bits(c.seed, 2);
  return s;
}

nn::TokenSplit ga::load_tokens(const Shape& s) {
  const std::size_t window = s.effective_batch() * (s.seq_len + 1);
  const std::size_t train = std::max<std::size_t>(std::size_t{1} << 18, 4 * window);
  const std::size_t validation = std::max<std::size_t>(std::size_t{1} << 12, window);
  return nn::synthetic_tokens(nn::SyntheticCorpus{1, 0}, train, validation);
}

nn::TrainConfig ga::train_config(const Shape& s, Method method) {
  nn::TrainConfig c;
  c.model = s.model;
  c.seed = s.seed;
  c.batch = method == Method::large_batch ? s.effective_batch() : s.micro_batch;
  c.accumulate = method == Method::large_batch ? 1 : s.k;
  c.seq_len = s.seq_len;
  c.steps = s.steps;
  // AdamW's first steps from the initialization overshoot without a warmup (the loss jumps from
  // 5.5 to ~8 at step 6 on small); a fifth of the steps ramps the LR up linearly.
  c.schedule.total_steps = s.steps;
  c.schedule.warmup_steps = s.steps / 5;
  c.eval_every = 0;
  c.eval_batches = 1;
  return c;
}

nn::Batch ga::rows_of(const nn::Batch& batch, std::size_t first, std::size_t rows) {
  const auto T = static_cast<std::ptrdiff_t>(batch.seq_len);
  const auto begin = static_cast<std::ptrdiff_t>(first) * T, end = static_cast<std::ptrdiff_t>(first + rows) * T;
  return {rows, batch.seq_len, std::vector<std::int32_t>(batch.inputs.begin() + begin, batch.inputs.begin() + end),
          std::vector<std::int32_t>(batch.targets.begin() + begin, batch.targets.begin() + end)};
}

void ga::step_gradient(Method method, const nn::GptWeights& weights, const nn::Batch& batch, std::size_t k,
                       nn::GptWeights& grads, void* stream) {
  grads.set_zero();
  const nn::TrainingOptions options;
  if (method == Method::large_batch) {
    nn::forward_backward(weights, batch, grads, options, 1.0f, stream);
    return;
  }
  // Each micro-batch's mean-loss gradient enters with 1/k: k of them sum to the mean over all rows
  // (every micro-batch has b·T targets). The fault "gradient_accumulation.no_average" (tests only,
  // core/fault.hpp) sums them without the 1/k.
  const std::size_t b = batch.batch / k;
  const float share = fault::active("gradient_accumulation.no_average") ? 1.0f : 1.0f / static_cast<float>(k);
  for (std::size_t i = 0; i < k; ++i) nn::forward_backward(weights, rows_of(batch, i * b, b), grads, options, share, stream);
}

// ---- the gradient noise scale

ga::NoiseScale ga::noise_scale(double small_norm_sq, double small_batch, double large_norm_sq, double large_batch) {
  NoiseScale n;
  n.small_norm_sq = small_norm_sq;
  n.large_norm_sq = large_norm_sq;
  n.gradient_norm_sq = (large_batch * large_norm_sq - small_batch * small_norm_sq) / (large_batch - small_batch);
  n.trace_sigma = (small_norm_sq - large_norm_sq) / (1.0 / small_batch - 1.0 / large_batch);
  n.simple = n.trace_sigma / n.gradient_norm_sq;
  return n;
}

namespace {

// Every gradient entry on the host, in named() order.
std::vector<float> flatten(const nn::GptWeights& grads) {
  const nn::GptWeights host = grads.to(Device::cpu());
  std::vector<float> out;
  for (const auto& [name, t] : host.named()) out.insert(out.end(), t->data<float>(), t->data<float>() + t->numel());
  return out;
}

}  // namespace

ga::NoiseMeasurement ga::measure_noise(const nn::GptWeights& weights, const nn::TokenSplit& tokens, const Shape& s,
                                       void* stream) {
  if (s.k < 2) throw std::logic_error("gradient_accumulation: the noise scale needs k >= 2 micro-batches");
  // Group sizes s = 1, 2, 4, ... dividing k, and k itself: the batch sizes the series shows.
  std::vector<std::size_t> groups;
  for (std::size_t g = 1; g < s.k && s.k % g == 0; g *= 2) groups.push_back(g);
  groups.push_back(s.k);

  const Device& device = weights.wte.device();
  nn::GptWeights micro = nn::GptWeights::zeros(s.model, device);
  nn::BatchSampler sampler(tokens.train, s.effective_batch(), s.seq_len, rng::bits(s.window_seed, 1));
  std::vector<std::vector<double>> sums(groups.size());  // per group size: the current group's gradient sum
  std::vector<double> norm_sq(groups.size(), 0.0);      // per group size: Σ |group mean|²
  std::vector<double> count(groups.size(), 0.0);
  for (std::size_t j = 0; j < s.noise_batches; ++j) {
    const nn::Batch large = sampler.next();
    for (std::size_t i = 0; i < s.k; ++i) {
      micro.set_zero();
      nn::forward_backward(weights, rows_of(large, i * s.micro_batch, s.micro_batch), micro, nn::TrainingOptions{},
                           1.0f, stream);
      const std::vector<float> g = flatten(micro);
      for (std::size_t l = 0; l < groups.size(); ++l) {
        std::vector<double>& sum = sums[l];
        sum.resize(g.size(), 0.0);
        for (std::size_t e = 0; e < g.size(); ++e) sum[e] += g[e];
        if ((i + 1) % groups[l] != 0) continue;
        // The group's mean gradient, over groups[l]·b sequences.
        double n2 = 0.0;
        const double inv = 1.0 / static_cast<double>(groups[l]);
        for (double& v : sum) {
          n2 += v * inv * v * inv;
          v = 0.0;
        }
        norm_sq[l] += n2;
        count[l] += 1.0;
      }
    }
  }
  NoiseMeasurement m;
  for (std::size_t l = 0; l < groups.size(); ++l) {
    m.batch_sizes.push_back(static_cast<double>(groups[l] * s.micro_batch));
    m.group_norm_sq.push_back(norm_sq[l] / count[l]);
  }
  m.scale = noise_scale(m.group_norm_sq.front(), m.batch_sizes.front(), m.group_norm_sq.back(), m.batch_sizes.back());
  return m;
}

// ---- the run

namespace {

class AccumulationRun : public Run {
 public:
  AccumulationRun(const ga::Shape& shape, ga::Method method, const Device& device)
      : shape_(shape), method_(method), tokens_(ga::load_tokens(shape)),
        weights_(nn::GptWeights::initialize(shape.model, shape.seed, device)),
        grads_(nn::GptWeights::zeros(shape.model, device)),
        batch_(nn::BatchSampler(tokens_.train, shape.effective_batch(), shape.seq_len, shape.window_seed).next()) {}

  // One optimizer step's gradient, without the update: the same work every call.
  void step() override { ga::step_gradient(method_, weights_, batch_, shape_.k, grads_, stream()); }

  std::vector<Metric> finish() override {
    const Device& device = weights_.wte.device();
    std::ostringstream where;
    where << "gradient_accumulation: variant " << ga::to_string(method_) << " (" << shape_.model.describe() << ", "
          << shape_.k << " × " << shape_.micro_batch << " sequences of " << shape_.seq_len << "): ";

    // (c) The activations of one whole step: weights and gradients are allocated outside the scope.
    std::size_t peak = 0;
    {
      memory::Scope scope(device);
      ga::step_gradient(method_, weights_, batch_, shape_.k, grads_, stream());
      peak = scope.peak_bytes();
    }

    // (a) The gradient against the large batch's on the same windows.
    nn::GptWeights reference = nn::GptWeights::zeros(shape_.model, device);
    ga::step_gradient(ga::Method::large_batch, weights_, batch_, shape_.k, reference, stream());
    const double difference = nn::max_relative_difference(grads_, reference);
    if (!(difference <= ga::gradient_tolerance)) {
      std::ostringstream m;
      m << where.str() << "max relative gradient difference " << difference << " vs large_batch exceeds "
        << ga::gradient_tolerance;
      throw CheckFailed(m.str());
    }

    // (b) Training from one initialization over the same windows, this variant's way and (for
    // accumulate) the large batch's.
    nn::Trainer trainer(ga::train_config(shape_, method_), device, tokens_, stream());
    losses_.clear();
    for (std::size_t t = 0; t < shape_.steps; ++t) losses_.push_back(trainer.step().loss);
    double loss_difference = 0.0;
    if (method_ == ga::Method::accumulate) {
      nn::Trainer large(ga::train_config(shape_, ga::Method::large_batch), device, tokens_, stream());
      for (std::size_t t = 0; t < shape_.steps; ++t) {
        const double d = std::fabs(large.step().loss - losses_[t]);
        loss_difference = std::isnan(d) ? std::numeric_limits<double>::infinity() : std::max(loss_difference, d);
      }
    }
    if (!(loss_difference <= ga::loss_tolerance)) {
      std::ostringstream m;
      m << where.str() << "the training loss differs from large_batch's by up to " << loss_difference
        << " nats over " << shape_.steps << " steps; allowed " << ga::loss_tolerance;
      throw CheckFailed(m.str());
    }

    std::vector<Metric> out = {
        {"activation_peak_bytes", static_cast<double>(peak), "B", Better::lower},
        {"max_rel_grad_difference", difference, "", Better::lower},
        {"max_loss_difference", loss_difference, "nats", Better::lower},
        {"final_train_loss", losses_.back(), "nats", Better::lower},
        {"effective_batch", static_cast<double>(shape_.effective_batch()), "sequences", Better::higher, false},
    };

    // (d) The noise scale at the trained weights (the same measurement for both variants).
    noise_ = {};
    if (shape_.k >= 2) {
      noise_ = ga::measure_noise(trainer.weights(), tokens_, shape_, stream());
      const ga::NoiseScale& n = noise_.scale;
      out.push_back({"noise_scale_simple", n.simple, "sequences", Better::higher, false});
      out.push_back({"gradient_norm_sq", n.gradient_norm_sq, "", Better::higher, false});
      out.push_back({"gradient_noise_trace", n.trace_sigma, "", Better::lower, false});
    }
    return out;
  }

  std::vector<Series> series() const override {
    std::vector<Series> out;
    Series loss{"train_loss", "step", "nats", {}, losses_};
    for (std::size_t t = 0; t < losses_.size(); ++t) loss.x.push_back(static_cast<double>(t + 1));
    out.push_back(std::move(loss));
    if (!noise_.batch_sizes.empty())
      out.push_back({"gradient_norm_sq_by_batch", "sequences", "", noise_.batch_sizes, noise_.group_norm_sq});
    return out;
  }

 private:
  ga::Shape shape_;
  ga::Method method_;
  nn::TokenSplit tokens_;
  nn::GptWeights weights_;
  nn::GptWeights grads_;
  nn::Batch batch_;  // (b·k, seq_len) windows, the same every step
  std::vector<double> losses_;  // this variant's training loss per step
  ga::NoiseMeasurement noise_;
};

}  // namespace

// ---- prepare

static void check(const Case& c, DeviceKind) { (void)ga::Shape::from(c); }

static std::unique_ptr<Run> start(const Case& c, const Device& device) {
  const ga::Method method = ga::parse_method(c.variant);
  const ga::Shape shape = ga::Shape::from(c);
  return std::make_unique<AccumulationRun>(shape, method, device);
}

std::unique_ptr<Technique> make_gradient_accumulation() {
  return make_technique(
      {"gradient_accumulation", "memory vs training dynamics", summary, params, variants, check, start});
}

}  // namespace aiopt
