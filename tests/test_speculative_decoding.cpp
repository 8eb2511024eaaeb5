// speculative_decoding: the acceptance rule (its emitted distribution equals the target's for any
// draft), prompt lookup, the KV cache's truncate, and the engine with trained models: greedy
// speculative decoding and prompt lookup give the target's own tokens, the caches after a
// rejection equal caches built from the accepted prefix alone, and sampled tokens follow the
// target's distribution (a chi-square test that an accept-always rule fails). Then the technique:
// its contract, the quick runs of every variant, the runtime checks failing on broken variants,
// bad parameters refused with exit code 2, and ([gpu]) the engine on CUDA.
//
// Models: the target is the tiny preset's standard training, the draft a tiny trained for 60
// steps (the --quick case's), both from the tests' model cache, trained in seconds on first use.
//
// Tolerances, and why:
//   The rule's emitted distribution: sums of 256 doubles, so 1e-12 (sd::rule_tolerance, the
//   runtime check's, is 1e-9).
//   The caches against a fresh prefill: a verify pass of γ + 1 positions and a prefill of all of
//   them sum in different orders (fp32), so 1e-4 of each row's largest magnitude
//   (sd::cache_rel_tolerance); a rejected token's entry is off by the row's own magnitude.
//   The chi-square tests: 20,000 draws, significance 0.001. The draws are seeded, so the outcome is
//   the same on every run of a machine; an accept-always rule emits the draft's distribution,
//   which the test picks to be far from the target's (total variation above 0.1).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/fault.hpp"
#include "core/rng.hpp"
#include "nn/checkpoint.hpp"
#include "nn/decoding.hpp"
#include "nn/model_cache.hpp"
#include "support/chi_square.hpp"
#include "support/files.hpp"
#include "support/metrics.hpp"
#include "support/model_cache.hpp"
#include "support/process.hpp"
#include "support/technique_run.hpp"
#include "techniques/speculative_decoding/acceptance.hpp"
#include "techniques/speculative_decoding/prompt_lookup.hpp"
#include "techniques/speculative_decoding/speculative_decoding.hpp"

using namespace aiopt;
namespace sd = aiopt::speculative_decoding;
using aiopt::test::metric;
using aiopt::test::run_aiopt;

namespace {

const std::unique_ptr<Technique> technique = make_speculative_decoding();

Case make_case(const std::string& variant, const std::map<std::string, Value>& changes = {}) {
  return test::quick_case(*technique, variant, changes, 1);
}

// A random distribution over n tokens with about a third of them at 0.
std::vector<double> random_distribution(std::size_t n, std::uint64_t seed) {
  rng::Stream s(seed);
  std::vector<double> p(n);
  double sum = 0.0;
  for (double& x : p) {
    x = s.uniform() < 0.33f ? 0.0 : std::pow(static_cast<double>(s.uniform()), 3.0);
    sum += x;
  }
  for (double& x : p) x /= sum;
  return p;
}

struct Models {
  std::unique_ptr<nn::Gpt> target, draft;
};

// The quick case's target and draft on `device`.
Models load_models(const Device& device) {
  test::TestModelCache cache;
  const Case c = make_case("speculative");
  return {std::make_unique<nn::Gpt>(nn::trained_model(sd::target_config(c), device).weights),
          std::make_unique<nn::Gpt>(nn::trained_model(sd::draft_config(c), device).weights)};
}

Models& cpu_models() {
  static Models m = load_models(Device::cpu());
  return m;
}

std::vector<std::vector<std::int32_t>> prompts(std::int64_t count, std::int64_t length = 16) {
  return sd::make_prompts(make_case("speculative", {{"prompts", count}, {"prompt_len", length}}));
}

sd::Settings settings(std::size_t gamma, float temperature, std::uint64_t seed) {
  sd::Settings s;
  s.gamma = gamma;
  s.sampling = {temperature, 0, seed};
  return s;
}

// The target's or draft's sampling distribution of the token after `context`.
std::vector<double> next_distribution(nn::Gpt& model, const std::vector<std::int32_t>& context, float temperature) {
  const Tensor logits = model.forward(context, 1, context.size(), nn::Logits::last).to(Device::cpu());
  return nn::token_distribution({logits.data<float>(), model.config().vocab}, {temperature, 0, 1});
}

}  // namespace

// ---- the rule

