#pragma once
// The decoding engine of speculative_decoding: one target model with its KV cache and, for the
// draft-model methods, a draft model with its own. Batch 1, as speculative decoding is served.
//   autoregressive       the target alone: a prefill, then one token per step (nn::decode)
//   speculative          the draft samples γ tokens one step at a time; the target scores the
//                        last accepted token and all γ drafts in one pass; the acceptance rule
//                        (acceptance.hpp) keeps a prefix and emits one more token; both caches
//                        roll back to the accepted length
//   speculative_greedy   the same at temperature 0: drafts kept while they are the target's argmax
//   prompt_lookup        the draft is looked up in the context (prompt_lookup.hpp), verified alike
// Token i of a generation draws from counter-based streams of the seed at counter i (the draft's
// draw, the acceptance test, the rejection or bonus draw), so a generation is a pure function of
// its inputs on every device. A counter is reused only for a draft token proposed again after
// a rejection cut its first proposal off untested, which nothing emitted depended on.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "nn/decoding.hpp"
#include "nn/gpt.hpp"
#include "nn/kv_cache.hpp"

namespace aiopt::speculative_decoding {

enum class Method { autoregressive, speculative, speculative_greedy, prompt_lookup };
bool uses_draft_model(Method method);

struct Settings {
  std::size_t gamma = 4;        // tokens drafted per target pass (fewer near the end)
  nn::SamplingParams sampling;  // both models' distributions; speculative_greedy uses temperature 0
  std::size_t ngram = 3;        // prompt_lookup's longest suffix to look up
  // Compare the rule's emitted distribution with the target's at every tested position
  // (Stats::max_rule_error); off in timed generations.
  bool check_rule = false;
  // Called after each target pass and its rollback with the accepted sequence (the prompt and
  // the tokens so far) and whether a draft was rejected: where a check looks at the caches.
  std::function<void(std::span<const std::int32_t> sequence, bool rejected)> after_pass;
};

// What one generation did, and the time of each model call (host clock; on CUDA each call ends
// with its logits on the host, so the time includes the device work).
struct Stats {
  std::size_t target_passes = 0;  // target calls that emit tokens (autoregressive's prefill emits the first)
  std::size_t draft_calls = 0;
  std::size_t proposed = 0;       // draft tokens proposed
  std::size_t tested = 0;         // draft tokens the rule tested: those after a rejection never are
  std::size_t accepted = 0;
  struct Pass {
    std::size_t proposed = 0, accepted = 0;
  };
  std::vector<Pass> passes;       // each target pass's drafts and how many it kept, in order
  double prefill_ms = 0.0;        // both models' prefills
  double total_ms = 0.0;          // the whole generation, prefill included
  std::vector<double> draft_call_ms;   // each draft call of one token
  std::vector<double> target_step_ms;  // each one-token target call after the prefill
  std::vector<double> full_pass_ms;    // each verify pass of γ + 1 tokens
  double max_rule_error = 0.0;    // largest TV(emitted_distribution(p, q), p); with Settings::check_rule
};

struct Generation {
  std::vector<std::int32_t> tokens;  // the new tokens
  Stats stats;
};

class Decoder {
 public:
  // `draft`: the draft model for speculative and speculative_greedy (null otherwise), on the
  // target's device with its vocabulary. Each cache holds `capacity` positions: at least the
  // prompt and the tokens of any generation.
  Decoder(nn::Gpt& target, nn::Gpt* draft, std::size_t capacity);

  // `count` new tokens after `prompt` (at least one token). Throws InputError when the prompt and
  // count exceed the capacity, or a draft-model method has no draft; CheckFailed when a cache's
  // length after a rollback is not the accepted sequence's.
  Generation generate(Method method, std::span<const std::int32_t> prompt, std::size_t count,
                      const Settings& settings);

  // The caches after the last generation: each holds the sequence's positions but the last
  // token's. Checked against a fresh prefill of `sequence` (the prompt and the tokens, the last
  // one not fed) by check_caches.
  const nn::KvCache& target_cache() const { return target_cache_; }
  const nn::KvCache* draft_cache() const { return draft_cache_ ? &*draft_cache_ : nullptr; }

  // Every layer's cached keys and values of both models against a fresh prefill of the first
  // length() tokens of `sequence`, within cache_rel_tolerance of each row's largest magnitude (the
  // verify pass and the prefill add in different orders). Throws CheckFailed naming the model,
  // layer and position of an entry beyond it (a rejected token's entry left in place); returns the
  // largest error relative to its row's largest magnitude.
  double check_caches(std::span<const std::int32_t> sequence);

  nn::Gpt& target() { return target_; }
  nn::Gpt* draft() { return draft_; }

 private:
  nn::Gpt& target_;
  nn::Gpt* draft_;
  nn::KvCache target_cache_;
  std::optional<nn::KvCache> draft_cache_;
};

inline constexpr double cache_rel_tolerance = 1e-4;

// The keys and values of `cache`'s first length() positions against `fresh`'s (the same model's
// prefill of the same tokens), every layer: the largest error relative to its row's largest
// magnitude. Throws CheckFailed naming `model`, the layer, position and tensor beyond `tolerance`.
double compare_caches(const nn::KvCache& cache, const nn::KvCache& fresh, const char* model, double tolerance);

}  // namespace aiopt::speculative_decoding
