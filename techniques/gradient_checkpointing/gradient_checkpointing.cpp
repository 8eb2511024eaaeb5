#include "techniques/gradient_checkpointing/gradient_checkpointing.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/error.hpp"
#include "core/memory.hpp"
#include "core/rng.hpp"
#include "nn/corpus.hpp"
#include "techniques/model_params.hpp"
#include "techniques/technique_parts.hpp"

namespace aiopt {

namespace gc = gradient_checkpointing;

// ---- parameters and variants

static std::string summary() {
  return "one training pass keeping every block's activations vs recomputing them from checkpoints every k "
         "blocks, every round(sqrt(L)) blocks, or only the cheap LayerNorm/GELU outputs";
}

namespace {

// The training pass's attention kernels, by the names the `attention` parameter takes.
const Choices<nn::TrainAttention>& attentions() {
  static const Choices<nn::TrainAttention> names{{nn::TrainAttention::flash, "flash"},
                                                 {nn::TrainAttention::naive, "naive"}};
  return names;
}

}  // namespace

static std::vector<ParamSpec> params() {
  std::vector<ParamSpec> out = model_params::specs("small", "tiny");

  out.push_back(integer_param("k", 2, std::nullopt, 1, unbounded, "blocks",
                              "checkpoint_every_k: the residual stream is kept entering every k-th block and each "
                              "segment of k blocks is re-run forward in the backward; 1 <= k <= layers"));
  out.push_back(integer_param("batch", 4, std::nullopt, 1, unbounded, "sequences",
                              "sequences in the fixed training batch"));
  out.push_back(integer_param("seq_len", 128, 64, 1, unbounded, "tokens",
                              "tokens per sequence; at most the model's context"));
  out.push_back(attentions().param("attention", nn::TrainAttention::flash, std::nullopt, "",
                             "flash: tiled, saves the log-sum-exp, the backward recomputes the scores tile by tile; "
                             "naive: the (B, H, T, T) scores materialized in the forward and recomputed in the "
                             "backward"));
  return out;
}

const VariantTable<gc::Policy>& gc::policies() {
  static const VariantTable<Policy> table(
      "gradient_checkpointing",
      {
          {Policy::store_all, "store_all", "every block keeps all its activations for the backward", true},
          {Policy::checkpoint_every_k, "checkpoint_every_k",
           "only the input of every k-th block is kept; segments of k blocks are re-run forward"},
          {Policy::sqrt_n, "sqrt_n", "checkpoint_every_k with k = round(sqrt(layers)) (Chen et al. 2016)"},
          {Policy::selective, "selective",
           "blocks keep their products' outputs; LayerNorm, GELU and merged heads are recomputed"},
      });
  return table;
}

static std::vector<Variant> variants() { return gc::policies().variants(); }

// ---- the case

std::size_t gc::sqrt_n_segment(std::size_t layers) {
  const long k = std::lround(std::sqrt(static_cast<double>(layers)));
  return static_cast<std::size_t>(std::max(1L, k));
}

gc::Shape gc::Shape::from(const Case& c, Policy policy) {
  Shape s;
  s.model = model_params::config(c.params);
  const std::int64_t batch = c.params.integer("batch");
  const std::int64_t seq_len = c.params.integer("seq_len");
  const std::int64_t k = c.params.integer("k");
  if (static_cast<std::size_t>(seq_len) > s.model.context)
    throw InputError("gradient_checkpointing: parameter 'seq_len' = " + std::to_string(seq_len) +
                     "; allowed: 1 to the model's context of " + std::to_string(s.model.context) + " (" +
                     s.model.describe() + ")");
  const auto layers = static_cast<std::int64_t>(s.model.layers);
  if (policy == Policy::checkpoint_every_k && (k < 1 || k > layers))
    throw InputError("gradient_checkpointing: parameter 'k' = " + std::to_string(k) + "; allowed: 1 to the model's " +
                     std::to_string(layers) + " layers (" + s.model.describe() + ")");
  s.batch = static_cast<std::size_t>(batch);
  s.seq_len = static_cast<std::size_t>(seq_len);
  s.k = static_cast<std::size_t>(std::max<std::int64_t>(k, 0));
  s.attention = attentions().of(c.params, "attention");
  // Distinct counters of one seed: independent streams for the weights and the windows.
  s.weight_seed = rng::bits(c.seed, 1);
  s.window_seed = rng::bits(c.seed, 2);
  return s;
}

nn::TrainingOptions gc::options(Policy policy, const Shape& shape) {
  nn::TrainingOptions o;
  o.attention = shape.attention;
  switch (policy) {
    case Policy::store_all: break;
    case Policy::checkpoint_every_k: o.checkpoint_every = shape.k; break;
    case Policy::sqrt_n: o.checkpoint_every = sqrt_n_segment(shape.model.layers); break;
    case Policy::selective: o.selective = true; break;
  }
  return o;
}

std::size_t gc::blocks_recomputed(const nn::TrainingOptions& options, std::size_t layers) {
  return options.checkpoint_every > 0 ? layers : 0;
}

std::size_t gc::checkpoints_kept(const nn::TrainingOptions& options, std::size_t layers) {
  const std::size_t k = options.checkpoint_every;
  return k > 0 ? (layers + k - 1) / k : 0;
}

// ---- work

double gc::block_forward_flops(const Shape& s) {
  const double BT = static_cast<double>(s.batch * s.seq_len), T = static_cast<double>(s.seq_len);
  const double C = static_cast<double>(s.model.channels);
  return 2.0 * BT * 12.0 * C * C + 2.0 * BT * (T + 1.0) * C;
}

double gc::pass_flops(const Shape& s) {
  const double BT = static_cast<double>(s.batch * s.seq_len);
  const double head = 2.0 * BT * static_cast<double>(s.model.vocab) * static_cast<double>(s.model.channels);
  return 3.0 * (static_cast<double>(s.model.layers) * block_forward_flops(s) + head);
}

double gc::recompute_flops(const nn::TrainingOptions& options, const Shape& s) {
  const double C = static_cast<double>(s.model.channels);
  const double last_projection = 2.0 * static_cast<double>(s.batch * s.seq_len) * 4.0 * C * C;
  return static_cast<double>(blocks_recomputed(options, s.model.layers)) * block_forward_flops(s) -
         static_cast<double>(checkpoints_kept(options, s.model.layers)) * last_projection;
}

double gc::recompute_flops_fraction(const nn::TrainingOptions& options, const Shape& s) {
  return recompute_flops(options, s) / pass_flops(s);
}

// ---- inputs and checks

nn::Batch gc::make_batch(const Shape& s) {
  // A corpus a few windows long at least, so the windows are spread over varied text.
  const std::size_t bytes = std::max<std::size_t>(std::size_t{1} << 16, 4 * s.batch * (s.seq_len + 1));
  const nn::TokenSplit tokens = nn::synthetic_tokens(nn::SyntheticCorpus{1, 0}, bytes, 1024);
  nn::BatchSampler sampler(tokens.train, s.batch, s.seq_len, s.window_seed);
  return sampler.next();
}

// ---- the run

namespace {

class CheckpointRun : public Run {
 public:
  CheckpointRun(const gc::Shape& shape, gc::Policy policy, const Device& device)
      : shape_(shape), policy_(policy), options_(gc::options(policy, shape)),
        weights_(nn::GptWeights::initialize(shape.model, shape.weight_seed, device)),
        grads_(nn::GptWeights::zeros(shape.model, device)), batch_(gc::make_batch(shape)) {}