TEST_CASE("the acceptance rule emits the target's distribution whatever the draft's", "[speculative_decoding]") {
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    INFO("seed " << seed);
    const std::vector<double> p = random_distribution(256, seed), q = random_distribution(256, 1000 + seed);
    CHECK(sd::total_variation(p, q) > 0.1);
    CHECK(sd::total_variation(sd::emitted_distribution(p, q), p) < 1e-12);
    // A one-hot draft (prompt lookup's) and a one-hot target (temperature 0).
    std::vector<double> one_hot(256, 0.0);
    one_hot[seed] = 1.0;
    CHECK(sd::total_variation(sd::emitted_distribution(p, one_hot), p) < 1e-12);
    CHECK(sd::total_variation(sd::emitted_distribution(one_hot, q), one_hot) < 1e-12);
  }
  // The pieces: p/q where the draft overshoots, 1 where it undershoots; the residual is
  // max(0, p − q) normalized.
  const std::vector<double> p = {0.5, 0.3, 0.2, 0.0}, q = {0.25, 0.6, 0.0, 0.15};
  CHECK(sd::acceptance_probability(p, q, 0) == 1.0);
  CHECK(sd::acceptance_probability(p, q, 1) == Approx(0.5));
  CHECK(sd::acceptance_probability(p, q, 3) == 0.0);
  CHECK(sd::accept(p, q, 1, 0.49));
  CHECK_FALSE(sd::accept(p, q, 1, 0.51));
  const std::vector<double> r = sd::residual(p, q);
  CHECK(r[0] == Approx(0.25 / 0.45));
  CHECK(r[1] == 0.0);
  CHECK(r[2] == Approx(0.2 / 0.45));
  CHECK(r[3] == 0.0);
}

TEST_CASE("an accept-always rule emits the draft's distribution", "[speculative_decoding]") {
  const std::vector<double> p = random_distribution(256, 3), q = random_distribution(256, 4);
  fault::Scope broken("speculative_decoding.accept_always");
  CHECK(sd::total_variation(sd::emitted_distribution(p, q), q) < 1e-12);
  CHECK(sd::total_variation(sd::emitted_distribution(p, q), p) > 0.1);
}

TEST_CASE("the expected tokens per pass and the predicted speedup follow Leviathan's formulas", "[speculative_decoding]") {
  CHECK(sd::expected_tokens_per_pass(0.5, 3) == Approx((1 - 0.0625) / 0.5));
  CHECK(sd::expected_tokens_per_pass(0.0, 4) == 1.0);
  CHECK(sd::expected_tokens_per_pass(1.0, 4) == 5.0);
  CHECK(sd::expected_tokens_per_pass(0.999999, 4) == Approx(5.0).epsilon(1e-4));
  CHECK(sd::predicted_speedup(0.8, 4, 0.05) == Approx((1 - std::pow(0.8, 5)) / 0.2 / 1.2));
  CHECK(sd::predicted_speedup(0.8, 4, 0.05, 2.0) == Approx((1 - std::pow(0.8, 5)) / 0.2 / 2.2));
}

// ---- prompt lookup

TEST_CASE("prompt lookup drafts what followed the latest match of the longest recurring suffix", "[speculative_decoding]") {
  using V = std::vector<std::int32_t>;
  // The suffix 1 2 occurred at 0 and 4; the latest (4) was followed by 9 8.
  CHECK(sd::lookup_draft(V{1, 2, 3, 4, 1, 2, 9, 8, 1, 2}, 3, 4) == V{9, 8, 1, 2});
  CHECK(sd::lookup_draft(V{1, 2, 3, 4, 1, 2, 9, 8, 1, 2}, 3, 1) == V{9});
  // The three-token suffix 7 1 2 recurs (at 2) and wins over the later two-token match at 6.
  CHECK(sd::lookup_draft(V{0, 0, 7, 1, 2, 5, 1, 2, 6, 7, 1, 2}, 3, 2) == V{5, 1});
  // Only a one-token suffix recurs.
  CHECK(sd::lookup_draft(V{5, 6, 7, 5}, 3, 3) == V{6, 7, 5});
  // The draft stops where the context ends; nothing recurs; too short a context.
  CHECK(sd::lookup_draft(V{4, 4}, 2, 5) == V{4});
  CHECK(sd::lookup_draft(V{1, 2, 3}, 3, 4).empty());
  CHECK(sd::lookup_draft(V{1}, 3, 4).empty());
  CHECK(sd::lookup_draft(V{1, 2, 1, 2}, 3, 0).empty());
}

// ---- the cache

