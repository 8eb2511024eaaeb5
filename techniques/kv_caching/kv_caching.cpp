#include "techniques/kv_caching/kv_caching.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <span>
#include <sstream>
#include <stdexcept>

#include "core/error.hpp"
#include "core/fault.hpp"
#include "core/memory.hpp"
#include "core/rng.hpp"
#include "harness/statistics.hpp"
#include "harness/step_timer.hpp"
#include "nn/decode_loop.hpp"
#include "nn/decoding.hpp"
#include "nn/pretrained.hpp"
#include "techniques/kv_caching/int8_attention_check.hpp"
#include "techniques/model_params.hpp"
#include "techniques/technique_parts.hpp"

namespace aiopt {

namespace kc = kv_caching;

// ---- parameters and variants

static std::string summary() {
  return "greedy generation recomputing the whole prefix per token vs one new position per token "
         "with a KV cache (f32 or int8)";
}

static std::vector<ParamSpec> params() {
  std::vector<ParamSpec> out = model_params::specs("small");
  // The small preset's 512 positions cannot hold the default 512-token prompt and 128 new
  // tokens: by default the model learns 1024 positions (the cost per token does not change).
  for (ParamSpec& p : out) {
    if (p.name != "context") continue;
    p.default_value = std::int64_t{1024};
    p.help = "positions the model can attend over; prompt_len + gen_tokens must fit (default 1024, so that the "
             "default 512 + 128 fit the small preset; with a checkpoint, the default is the checkpoint's); 0: the "
             "preset's";
  }
  out.push_back(model_params::checkpoint_spec());

  out.push_back(integer_param("prompt_len", 512, 32, 1, unbounded, "tokens",
                              "prompt length (random tokens from the seed); prompt_len + gen_tokens <= the "
                              "model's context"));
  out.push_back(integer_param("gen_tokens", 128, 16, 5, unbounded, "tokens",
                              "tokens generated greedily after the prompt (at least 5: the decode steps are "
                              "reported in 4 position buckets)"));
  out.push_back(integer_param("batch", 1, std::nullopt, 1, unbounded, "sequences",
                              "sequences generated together, each with its own random prompt"));
  return out;
}

const VariantTable<kc::Method>& kc::methods() {
  static const VariantTable<Method> table(
      "kv_caching",
      {
          {Method::recompute, "recompute", "every new token runs the model over the whole prefix again", true},
          {Method::kv_cache, "kv_cache", "past keys and values kept in a preallocated f32 cache; one new position per step"},
          {Method::kv_cache_int8, "kv_cache_int8", "the cache stored as int8 with one f32 scale per (head, position) row"},
      });
  return table;
}

static std::vector<Variant> variants() { return kc::methods().variants(); }

// ---- the case

std::optional<DType> kc::cache_dtype(Method method) {
  switch (method) {
    case Method::recompute: return std::nullopt;
    case Method::kv_cache: return DType::f32;
    case Method::kv_cache_int8: return DType::i8;
  }
  return std::nullopt;
}

kc::Shape kc::Shape::from(const Case& c) {
  Shape s;
  s.checkpoint = model_params::checkpoint(c.params);
  if (s.checkpoint.empty()) {
    s.model = model_params::config(c.params);
  } else {
    // The default context (1024) stands for the checkpoint's own; another value must agree with it.
    Params p = c.params;
    if (p.integer("context") == 1024) p.set("context", std::int64_t{0});
    s.model = model_params::config(p);
  }
  const std::int64_t prompt_len = c.params.integer("prompt_len");
  const std::int64_t gen_tokens = c.params.integer("gen_tokens");
  s.prompt_len = static_cast<std::size_t>(prompt_len);
  s.gen_tokens = static_cast<std::size_t>(gen_tokens);
  s.batch = static_cast<std::size_t>(c.params.integer("batch"));
  if (s.capacity() > s.model.context)
    throw InputError("kv_caching: prompt_len (" + std::to_string(prompt_len) + ") + gen_tokens (" +
                     std::to_string(gen_tokens) + ") = " + std::to_string(s.capacity()) +
                     " exceeds the model's context of " + std::to_string(s.model.context) + " (" +
                     s.model.describe() + "); allowed: prompt_len + gen_tokens <= " +
                     std::to_string(s.model.context) + ", or a larger 'context'");
  // Distinct counters of one seed: independent streams for the weights and the prompt.
  s.weight_seed = rng::bits(c.seed, 1);
  s.prompt_seed = rng::bits(c.seed, 2);
  return s;
}

std::vector<std::int32_t> kc::make_prompt(const Shape& shape) {
  std::vector<std::int32_t> prompt(shape.batch * shape.prompt_len);
  for (std::size_t i = 0; i < prompt.size(); ++i)
    prompt[i] = static_cast<std::int32_t>(rng::bits(shape.prompt_seed, i) % shape.model.vocab);
  return prompt;
}

// ---- work

double kc::call_flops(const Shape& s, std::size_t len, std::size_t pos0) {
  const double L = static_cast<double>(s.model.layers), C = static_cast<double>(s.model.channels);
  const double V = static_cast<double>(s.model.vocab), n = static_cast<double>(len), p0 = static_cast<double>(pos0);
  const double matmuls = n * 2.0 * 12.0 * L * C * C;     // c_attn 3C², c_proj C², c_fc 4C², proj 4C²
  const double keys = n * p0 + n * (n + 1.0) / 2.0;      // Σ (p + 1) over p in [pos0, pos0 + len)
  const double attention = L * 4.0 * C * keys;           // q·k and p·v, 2·d per key and head
  const double head = 2.0 * V * C;                       // the last position's logits
  return static_cast<double>(s.batch) * (matmuls + attention + head);
}

double kc::generation_flops(const Shape& s, Method method) {
  double total = call_flops(s, s.prompt_len, 0);
  for (std::size_t t = 1; t < s.gen_tokens; ++t)
    total += method == Method::recompute ? call_flops(s, s.prompt_len + t, 0) : call_flops(s, 1, s.prompt_len + t - 1);
  return total;
}

// ---- generation

kc::Generator::Generator(const Shape& shape, Method method, const Device& device)
    : shape_(shape),
      model_(shape.checkpoint.empty() ? nn::GptWeights::initialize(shape.model, shape.weight_seed, device)
                                      : nn::pretrained_weights(shape.checkpoint, device, shape.model.heads)),
      prompt_(make_prompt(shape)) {
  if (const auto dtype = cache_dtype(method)) {
    // The cache's bytes as the tracked allocator counts them.
    memory::Scope scope(device);
    cache_.emplace(shape.model, shape.batch, shape.capacity(), *dtype, device);
    cache_bytes_ = scope.peak_bytes();
  }
}

kc::Trace kc::Generator::generate(Method method, bool record, StepTimer* timer,
                                  const std::vector<std::int32_t>* forced) {
  const auto dtype = cache_dtype(method);
  if (dtype && !(cache_ && cache_->dtype() == *dtype))
    throw std::logic_error("kv_caching: a " + to_string(method) + " generation needs this generator's " +
                           aiopt::to_string(*dtype) + " cache");
  const std::size_t B = shape_.batch, P = shape_.prompt_len, G = shape_.gen_tokens, V = shape_.model.vocab;
  if (forced && forced->size() != G * B) throw std::logic_error("kv_caching: forced tokens must be (gen_tokens, batch)");

  Trace trace;
  if (record) trace.logits.resize(G * B * V);

  nn::DecodeHooks hooks;
  hooks.choose = [&](std::size_t t, std::span<const float> logits, std::span<std::int32_t> tokens) {
    for (std::size_t b = 0; b < B; ++b) {
      const auto row = logits.subspan(b * V, V);
      tokens[b] = nn::argmax(row);
      if (record) std::copy(row.begin(), row.end(), trace.logits.begin() + static_cast<std::ptrdiff_t>((t * B + b) * V));
    }
  };
  if (timer) {
    PhaseTimes& times = trace.times.emplace();
    hooks.run = [&](std::size_t t, const std::function<void()>& step) {
      const double ms = timer->time(step) * 1e3;
      if (t == 0) {
        times.prefill_ms = ms;
      } else {
        times.decode_ms += ms;
        times.quarter_ms[decode_quarter(t - 1, G - 1)] += ms;
      }
    };
  }
  // Broken caches, for the tests (host caches only). stale_entry: position P's keys and values
  // (written by the first decode step) left holding position P − 1's in every layer, as a write
  // one position behind would. wrong_scale (int8): the last layer's prompt rows stored with
  // scales 1/16 above the step they were rounded with, past the reach of the first layer's check.
  const bool stale_entry = method != Method::recompute && fault::active("kv_caching.stale_entry");
  const bool wrong_scale = method == Method::kv_cache_int8 && fault::active("kv_caching.wrong_scale");
  if (stale_entry || wrong_scale)
    hooks.after = [&](std::size_t t) {
      if (!cache_->layer(0).k.device().is_cpu())
        throw std::logic_error("kv_caching: cache faults are injected into host caches only");
      if (wrong_scale && t == 0) {
        nn::KvCache::Layer& last = cache_->layer(shape_.model.layers - 1);
        for (Tensor* scale : {&last.k_scale, &last.v_scale})
          for (float& s : std::span(scale->data<float>(), static_cast<std::size_t>(scale->numel()))) s *= 17.0f / 16.0f;
      }
      if (!stale_entry || t != 1) return;
      const std::size_t H = shape_.model.heads, d = shape_.model.channels / H, cap = shape_.capacity();
      for (std::size_t l = 0; l < shape_.model.layers; ++l) {
        nn::KvCache::Layer& layer = cache_->layer(l);
        for (std::size_t row = 0; row < B * H; ++row) {
          const std::size_t to = row * cap + P, from = to - 1;
          if (layer.k.dtype() == DType::f32) {
            for (Tensor* kv : {&layer.k, &layer.v})
              std::copy_n(kv->data<float>() + from * d, d, kv->data<float>() + to * d);
          } else {
            for (Tensor* kv : {&layer.k, &layer.v})
              std::copy_n(kv->data<std::int8_t>() + from * d, d, kv->data<std::int8_t>() + to * d);
            for (Tensor* scale : {&layer.k_scale, &layer.v_scale}) scale->data<float>()[to] = scale->data<float>()[from];
          }
        }
      }
    };
  if (forced) hooks.feed = [&](std::size_t t, std::size_t b) { return (*forced)[t * B + b]; };
  trace.tokens = nn::decode(model_, prompt_, B, G, dtype ? &*cache_ : nullptr, hooks);
  return trace;
}

double kc::Generator::check_first_layer_cache(const Trace& trace) {
  if (!cache_) throw std::logic_error("kv_caching: recompute keeps no cache to check");
  const std::size_t B = shape_.batch, P = shape_.prompt_len, G = shape_.gen_tokens;
  const std::size_t filled = P + G - 1;  // the last token chosen is never fed
  const std::size_t H = shape_.model.heads, d = shape_.model.channels / H, cap = shape_.capacity();
  std::vector<std::int32_t> sequence(B * filled);
  for (std::size_t b = 0; b < B; ++b) {
    std::copy_n(prompt_.begin() + static_cast<std::ptrdiff_t>(b * P), P,
                sequence.begin() + static_cast<std::ptrdiff_t>(b * filled));
    for (std::size_t t = 0; t + 1 < G; ++t) sequence[b * filled + P + t] = trace.tokens[t * B + b];
  }
  nn::KvCache fresh(shape_.model, B, cap, DType::f32, model_.device());
  model_.step(sequence, B, filled, fresh, nn::Logits::last);
  const nn::KvCache::Layer& got = cache_->layer(0);
  const bool int8 = cache_->dtype() == DType::i8;
  std::vector<Tensor> copies;  // host copies of device tensors
  copies.reserve(6);
  const auto host = [&copies](const Tensor& t) -> const Tensor& {
    if (t.device().is_cpu()) return t;
    return copies.emplace_back(t.to(Device::cpu()));
  };
  const Tensor& want_k = host(fresh.layer(0).k);
  const Tensor& want_v = host(fresh.layer(0).v);
  const Tensor& got_k = host(got.k);
  const Tensor& got_v = host(got.v);
  const Tensor& k_scale = int8 ? host(got.k_scale) : got.k_scale;
  const Tensor& v_scale = int8 ? host(got.v_scale) : got.v_scale;
  double worst = 0.0;
  for (int which = 0; which < 2; ++which) {
    const float* want = (which == 0 ? want_k : want_v).data<float>();
    const Tensor& stored = which == 0 ? got_k : got_v;
    for (std::size_t row = 0; row < B * H; ++row) {
      for (std::size_t pos = 0; pos < filled; ++pos) {
        const std::size_t r = row * cap + pos;
        double largest = 0.0;
        for (std::size_t i = 0; i < d; ++i) largest = std::max(largest, std::fabs(static_cast<double>(want[r * d + i])));
        // The row's int8 step s = max|row| / 127 rounds each value by at most s/2 (kv_int8.hpp);
        // the f32 rows differ from the fresh prefill's by the order of fp32 sums alone.
        const double bound = (f32_rel_tolerance + (int8 ? 0.5 / 127.0 : 0.0)) * largest;
        double error = 0.0;
        for (std::size_t i = 0; i < d; ++i) {
          const double value = int8 ? static_cast<double>((which == 0 ? k_scale : v_scale).data<float>()[r]) *
                                          stored.data<std::int8_t>()[r * d + i]
                                    : static_cast<double>(stored.data<float>()[r * d + i]);
          const double e = std::fabs(value - want[r * d + i]);
          error = std::isnan(e) ? std::numeric_limits<double>::infinity() : std::max(error, e);
        }
        if (!(error <= bound)) {
          std::ostringstream m;
          m << "kv_caching: the " << (int8 ? "int8" : "f32") << " cache's first-layer " << (which == 0 ? "key" : "value")
            << " row of position " << pos << " (sequence " << row / H << ", head " << row % H << ") is off by "
            << error << " from a fresh prefill of the same tokens, beyond " << bound
            << "; the cache holds a stale or misplaced entry";
          throw CheckFailed(m.str());
        }
        if (largest > 0) worst = std::max(worst, error / largest);
      }
    }
  }
  return worst;
}

// ---- checks

kc::Agreement kc::compare(const std::vector<float>& got, const std::vector<float>& want, std::size_t vocab,
                          const std::vector<std::int32_t>& tokens, const std::vector<std::int32_t>& reference_tokens) {
  if (got.size() != want.size() || tokens.size() != reference_tokens.size() || got.size() != tokens.size() * vocab)
    throw std::logic_error("kv_caching: compared generations differ in size");
  constexpr double inf = std::numeric_limits<double>::infinity();
  Agreement a;
  for (std::size_t row = 0; row < tokens.size(); ++row) {
    double abs = 0.0, scale = 0.0;
    for (std::size_t v = 0; v < vocab; ++v) {
      const double g = got[row * vocab + v], w = want[row * vocab + v];
      const double e = std::fabs(g - w);
      if (std::isnan(e) || std::isinf(e)) {
        abs = inf;
        break;
      }
      abs = std::max(abs, e);
      scale = std::max(scale, std::fabs(w));
    }
    a.max_abs_logit_error = std::max(a.max_abs_logit_error, abs);
    a.max_rel_logit_error = std::max(a.max_rel_logit_error, scale > 0 ? abs / scale : abs);
  }
  std::size_t same = 0;
  for (std::size_t i = 0; i < tokens.size(); ++i) same += tokens[i] == reference_tokens[i];
  a.tokens_identical = tokens.empty() ? 1.0 : static_cast<double>(same) / static_cast<double>(tokens.size());
  return a;
}

// The int8 cache's effect on the logits, to first order. A cached row x (head_dim values) is
// stored with s = max|x| / 127, so every key and value is off by at most s/2 = max|x|/254.
//  - Values: a head's output is Σ_j p_j·v_j, a convex combination, so it moves by at most
//    max_j |Δv_j| <= max|v| / 254: 1/254 of the values' magnitude.
//  - Keys: a score q·k_j/√d moves by at most |q|₁·max|k_j|/(254·√d); with GPT attention's
//    scores of order 1 this is again 1/254 of the score scale, and a softmax whose inputs move
//    by ε moves its convex weights by at most 2ε in total (first order), so the output moves by
//    up to about 1/254 of the values' magnitude once more.
// So each layer's attention output is off by up to 2/254 of its magnitude; through the residual
// stream (the blocks add their outputs; LayerNorm and the linear layers rescale all of a block's
// terms alike) the layers' errors add to 2·layers/254 of the logits' scale. It is a worst case
// over the roundings' signs, and independent roundings average out over the keys a query
// attends (about 1/√n of the worst case over n keys), so the measured error sits 20-50× below it
// (README). It stays as the end-to-end check of the logits; the tight one is at each layer's
// attention output, where the averaging can be bounded from the attention weights themselves
// (int8_attention_check.cpp), and the rest of the network need not be modelled.
double kc::int8_rel_bound(const nn::GptConfig& model) { return 2.0 * static_cast<double>(model.layers) / 254.0; }

void kc::check(Method method, const Shape& shape, const Agreement& a) {
  std::ostringstream m;
  m << "kv_caching: variant " << to_string(method) << " (" << shape.model.describe() << ", prompt " << shape.prompt_len
    << " + " << shape.gen_tokens << " generated, batch " << shape.batch << "): ";
  if (!std::isfinite(a.max_rel_logit_error) || !std::isfinite(a.max_abs_logit_error)) {
    m << "the logits hold a NaN or an infinity";
    throw CheckFailed(m.str());
  }
  if (method == Method::kv_cache) {
    if (a.tokens_identical < 1.0) {
      m << "only " << a.tokens_identical * 100 << "% of the greedy tokens equal recompute's; an f32 cache must give "
        << "identical tokens";
      throw CheckFailed(m.str());
    }
    if (!(a.max_rel_logit_error <= f32_rel_tolerance)) {
      m << "max relative logit error " << a.max_rel_logit_error << " vs recompute exceeds " << f32_rel_tolerance;
      throw CheckFailed(m.str());
    }
  }
  if (method == Method::kv_cache_int8) {
    if (!(a.max_rel_logit_error <= int8_rel_bound(shape.model))) {
      m << "max relative logit error " << a.max_rel_logit_error << " vs recompute is beyond the int8 bound "
        << int8_rel_bound(shape.model) << " (2·layers/254)";
      throw CheckFailed(m.str());
    }
  }
}

// ---- the run

namespace {

class KvRun : public Run {
 public:
  KvRun(const kc::Shape& shape, kc::Method method, const Device& device)
      : method_(method), generator_(shape, method, device), timer_(device, generator_.stream()) {}

