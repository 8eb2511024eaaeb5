#include "techniques/speculative_decoding/speculative_decoding.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <sstream>

#include "core/error.hpp"
#include "core/memory.hpp"
#include "core/rng.hpp"
#include "harness/statistics.hpp"
#include "nn/checkpoint.hpp"
#include "nn/model_cache.hpp"
#include "nn/pretrained.hpp"
#include "techniques/technique_parts.hpp"

namespace aiopt {

namespace sd = speculative_decoding;

// ---- parameters and variants

static std::string summary() {
  return "a trained target generating alone vs verifying a draft model's or the context's guesses, "
         "γ tokens per pass";
}

static std::vector<ParamSpec> params() {
  return {
      choice_param("target", "small", "tiny", {"tiny", "small", "medium"}, "",
                   "the target model's preset, trained by nn::standard_training and kept in the model cache"),
      choice_param("draft", "tiny", std::nullopt, {"tiny", "small", "medium", "distilled"}, "",
                   "the draft model: a preset (with the draft_ overrides) trained by the target's recipe, or "
                   "distilled: tiny distilled from the target (T = 1, alpha = 0.5) by the same recipe; speculative and "
                   "speculative_greedy only"),
      string_param("draft_checkpoint", "",
                   "a draft model's weights in place of the draft preset: aiopt's safetensors file or a Hugging "
                   "Face GPT-2 folder, with the target's vocabulary and at most its size"),
      integer_param("draft_layers", 0, std::nullopt, 0, unbounded, "",
                    "the draft's transformer blocks; 0: its preset's"),
      integer_param("draft_channels", 0, std::nullopt, 0, unbounded, "",
                    "the draft's width d_model, a multiple of its heads; 0: its preset's"),
      integer_param("draft_heads", 0, std::nullopt, 0, unbounded, "", "the draft's attention heads; 0: its preset's"),
      integer_param("draft_steps", 0, 60, 0, unbounded, "steps",
                    "the draft's training steps; 0: its recipe's (a weaker draft shows a lower acceptance)"),
      integer_param("gamma", 4, 3, 1, 16, "tokens", "γ: tokens drafted per target pass"),
      real_param("temperature", 1.0, std::nullopt, 0.0, unbounded, "",
                 "both models' sampling temperature; 0: greedy (speculative_greedy always decodes at 0)"),
      integer_param("top_k", 0, std::nullopt, 0, unbounded, "tokens",
                    "both models' distributions cut to their k most likely tokens; 0: all"),
      integer_param("gen_tokens", 64, 24, 1, unbounded, "tokens", "tokens generated after each prompt"),
      integer_param("prompt_len", 32, 16, 1, unbounded, "tokens",
                    "prompt length; prompt_len + gen_tokens fit the windows the models were trained on"),
      integer_param("prompts", 4, 2, 1, unbounded, "prompts", "prompts generated from, one after another, per step"),
      integer_param("ngram", 3, std::nullopt, 1, 16, "tokens",
                    "prompt_lookup: the longest suffix of the context looked up (shorter ones after it)"),
      string_param("data", "",
                   "a text file whose last tenth (as bytes) gives the prompts; empty: the target's corpus"),
  };
}

const VariantTable<sd::Method>& sd::methods() {
  static const VariantTable<Method> table(
      "speculative_decoding",
      {
          {Method::autoregressive, "autoregressive", "the target alone with its KV cache, one token per step", true},
          {Method::speculative, "speculative",
           "the draft samples γ tokens; one target pass verifies them by the rejection-sampling rule"},
          {Method::speculative_greedy, "speculative_greedy",
           "temperature 0: drafts kept while they are the target's argmax"},
          {Method::prompt_lookup, "prompt_lookup",
           "no draft model: the tokens after the latest earlier match of the context's last n-gram"},
      });
  return table;
}

static std::vector<Variant> variants() { return sd::methods().variants(); }

// ---- the case

nn::TrainConfig sd::target_config(const Case& c) { return nn::standard_training(c.params.string("target")); }

nn::TrainConfig sd::draft_config(const Case& c) {
  const std::string name = c.params.string("draft");
  const bool distilled = name == "distilled";
  const nn::TrainConfig target = target_config(c);
  // The target's recipe (corpus, batch, windows, budget, schedule) on the draft's model.
  nn::TrainConfig t = target;
  t.model = nn::preset(distilled ? "tiny" : name);
  std::string changed;
  for (const auto& [param, field] : {std::pair{"draft_layers", &nn::GptConfig::layers},
                                     std::pair{"draft_channels", &nn::GptConfig::channels},
                                     std::pair{"draft_heads", &nn::GptConfig::heads}}) {
    const std::int64_t v = c.params.integer(param);
    if (v == 0) continue;
    t.model.*field = static_cast<std::size_t>(v);
    changed += std::string(", ") + param + "=" + std::to_string(v);
  }
  try {
    t.model.validate();
  } catch (const InputError& e) {
    throw InputError("speculative_decoding: the draft (draft=" + name + changed + ", giving " + t.model.describe() +
                     "): " + e.what());
  }
  t.seq_len = std::min(t.model.context, target.seq_len);
  if (const auto steps = static_cast<std::size_t>(c.params.integer("draft_steps")); steps > 0) {
    t.steps = steps;
    t.schedule.total_steps = steps;
    t.schedule.warmup_steps = steps / 10;
    t.eval_every = 0;
  }
  if (distilled)
    t.distillation = nn::TrainConfig::Distillation{std::make_shared<const nn::TrainConfig>(target),
                                                   {distillation_temperature, distillation_alpha}};
  t.validate();
  return t;
}

void sd::check_pair(const nn::GptConfig& target, const nn::GptConfig& draft, const std::string& draft_name) {
  if (draft.vocab != target.vocab)
    throw InputError("speculative_decoding: the draft '" + draft_name + "' has a vocabulary of " +
                     std::to_string(draft.vocab) + " tokens and the target " + std::to_string(target.vocab) +
                     "; a draft proposes the target's tokens, so they must share one vocabulary");
  if (draft.parameter_count() > target.parameter_count())
    throw InputError("speculative_decoding: the draft '" + draft_name + "' (" + std::to_string(draft.parameter_count()) +
                     " parameters) is larger than the target (" + std::to_string(target.parameter_count()) +
                     "); allowed: a draft at most the target's size");
}

nn::GptConfig sd::draft_model(const Case& c) {
  const std::string& path = c.params.string("draft_checkpoint");
  if (path.empty()) return draft_config(c).model;
  const nn::CheckpointSource source = nn::open_checkpoint(path);
  return nn::checkpoint_config(source.files, source.hints);
}

// The positions every model of the case was trained on (a draft checkpoint's: its context).
static std::size_t trained_window(const Case& c, sd::Method method) {
  std::size_t window = sd::target_config(c).seq_len;
  if (!sd::uses_draft_model(method)) return window;
  const bool file = !c.params.string("draft_checkpoint").empty();
  return std::min(window, file ? sd::draft_model(c).context : sd::draft_config(c).seq_len);
}

std::vector<std::vector<std::int32_t>> sd::make_prompts(const Case& c) {
  const auto P = static_cast<std::size_t>(c.params.integer("prompt_len"));
  nn::DataSource source = target_config(c).data;
  if (const std::string& file = c.params.string("data"); !file.empty()) source = nn::DataSource{.file = file};
  const std::vector<std::int32_t> text = nn::load_tokens(source, P + 1).validation;
  if (text.size() < P + 1)
    throw InputError("speculative_decoding: the validation text of " + source.describe() + " has " +
                     std::to_string(text.size()) + " tokens, fewer than a prompt of " + std::to_string(P) + " and one more");
  const auto count = static_cast<std::size_t>(c.params.integer("prompts"));
  const std::uint64_t seed = rng::bits(c.seed, 7);
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t offset = rng::bits(seed, i) % (text.size() - P);
    prompts.emplace_back(text.begin() + static_cast<std::ptrdiff_t>(offset),
                         text.begin() + static_cast<std::ptrdiff_t>(offset + P));
  }
  return prompts;
}