TEST_CASE("a KV cache truncated to n positions continues from position n", "[speculative_decoding]") {
  nn::Gpt& model = *cpu_models().target;
  const std::vector<std::int32_t> a = prompts(1, 12)[0];
  std::vector<std::int32_t> b = a;
  b[9] = (b[9] + 1) % 256;  // the tokens differ from position 9 on
  nn::KvCache cache(model.config(), 1, 16, DType::f32, Device::cpu());
  (void)model.step(a, 1, 12, cache, nn::Logits::last);
  cache.truncate(9);
  CHECK(cache.length() == 9);
  const Tensor got = model.step(std::span(b).subspan(9), 1, 3, cache, nn::Logits::all);
  const Tensor want = model.forward(b, 1, 12, nn::Logits::all);
  const float* g = got.data<float>();
  const float* w = want.data<float>() + 9 * 256;
  double worst = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < 3 * 256; ++i) worst = std::max(worst, std::fabs(double(g[i]) - w[i])), scale = std::max(scale, std::fabs(double(w[i])));
  CHECK(worst <= 1e-4 * scale);
  CHECK_THROWS_AS(cache.truncate(13), InputError);
}

// ---- the engine on trained models

TEST_CASE("greedy speculative decoding and prompt lookup give the target's own tokens", "[speculative_decoding]") {
  Models& m = cpu_models();
  sd::Decoder decoder(*m.target, m.draft.get(), 64);
  std::size_t tested = 0, accepted = 0, looked_up = 0;
  for (const auto& prompt : prompts(4)) {
    for (const std::size_t gamma : {1, 2, 4, 7}) {
      INFO("gamma " << gamma);
      const sd::Settings s = settings(gamma, 0.0f, 1);
      const std::vector<std::int32_t> want = decoder.generate(sd::Method::autoregressive, prompt, 40, s).tokens;
      REQUIRE(want.size() == 40);
      for (const sd::Method method : {sd::Method::speculative_greedy, sd::Method::speculative, sd::Method::prompt_lookup}) {
        INFO(sd::methods().name(method));
        const sd::Generation g = decoder.generate(method, prompt, 40, s);
        CHECK(g.tokens == want);
        CHECK(g.stats.target_passes < 40);
        (method == sd::Method::prompt_lookup ? looked_up : tested) += g.stats.tested;
        if (method != sd::Method::prompt_lookup) accepted += g.stats.accepted;
      }
    }
  }
  // Both outcomes of the rule were exercised, and the lookup found drafts to test.
  CHECK(accepted > 0);
  CHECK(accepted < tested);
  CHECK(looked_up > 0);
}

TEST_CASE("after a rejection both caches equal caches built from the accepted prefix alone", "[speculative_decoding]") {
  Models& m = cpu_models();
  sd::Decoder decoder(*m.target, m.draft.get(), 64);
  std::size_t rejections = 0;
  const auto prompt = prompts(1)[0];
  for (std::uint64_t seed = 1; seed <= 4; ++seed) {
    for (const sd::Method method : {sd::Method::speculative, sd::Method::prompt_lookup}) {
      INFO(sd::methods().name(method) << " seed " << seed);
      sd::Settings s = settings(4, 1.0f, seed);
      // Right after each pass that rejected a draft: the caches hold the accepted sequence but
      // its last token, as a prefill of that prefix alone would.
      s.after_pass = [&](std::span<const std::int32_t> sequence, bool rejected) {
        CHECK(decoder.target_cache().length() == sequence.size() - 1);
        if (method == sd::Method::speculative) CHECK(decoder.draft_cache()->length() <= sequence.size() - 1);
        if (!rejected) return;
        ++rejections;
        CHECK(decoder.check_caches(sequence) <= sd::cache_rel_tolerance);
      };
      const sd::Generation g = decoder.generate(method, prompt, 40, s);
      std::vector<std::int32_t> sequence = prompt;
      sequence.insert(sequence.end(), g.tokens.begin(), g.tokens.end());
      CHECK(decoder.check_caches(sequence) <= sd::cache_rel_tolerance);
    }
  }
  CHECK(rejections > 10);
}

TEST_CASE("a decoder that does not roll back its caches fails its length check", "[speculative_decoding]") {
  Models& m = cpu_models();
  sd::Decoder decoder(*m.target, m.draft.get(), 64);
  fault::Scope broken("speculative_decoding.no_rollback");
  CHECK_THROWS_WITH(decoder.generate(sd::Method::speculative, prompts(1)[0], 40, settings(4, 1.0f, 1)),
                    Catch::Contains("rollback"));
}

