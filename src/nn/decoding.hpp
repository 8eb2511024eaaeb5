#pragma once
// Decoding: choosing the next token from the logits, and autoregressive generation with the model
// (TECHNIQUES.md §1): with a KV cache (one prefill, then one position per step) or by recomputing
// the whole prefix at every step.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "core/dtype.hpp"
#include "nn/gpt.hpp"

namespace aiopt::nn {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (argmax); else softmax(logits / temperature)
  std::size_t top_k = 0;     // sample among the k largest logits; 0: all of them
  std::uint64_t seed = 1;
  // InputError for a negative or non-finite temperature.
  void validate() const;
};

// The index of the largest logit, the lowest index among ties. logits: (vocab).
std::int32_t argmax(std::span<const float> logits);

// The distribution a token is drawn from: softmax(logits / temperature) over the top-k logits
// (the lower index first among ties, so top-k = 1 is argmax), 0 elsewhere; for temperature 0,
// 1 at the argmax. (vocab) probabilities in vocabulary order, summing to 1 within rounding.
std::vector<double> token_distribution(std::span<const float> logits, const SamplingParams& params);

// Inverse CDF: the first token, in vocabulary order, whose cumulative weight exceeds u·Σp.
// p: non-negative weights, not all 0 (need not sum to 1); u in [0, 1).
std::int32_t draw_token(std::span<const double> p, double u);

// Token `draw` of a generation: greedy when temperature is 0, else a draw from
// token_distribution with the counter-based uniform rng::uniform(seed, draw), so the same seed and
// draw index give the same token on every run and device. logits: (vocab), host.
std::int32_t sample_token(std::span<const float> logits, const SamplingParams& params, std::uint64_t draw);

struct Generation {
  std::vector<std::int32_t> tokens;  // the new tokens, without the prompt
  double prefill_ms = 0.0;           // the prompt's forward and the first token's choice
  std::vector<double> step_ms;       // each later token: one decode step (or recompute) and its choice
};

// Generates `count` tokens after `prompt` (batch 1) with nn::decode (decode_loop.hpp).
// `cache_dtype` f32 or i8: a KV cache of prompt + count − 1 positions; nullopt: every step runs
// Gpt::forward over the whole sequence.
// Throws InputError when the sequence would exceed the model's context, or for an empty prompt.
Generation generate(Gpt& model, std::span<const std::int32_t> prompt, std::size_t count,
                    const SamplingParams& params, std::optional<DType> cache_dtype);

}  // namespace aiopt::nn