double sd::expected_tokens_per_pass(double alpha, double gamma) {
  if (alpha >= 1.0) return gamma + 1.0;
  return (1.0 - std::pow(alpha, gamma + 1.0)) / (1.0 - alpha);
}

double sd::predicted_speedup(double alpha, double gamma, double c, double verify) {
  return expected_tokens_per_pass(alpha, gamma) / (gamma * c + verify);
}

// ---- the run

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  return quantile_sorted(v, 0.5);
}

// What the generations of one step (every prompt once) did together.
struct Tally {
  double total_ms = 0.0;
  std::size_t tokens = 0, passes = 0, draft_calls = 0, proposed = 0, tested = 0, accepted = 0;
  double max_rule_error = 0.0;
  void add(const sd::Generation& g) {
    const sd::Stats& s = g.stats;
    total_ms += s.total_ms;
    tokens += g.tokens.size();
    passes += s.target_passes;
    draft_calls += s.draft_calls;
    proposed += s.proposed;
    tested += s.tested;
    accepted += s.accepted;
    max_rule_error = std::max(max_rule_error, s.max_rule_error);
  }
};

class SpeculativeRun : public Run {
 public:
  SpeculativeRun(sd::Method method, sd::Settings settings, std::size_t gen_tokens,
                 std::vector<std::vector<std::int32_t>> prompts, std::unique_ptr<nn::Gpt> target,
                 std::unique_ptr<nn::Gpt> draft, std::size_t draft_weight_bytes, std::uint64_t seed)
      : method_(method), settings_(settings), gen_tokens_(gen_tokens), prompts_(std::move(prompts)),
        target_(std::move(target)), draft_(std::move(draft)), draft_weight_bytes_(draft_weight_bytes), seed_(seed),
        decoder_(make_decoder()) {
    // The greedy variant, and the target alone it is checked against, decode at temperature 0.
    if (method_ == sd::Method::speculative_greedy) settings_.sampling.temperature = 0.0f;
  }