namespace {

// `draws` speculative generations (γ = 2, temperature 1) of 3 tokens after `prefix`, each with
// its own seed: the first token's counts, and the second token's where the first draft token was
// accepted and is `given`.
struct Draws {
  std::vector<std::size_t> first = std::vector<std::size_t>(256), second = std::vector<std::size_t>(256);
};
Draws draw_tokens(sd::Decoder& decoder, const std::vector<std::int32_t>& prefix, std::int32_t given, std::size_t draws) {
  Draws d;
  for (std::size_t i = 0; i < draws; ++i) {
    const sd::Generation g = decoder.generate(sd::Method::speculative, prefix, 3, settings(2, 1.0f, 5000 + i));
    d.first[static_cast<std::size_t>(g.tokens[0])] += 1;
    if (g.stats.passes[0].accepted >= 1 && g.tokens[0] == given) d.second[static_cast<std::size_t>(g.tokens[1])] += 1;
  }
  return d;
}

}  // namespace

TEST_CASE("sampled speculative tokens follow the target's distribution by a chi-square test", "[speculative_decoding]") {
  Models& m = cpu_models();
  sd::Decoder decoder(*m.target, m.draft.get(), 16);
  // The prefix (of a few validation prompts) where the draft's first distribution is farthest from
  // the target's, so that a rule emitting the draft's would show.
  std::vector<std::int32_t> prefix;
  double apart = 0.0;
  for (const auto& candidate : prompts(8, 8)) {
    const double tv = sd::total_variation(next_distribution(*m.target, candidate, 1.0f),
                                          next_distribution(*m.draft, candidate, 1.0f));
    if (tv > apart) apart = tv, prefix = candidate;
  }
  INFO("total variation of the first distributions " << apart);
  REQUIRE(apart > 0.1);
  const std::vector<double> p1 = next_distribution(*m.target, prefix, 1.0f), q1 = next_distribution(*m.draft, prefix, 1.0f);
  // The first token most likely to be an accepted draft token: the largest min(p, q).
  std::int32_t given = 0;
  for (std::size_t v = 0; v < 256; ++v)
    if (std::min(p1[v], q1[v]) > std::min(p1[given], q1[given])) given = static_cast<std::int32_t>(v);
  std::vector<std::int32_t> after = prefix;
  after.push_back(given);
  const std::vector<double> p2 = next_distribution(*m.target, after, 1.0f);

  constexpr std::size_t draws = 20000;
  constexpr double significance = 1e-3;
  const Draws honest = draw_tokens(decoder, prefix, given, draws);
  const test::ChiSquare first = test::chi_square(honest.first, p1);
  const test::ChiSquare second = test::chi_square(honest.second, p2);
  INFO("first token: chi2 " << first.statistic << " dof " << first.dof << " p " << first.p_value);
  INFO("second token after an accepted draft: chi2 " << second.statistic << " dof " << second.dof << " p "
                                                     << second.p_value);
  std::size_t conditioned = 0;
  for (auto c : honest.second) conditioned += c;
  CHECK(conditioned > 1000);
  CHECK(first.p_value > significance);
  CHECK(second.p_value > significance);

  fault::Scope broken("speculative_decoding.accept_always");
  const Draws wrong = draw_tokens(decoder, prefix, given, draws);
  const test::ChiSquare rejected = test::chi_square(wrong.first, p1);
  INFO("accept always: chi2 " << rejected.statistic << " p " << rejected.p_value);
  CHECK(rejected.p_value < significance);
}

// ---- the technique

TEST_CASE("the speculative decoding technique declares its contract", "[speculative_decoding]") {
  const Technique& t = *technique;
  CHECK(t.name() == "speculative_decoding");
  CHECK(t.baseline() == "autoregressive");
  for (const char* v : {"speculative", "speculative_greedy", "prompt_lookup"}) {
    REQUIRE(t.find_variant(v));
    CHECK(t.find_variant(v)->runs_on(DeviceKind::cpu));
    CHECK(t.find_variant(v)->runs_on(DeviceKind::cuda));
  }
  const Case c = make_case("speculative", {{"target", std::string("small")}, {"draft", std::string("distilled")}});
  const nn::TrainConfig draft = sd::draft_config(c);
  REQUIRE(draft.distillation);
  CHECK(draft.distillation->teacher->identity() == sd::target_config(c).identity());
  CHECK(draft.model.layers == nn::preset("tiny").layers);
  CHECK(draft.seq_len == sd::target_config(c).seq_len);
  CHECK(draft.steps == 60);  // the quick draft_steps
  // The target's recipe on the draft's model, with the draft's overrides.
  CHECK(draft.batch == sd::target_config(c).batch);
  CHECK(draft.schedule.peak_lr == sd::target_config(c).schedule.peak_lr);
  const nn::TrainConfig narrow = sd::draft_config(make_case(
      "speculative", {{"target", std::string("small")}, {"draft", std::string("small")},
                      {"draft_layers", std::int64_t{2}}, {"draft_channels", std::int64_t{128}},
                      {"draft_heads", std::int64_t{4}}, {"draft_steps", std::int64_t{0}}}));
  CHECK(narrow.model.layers == 2);
  CHECK(narrow.model.channels == 128);
  CHECK(narrow.model.heads == 4);
  CHECK(narrow.steps == sd::target_config(c).steps);
}