  // One training pass from zeroed gradients.
  void step() override {
    grads_.set_zero();
    nn::forward_backward(weights_, batch_, grads_, options_, 1.0f, stream());
  }

  Work work() const override {
    return {.bytes = std::nullopt, .flops = gc::pass_flops(shape_) + gc::recompute_flops(options_, shape_)};
  }

  std::vector<Metric> finish() override {
    const Device& device = weights_.wte.device();
    // The activations of one pass: weights and gradients are allocated outside the scope.
    grads_.set_zero();
    std::size_t peak = 0;
    {
      memory::Scope scope(device);
      nn::forward_backward(weights_, batch_, grads_, options_, 1.0f, stream());
      peak = scope.peak_bytes();
    }
    nn::GptWeights reference = nn::GptWeights::zeros(shape_.model, device);
    nn::forward_backward(weights_, batch_, reference, gc::options(gc::Policy::store_all, shape_), 1.0f, stream());
    const double difference = nn::max_relative_difference(grads_, reference);
    if (!(difference <= gc::gradient_tolerance)) {
      std::ostringstream m;
      m << "gradient_checkpointing: variant " << gc::to_string(policy_) << " (" << shape_.model.describe() << ", batch "
        << shape_.batch << " × " << shape_.seq_len << "): max relative gradient difference " << difference
        << " vs store_all exceeds " << gc::gradient_tolerance;
      throw CheckFailed(m.str());
    }

    const std::size_t L = shape_.model.layers;
    return {
        {"activation_peak_bytes", static_cast<double>(peak), "B", Better::lower},
        {"max_rel_grad_difference", difference, "", Better::lower},
        {"segment_blocks", static_cast<double>(options_.checkpoint_every), "blocks", Better::lower, false},
        {"checkpoints_kept", static_cast<double>(gc::checkpoints_kept(options_, L)), "blocks", Better::lower, false},
        {"blocks_recomputed", static_cast<double>(gc::blocks_recomputed(options_, L)), "blocks", Better::lower, false},
        {"recompute_flops_analytic", 100.0 * gc::recompute_flops_fraction(options_, shape_), "%", Better::lower, false},
    };
  }

 private:
  gc::Shape shape_;
  gc::Policy policy_;
  nn::TrainingOptions options_;
  nn::GptWeights weights_;
  nn::GptWeights grads_;
  nn::Batch batch_;  // (batch, seq_len) windows, the same every step
};

}  // namespace

// ---- prepare

static void check(const Case& c, DeviceKind) {
  (void)gc::Shape::from(c, gc::parse_policy(c.variant));
}

static std::unique_ptr<Run> start(const Case& c, const Device& device) {
  const gc::Policy policy = gc::parse_policy(c.variant);
  const gc::Shape shape = gc::Shape::from(c, policy);
  return std::make_unique<CheckpointRun>(shape, policy, device);
}

std::unique_ptr<Technique> make_gradient_checkpointing() {
  return make_technique(
      {"gradient_checkpointing", "training time vs activation memory", summary, params, variants, check, start});
}

}  // namespace aiopt