  // Every prompt's generation, one after another.
  void step() override {
    Tally tally;
    last_tokens_.clear();
    for (std::size_t i = 0; i < prompts_.size(); ++i) {
      const sd::Generation g = generate(method_, i, false);
      tally.add(g);
      record_times(g.stats, draft_call_ms_, full_pass_ms_);
      last_tokens_.push_back(g.tokens);
    }
    steps_.push_back(tally);
  }

  std::vector<Metric> finish() override {
    if (steps_.empty()) throw std::logic_error("speculative_decoding: finish() before any step");
    const bool greedy = settings_.sampling.temperature == 0.0f;
    // One more generation of each prompt, untimed, with the rule compared at every tested
    // position, both caches against a fresh prefill of what was accepted after the first pass
    // that rejected a draft, and again at the end.
    Tally checked;
    double cache_error = 0.0;
    std::vector<std::vector<std::int32_t>> tokens;
    for (std::size_t i = 0; i < prompts_.size(); ++i) {
      bool seen = false;
      const auto after_rejection = [&](std::span<const std::int32_t> sequence, bool rejected) {
        if (!rejected || seen) return;
        seen = true;
        cache_error = std::max(cache_error, decoder_.check_caches(sequence));
      };
      const sd::Generation g = generate(method_, i, true, after_rejection);
      checked.add(g);
      std::vector<std::int32_t> sequence = prompts_[i];
      sequence.insert(sequence.end(), g.tokens.begin(), g.tokens.end());
      cache_error = std::max(cache_error, decoder_.check_caches(sequence));
      tokens.push_back(g.tokens);
    }
    if (tokens != last_tokens_)
      throw CheckFailed("speculative_decoding: variant " + sd::methods().name(method_) +
                        ": two generations of the same prompts and seeds gave different tokens (nondeterministic)");

    const double spec_ms = median_of_steps([](const Tally& t) { return t.total_ms; });
    const std::size_t tokens_per_step = steps_.back().tokens;
    std::vector<Metric> out = {
        time_metric("ms_per_token", spec_ms / static_cast<double>(tokens_per_step), "ms", Better::lower),
        time_metric("tokens_per_s", static_cast<double>(tokens_per_step) / (spec_ms * 1e-3), "tok/s", Better::higher),
        {"target_passes", static_cast<double>(steps_.back().passes), "", Better::lower},
        {"tokens_per_pass", static_cast<double>(tokens_per_step) / static_cast<double>(steps_.back().passes), "",
         Better::higher},
        {"target_cache_bytes", static_cast<double>(target_cache_bytes_), "B", Better::lower},
        // The checks' own figures: bounded by their tolerances, not compared with the baseline's.
        {"cache_rel_error", cache_error, "", Better::lower, false},
    };
    if (method_ == sd::Method::autoregressive) return out;

    // The target alone on the same prompts and seeds, timed here too, so that the speedup is a
    // ratio of two measurements of one run; its tokens are the greedy reference.
    constexpr int reference_repeats = 3;
    std::vector<double> reference_ms, target_step_ms;
    std::vector<std::vector<std::int32_t>> reference_tokens;
    for (int r = 0; r < reference_repeats; ++r) {
      double total = 0.0;
      reference_tokens.clear();
      for (std::size_t i = 0; i < prompts_.size(); ++i) {
        const sd::Generation g = generate(sd::Method::autoregressive, i, false);
        total += g.stats.total_ms;
        target_step_ms.insert(target_step_ms.end(), g.stats.target_step_ms.begin(), g.stats.target_step_ms.end());
        reference_tokens.push_back(g.tokens);
      }
      reference_ms.push_back(total);
    }
    if (greedy) {
      std::size_t same = 0, all = 0;
      for (std::size_t i = 0; i < tokens.size(); ++i)
        for (std::size_t t = 0; t < tokens[i].size(); ++t) same += tokens[i][t] == reference_tokens[i][t], ++all;
      if (same != all) {
        std::ostringstream m;
        m << "speculative_decoding: variant " << sd::methods().name(method_) << " at temperature 0 gives " << same
          << " of " << all << " tokens equal to the target's own greedy tokens; verification must give all of them";
        throw CheckFailed(m.str());
      }
      out.push_back({"greedy_tokens_identical", static_cast<double>(same) / static_cast<double>(all), "", Better::higher});
    }
    // At temperature 0 the tokens above show a wrong rule first; otherwise only this can.
    if (!(checked.max_rule_error <= sd::rule_tolerance)) {
      std::ostringstream m;
      m << "speculative_decoding: variant " << sd::methods().name(method_)
        << ": the acceptance rule emits a distribution " << checked.max_rule_error
        << " (total variation) from the target's at a tested position, beyond " << sd::rule_tolerance
        << "; the output would not be distributed as the target's";
      throw CheckFailed(m.str());
    }

    const Tally& last = steps_.back();
    const double alpha = last.tested > 0 ? static_cast<double>(last.accepted) / static_cast<double>(last.tested)
                                         : std::numeric_limits<double>::quiet_NaN();
    const double gamma = static_cast<double>(settings_.gamma);
    const double step_ms = median(target_step_ms);
    const double draft_ms = median(draft_call_ms_), pass_ms = median(full_pass_ms_);
    // A lookup costs no model call: c = 0.
    const double c = method_ == sd::Method::prompt_lookup ? 0.0 : draft_ms / step_ms;
    const double verify = pass_ms / step_ms;
    out.push_back({"acceptance_rate", alpha, "", Better::higher});
    out.push_back({"tokens_per_pass_predicted", sd::expected_tokens_per_pass(alpha, gamma), "", Better::higher, false});
    out.push_back({"drafts_per_pass", static_cast<double>(last.proposed) / static_cast<double>(last.passes), "",
                   Better::higher, false});
    out.push_back({"draft_calls", static_cast<double>(last.draft_calls), "", Better::lower, false});
    out.push_back(time_metric("speedup", median(reference_ms) / spec_ms, "x", Better::higher));
    out.push_back(time_metric("speedup_predicted", sd::predicted_speedup(alpha, gamma, c), "x", Better::higher));
    out.push_back(
        time_metric("speedup_predicted_measured_verify", sd::predicted_speedup(alpha, gamma, c, verify), "x", Better::higher));
    out.push_back(time_metric("target_step_ms", step_ms, "ms", Better::lower));
    out.push_back(time_metric("verify_pass_ms", pass_ms, "ms", Better::lower));
    out.push_back(time_metric("verify_cost_ratio", verify, "x", Better::lower));
    if (sd::uses_draft_model(method_)) {
      out.push_back(time_metric("draft_step_ms", draft_ms, "ms", Better::lower));
      out.push_back(time_metric("draft_cost_ratio", c, "x", Better::lower));
      out.push_back({"draft_weight_bytes", static_cast<double>(draft_weight_bytes_), "B", Better::lower});
      out.push_back({"draft_cache_bytes", static_cast<double>(draft_cache_bytes_), "B", Better::lower});
    }
    out.push_back({"max_rule_error", checked.max_rule_error, "", Better::lower, false});
    return out;
  }