  // One whole generation, as a user waits for it, with its phases timed per model call: the host
  // reads every call's logits to choose the next token anyway, so the per-call clock adds no
  // synchronization a plain generation lacks. The per-token metrics are medians over these steps.
  void step() override {
    kc::Trace trace = generator_.generate(method_, false, &timer_);
    last_tokens_ = std::move(trace.tokens);
    steps_.push_back(*trace.times);
  }

  void* stream() override { return generator_.stream(); }

  Work work() const override {
    return {.bytes = std::nullopt, .flops = kc::generation_flops(generator_.shape(), method_)};
  }

  std::vector<Metric> finish() override {
    const kc::Shape& s = generator_.shape();
    if (steps_.empty()) throw std::logic_error("kv_caching: finish() before any step");
    // One more generation with its logits kept, for the checks; it is not timed. An int8 cache on
    // the host records every layer's attention as well, to check it where the int8 error enters.
    std::shared_ptr<kc::AttentionRecorder> recorder;
    if (method_ == kc::Method::kv_cache_int8 && generator_.device().is_cpu()) {
      recorder = std::make_shared<kc::AttentionRecorder>(generator_.weights(), s.batch, s.capacity());
      generator_.set_linear_layers(recorder);
    }
    const kc::Trace trace = generator_.generate(method_, true);
    generator_.set_linear_layers(nullptr);
    if (!last_tokens_.empty() && last_tokens_ != trace.tokens)
      throw CheckFailed("kv_caching: variant " + kc::to_string(method_) +
                        ": two generations of the same case gave different tokens (nondeterministic)");

    // Recompute on this generation's own sequence (teacher forcing), so every step's logits are
    // compared on the same prefix; recompute itself is that reference.
    kc::Trace forced;
    if (method_ != kc::Method::recompute) forced = generator_.generate(kc::Method::recompute, true, nullptr, &trace.tokens);
    const kc::Trace& reference = method_ == kc::Method::recompute ? trace : forced;
    // Where recompute would choose this generation's token at every step, its own greedy
    // generation is this sequence; otherwise it is generated freely once more.
    const std::vector<std::int32_t> recompute_tokens =
        reference.tokens == trace.tokens ? trace.tokens : generator_.generate(kc::Method::recompute, false).tokens;
    const kc::Agreement agreement =
        kc::compare(trace.logits, reference.logits, s.model.vocab, trace.tokens, recompute_tokens);
    // The cache's own rows first: a stale entry is named where it is, whatever it does to the logits.
    const double cache_error = method_ == kc::Method::recompute ? 0.0 : generator_.check_first_layer_cache(trace);
    // Every layer's attention of the query positions whose logits chose a token: the prompt's last
    // and each decode step's.
    std::optional<kc::AttentionAgreement> attention;
    if (recorder) attention = kc::check_int8_attention(*recorder, s.model, s.batch, s.prompt_len - 1, s.capacity() - 1);
    kc::check(method_, s, agreement);

    // Every phase is the median over the steps the harness ran (its warmup and the steps that
    // sized a sample included: all are the same generation, and a median moves little for one
    // cold one) of that step's own time for the phase.
    const auto median = [this](const auto& of) {
      std::vector<double> v;
      v.reserve(steps_.size());
      for (const kc::PhaseTimes& p : steps_) v.push_back(of(p));
      std::sort(v.begin(), v.end());
      return quantile_sorted(v, 0.5);
    };
    const std::size_t calls = s.gen_tokens - 1;  // decode calls per generation
    const double total_ms = median([](const kc::PhaseTimes& p) { return p.prefill_ms + p.decode_ms; });
    std::vector<Metric> out = {
        time_metric("ms_per_token", total_ms / static_cast<double>(s.gen_tokens), "ms", Better::lower),
        time_metric("tokens_per_s", static_cast<double>(s.batch * s.gen_tokens) / (total_ms * 1e-3), "tok/s",
                    Better::higher),
        time_metric("prefill_ms", median([](const kc::PhaseTimes& p) { return p.prefill_ms; }), "ms", Better::lower),
        time_metric("decode_ms_per_token",
                    median([calls](const kc::PhaseTimes& p) { return p.decode_ms / static_cast<double>(calls); }),
                    "ms", Better::lower),
    };
    // The decode calls in four quarters of the generated positions: recompute's cost grows with
    // the prefix, a cached step's stays nearly flat.
    const char* quarters[] = {"t0_25pct", "t25_50pct", "t50_75pct", "t75_100pct"};
    std::array<double, 4> counts{};
    for (std::size_t i = 0; i < calls; ++i) counts[kc::decode_quarter(i, calls)] += 1;
    for (std::size_t q = 0; q < 4; ++q)
      out.push_back(time_metric(std::string("decode_ms_per_token_") + quarters[q],
                                median([&](const kc::PhaseTimes& p) { return p.quarter_ms[q] / counts[q]; }), "ms",
                                Better::lower));

    const auto dtype = kc::cache_dtype(method_);
    const double analytic =
        dtype ? static_cast<double>(nn::KvCache::analytic_bytes(s.model, s.batch, s.capacity(), *dtype)) : 0.0;
    out.push_back({"cache_bytes", static_cast<double>(generator_.cache_bytes()), "B", Better::lower});
    out.push_back({"cache_bytes_analytic", analytic, "B", Better::lower, false});
    out.push_back({"max_abs_logit_error", agreement.max_abs_logit_error, "", Better::lower});
    out.push_back({"max_rel_logit_error", agreement.max_rel_logit_error, "", Better::lower});
    out.push_back({"tokens_identical", agreement.tokens_identical, "", Better::higher});
    out.push_back({"first_layer_cache_rel_error", cache_error, "", Better::lower});
    if (attention) {
      out.push_back({"attention_error_of_bound", attention->max_error_of_bound, "", Better::lower});
      out.push_back({"max_rel_attention_error", attention->max_rel_error, "", Better::lower});
    }
    return out;
  }

 private:
  kc::Method method_;
  kc::Generator generator_;
  StepTimer timer_;                        // the phases of every step
  std::vector<std::int32_t> last_tokens_;  // (gen_tokens, batch) of the last timed generation
  std::vector<kc::PhaseTimes> steps_;      // one per step the harness ran
};

}  // namespace

// ---- prepare

static void check(const Case& c, DeviceKind) { (void)kc::Shape::from(c); }

static std::unique_ptr<Run> start(const Case& c, const Device& device) {
  const kc::Method method = kc::parse_method(c.variant);
  const kc::Shape shape = kc::Shape::from(c);
  return std::make_unique<KvRun>(shape, method, device);
}

std::unique_ptr<Technique> make_kv_caching() {
  return make_technique(
      {"kv_caching", "memory vs compute in autoregressive decoding", summary, params, variants, check, start});
}

}  // namespace aiopt