TEST_CASE("every variant's quick run passes its checks and reports the trade-off", "[speculative_decoding]") {
  test::TestModelCache cache;
  for (const char* variant : {"autoregressive", "speculative", "speculative_greedy", "prompt_lookup"}) {
    INFO(variant);
    const auto m = aiopt::test::run_case(*technique, make_case(variant), Device::cpu(), 2);
    CHECK(metric(m, "tokens_per_s").value > 0.0);
    CHECK(metric(m, "cache_rel_error").value <= sd::cache_rel_tolerance);
    if (std::string(variant) == "autoregressive") {
      CHECK(metric(m, "tokens_per_pass").value == 1.0);
      continue;
    }
    const double alpha = metric(m, "acceptance_rate").value;
    CHECK(alpha > 0.0);
    CHECK(alpha <= 1.0);
    CHECK(metric(m, "tokens_per_pass").value > 1.0);
    CHECK(metric(m, "tokens_per_pass").value <= 4.0);  // γ + 1 at the quick γ of 3
    CHECK(metric(m, "speedup").value > 0.0);
    CHECK(std::isfinite(metric(m, "speedup_predicted").value));
    CHECK(metric(m, "verify_cost_ratio").value > 0.0);
    CHECK(metric(m, "max_rule_error").value <= sd::rule_tolerance);
    if (std::string(variant) != "prompt_lookup") {
      CHECK(metric(m, "draft_cost_ratio").value > 0.0);
      CHECK(metric(m, "draft_weight_bytes").value > 0.0);
      CHECK(metric(m, "draft_cache_bytes").value > 0.0);
    }
    if (std::string(variant) == "speculative_greedy") CHECK(metric(m, "greedy_tokens_identical").value == 1.0);
  }
}

TEST_CASE("an accept-always rule fails the sampling check", "[speculative_decoding]") {
  test::TestModelCache cache;
  const Result r = aiopt::test::broken_run(*technique, make_case("speculative"), "speculative_decoding.accept_always");
  CHECK_THAT(r.message, Catch::Contains("acceptance rule"));
}

TEST_CASE("an accept-always rule fails the greedy token check", "[speculative_decoding]") {
  test::TestModelCache cache;
  const Result r =
      aiopt::test::broken_run(*technique, make_case("speculative_greedy"), "speculative_decoding.accept_always");
  CHECK_THAT(r.message, Catch::Contains("greedy tokens"));
}

TEST_CASE("a missing rollback fails the case", "[speculative_decoding]") {
  test::TestModelCache cache;
  const Result r = aiopt::test::broken_run(*technique, make_case("prompt_lookup"), "speculative_decoding.no_rollback");
  CHECK_THAT(r.message, Catch::Contains("rollback"));
}

TEST_CASE("a draft with another vocabulary or more parameters than the target is refused", "[speculative_decoding]") {
  const nn::GptConfig small = nn::preset("small"), tiny = nn::preset("tiny");
  CHECK_NOTHROW(sd::check_pair(small, tiny, "tiny"));
  CHECK_NOTHROW(sd::check_pair(small, small, "small"));
  nn::GptConfig other = tiny;
  other.vocab = 512;
  CHECK_THROWS_WITH(sd::check_pair(small, other, "other"), Catch::Contains("vocabulary"));
  CHECK_THROWS_WITH(sd::check_pair(tiny, small, "small"), Catch::Contains("larger than the target"));
}