 private:
  sd::Decoder make_decoder() {
    std::size_t longest = 0;
    for (const auto& p : prompts_) longest = std::max(longest, p.size());
    const std::size_t capacity = longest + gen_tokens_;
    memory::Scope target_scope(target_->device());
    sd::Decoder decoder(*target_, draft_.get(), capacity);
    // Both caches as the tracked allocator counts them; the draft's is its share.
    const std::size_t both = target_scope.peak_bytes();
    draft_cache_bytes_ = decoder.draft_cache() ? decoder.draft_cache()->bytes() : 0;
    target_cache_bytes_ = both - draft_cache_bytes_;
    return decoder;
  }

  sd::Generation generate(sd::Method method, std::size_t prompt, bool check,
                          std::function<void(std::span<const std::int32_t>, bool)> after_pass = {}) {
    sd::Settings s = settings_;
    s.sampling.seed = rng::bits(seed_, 100 + prompt);
    s.check_rule = check;
    s.after_pass = std::move(after_pass);
    return decoder_.generate(method, prompts_[prompt], gen_tokens_, s);
  }

  static void record_times(const sd::Stats& s, std::vector<double>& draft, std::vector<double>& pass) {
    draft.insert(draft.end(), s.draft_call_ms.begin(), s.draft_call_ms.end());
    pass.insert(pass.end(), s.full_pass_ms.begin(), s.full_pass_ms.end());
  }

  template <class F>
  double median_of_steps(F of) const {
    std::vector<double> v;
    for (const Tally& t : steps_) v.push_back(of(t));
    return median(std::move(v));
  }

  sd::Method method_;
  sd::Settings settings_;
  std::size_t gen_tokens_;
  std::vector<std::vector<std::int32_t>> prompts_;
  std::unique_ptr<nn::Gpt> target_, draft_;
  std::size_t draft_weight_bytes_;
  std::uint64_t seed_;
  std::size_t target_cache_bytes_ = 0, draft_cache_bytes_ = 0;
  sd::Decoder decoder_;
  std::vector<Tally> steps_;
  std::vector<double> draft_call_ms_, full_pass_ms_;  // every step's
  std::vector<std::vector<std::int32_t>> last_tokens_;
};

}  // namespace

// ---- prepare

static void check(const Case& c, DeviceKind) {
  const sd::Method method = sd::methods().parse(c.variant);
  const nn::TrainConfig target = sd::target_config(c);
  if (sd::uses_draft_model(method)) {
    std::string name = c.params.string("draft_checkpoint");
    if (name.empty()) {
      name = c.params.string("draft");
      for (const char* p : {"draft_layers", "draft_channels", "draft_heads"})
        if (c.params.integer(p) > 0) name += std::string(", ") + p + "=" + std::to_string(c.params.integer(p));
    }
    sd::check_pair(target.model, sd::draft_model(c), name);
  }
  const auto P = static_cast<std::size_t>(c.params.integer("prompt_len"));
  const auto G = static_cast<std::size_t>(c.params.integer("gen_tokens"));
  const std::size_t window = trained_window(c, method);
  if (P + G > window)
    throw InputError("speculative_decoding: prompt_len (" + std::to_string(P) + ") + gen_tokens (" + std::to_string(G) +
                     ") = " + std::to_string(P + G) + " positions exceed the " + std::to_string(window) +
                     " the models were trained on (windows of their recipes); allowed: prompt_len + gen_tokens <= " +
                     std::to_string(window));
  nn::SamplingParams{static_cast<float>(c.params.real("temperature")), 0, 0}.validate();
  // A prompt file is read now, so that one too short or unreadable is refused before anything runs.
  if (!c.params.string("data").empty()) (void)sd::make_prompts(c);
}

static std::unique_ptr<Run> start(const Case& c, const Device& device) {
  const sd::Method method = sd::methods().parse(c.variant);
  std::vector<std::vector<std::int32_t>> prompts = sd::make_prompts(c);
  auto target = std::make_unique<nn::Gpt>(nn::trained_model(sd::target_config(c), device).weights);
  std::unique_ptr<nn::Gpt> draft;
  std::size_t draft_bytes = 0;
  if (sd::uses_draft_model(method)) {
    const std::string& file = c.params.string("draft_checkpoint");
    nn::GptWeights weights =
        file.empty() ? nn::trained_model(sd::draft_config(c), device).weights : nn::pretrained_weights(file, device);
    // The draft's weights as the tracked allocator counts them on the device.
    const std::size_t before = memory::usage(device).current;
    draft = std::make_unique<nn::Gpt>(weights.to(device));
    draft_bytes = memory::usage(device).current - before;
  }
  sd::Settings settings;
  settings.gamma = static_cast<std::size_t>(c.params.integer("gamma"));
  settings.sampling.temperature = static_cast<float>(c.params.real("temperature"));
  settings.sampling.top_k = static_cast<std::size_t>(c.params.integer("top_k"));
  settings.ngram = static_cast<std::size_t>(c.params.integer("ngram"));
  return std::make_unique<SpeculativeRun>(method, settings, static_cast<std::size_t>(c.params.integer("gen_tokens")),
                                          std::move(prompts), std::move(target), std::move(draft), draft_bytes, c.seed);
}

std::unique_ptr<Technique> make_speculative_decoding() {
  return make_technique({"speculative_decoding", "draft cost vs target passes in decoding", summary, params,
                         variants, check, start});
}

}  // namespace aiopt