TEST_CASE("bad speculative decoding parameters exit 2 before anything runs", "[speculative_decoding][cli]") {
  for (const std::string set : {"gamma=0", "gamma=17", "draft=small", "prompt_len=60", "temperature=-1", "ngram=0",
                                "draft=large", "draft_heads=3", "draft_channels=512"}) {
    INFO(set);
    const auto r = run_aiopt({"bench", "--technique", "speculative_decoding", "--variant", "speculative", "--quick",
                              "--device", "cpu", "--set", set, "--format", "json"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(set.substr(0, set.find('='))) != std::string::npos);
    CHECK(r.out.find("\"results\"") == std::string::npos);
  }
}

TEST_CASE("a draft checkpoint with another vocabulary or more parameters than the target exits 2", "[speculative_decoding][cli]") {
  test::TempDir dir;
  const std::string other_vocab = dir.file("vocab300.safetensors"), larger = dir.file("larger.safetensors");
  nn::save_checkpoint(nn::GptWeights::initialize({.layers = 1, .channels = 32, .heads = 2, .context = 64, .vocab = 300},
                                                 1, Device::cpu()),
                      other_vocab);
  nn::save_checkpoint(nn::GptWeights::initialize({.layers = 4, .channels = 128, .heads = 4, .context = 128, .vocab = 256},
                                                 1, Device::cpu()),
                      larger);
  for (const auto& [file, words] : {std::pair{other_vocab, "vocabulary"}, std::pair{larger, "larger than the target"},
                                    std::pair{dir.file("missing.safetensors"), "missing.safetensors"}}) {
    INFO(file);
    const auto r = run_aiopt({"bench", "--technique", "speculative_decoding", "--variant", "speculative", "--quick",
                              "--device", "cpu", "--set", "draft_checkpoint=" + file, "--format", "json"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(words) != std::string::npos);
    CHECK(r.out.find("\"results\"") == std::string::npos);
  }
}

TEST_CASE("a draft from a checkpoint file drafts as the same model from the cache", "[speculative_decoding]") {
  test::TestModelCache cache;
  test::TempDir dir;
  const std::string file = dir.file("draft.safetensors");
  nn::save_checkpoint(cpu_models().draft->weights(), file);
  const auto from_cache = aiopt::test::run_case(*technique, make_case("speculative"), Device::cpu(), 1);
  const auto from_file = aiopt::test::run_case(
      *technique, make_case("speculative", {{"draft_checkpoint", file}}), Device::cpu(), 1);
  CHECK(metric(from_file, "acceptance_rate").value == metric(from_cache, "acceptance_rate").value);
  CHECK(metric(from_file, "target_passes").value == metric(from_cache, "target_passes").value);
  CHECK(metric(from_file, "draft_weight_bytes").value == metric(from_cache, "draft_weight_bytes").value);
}

TEST_CASE("a prompt file too short for a prompt exits 2 naming it", "[speculative_decoding][cli]") {
  test::TempDir dir;
  const std::string file = dir.file("short.txt");
  test::write_text(file, "abc");
  const auto r = run_aiopt({"bench", "--technique", "speculative_decoding", "--variant", "autoregressive", "--quick",
                            "--device", "cpu", "--set", "data=" + file, "--format", "json"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("short.txt") != std::string::npos);
}

#if AIOPT_HAVE_CUDA
TEST_CASE("the engine on CUDA gives the target's greedy tokens and rolls its caches back", "[speculative_decoding][gpu]") {
  Models m = load_models(Device::cuda());
  sd::Decoder decoder(*m.target, m.draft.get(), 64);
  std::size_t tested = 0, accepted = 0;
  for (const auto& prompt : prompts(3)) {
    const std::vector<std::int32_t> want =
        decoder.generate(sd::Method::autoregressive, prompt, 40, settings(4, 0.0f, 1)).tokens;
    for (const sd::Method method : {sd::Method::speculative_greedy, sd::Method::prompt_lookup}) {
      const sd::Generation g = decoder.generate(method, prompt, 40, settings(4, 0.0f, 1));
      CHECK(g.tokens == want);
    }
    sd::Settings s = settings(4, 1.0f, 3);
    s.check_rule = true;
    const sd::Generation g = decoder.generate(sd::Method::speculative, prompt, 40, s);
    tested += g.stats.tested;
    accepted += g.stats.accepted;
    CHECK(g.stats.max_rule_error <= sd::rule_tolerance);
    std::vector<std::int32_t> sequence = prompt;
    sequence.insert(sequence.end(), g.tokens.begin(), g.tokens.end());
    CHECK(decoder.check_caches(sequence) <= sd::cache_rel_tolerance);
  }
  CHECK(accepted > 0);
  CHECK(accepted < tested);
}
#endif
