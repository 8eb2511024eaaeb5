#include "nn/decoding.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "nn/decode_loop.hpp"

namespace aiopt::nn {

void SamplingParams::validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature))
    throw InputError("temperature " + std::to_string(temperature) + " is not allowed (allowed: 0 for greedy, or > 0)");
}

std::int32_t argmax(std::span<const float> logits) {
  if (logits.empty()) throw std::invalid_argument("argmax: no logits");
  std::size_t best = 0;
  for (std::size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<std::int32_t>(best);
}

std::vector<double> token_distribution(std::span<const float> logits, const SamplingParams& params) {
  params.validate();
  std::vector<double> p(logits.size(), 0.0);
  if (params.temperature == 0.0f) {
    p[static_cast<std::size_t>(argmax(logits))] = 1.0;
    return p;
  }
  const std::size_t k = params.top_k == 0 ? logits.size() : std::min(params.top_k, logits.size());
  // The k largest logits, largest first and the lower index first among ties.
  std::vector<std::int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                    [&](std::int32_t a, std::int32_t b) {
                      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
                    });
  // softmax(l / T) over the k, in double, shifted by the largest logit.
  const double top = logits[order[0]];
  double sum = 0.0;
  for (std::size_t i = 0; i < k; ++i) {
    double& q = p[static_cast<std::size_t>(order[i])];
    q = std::exp((static_cast<double>(logits[order[i]]) - top) / params.temperature);
    sum += q;
  }
  for (std::size_t i = 0; i < k; ++i) p[static_cast<std::size_t>(order[i])] /= sum;
  return p;
}

std::int32_t draw_token(std::span<const double> p, double u) {
  double total = 0.0;
  for (double w : p) total += w;
  if (!(total > 0.0)) throw std::invalid_argument("draw_token: the weights sum to " + std::to_string(total));
  const double target = u * total;
  double cumulative = 0.0;
  std::size_t last = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (p[i] <= 0.0) continue;
    cumulative += p[i];
    last = i;
    if (target < cumulative) return static_cast<std::int32_t>(i);
  }
  return static_cast<std::int32_t>(last);  // u within rounding of the total
}

std::int32_t sample_token(std::span<const float> logits, const SamplingParams& params, std::uint64_t draw) {
  params.validate();
  if (params.temperature == 0.0f) return argmax(logits);
  return draw_token(token_distribution(logits, params), rng::uniform(params.seed, draw));
}

Generation generate(Gpt& model, std::span<const std::int32_t> prompt, std::size_t count,
                    const SamplingParams& params, std::optional<DType> cache_dtype) {
  params.validate();
  if (prompt.empty()) throw InputError("generation needs a prompt of at least one token");
  if (count == 0) return {};
  // The last new token is never fed back, so the sequence holds prompt + count − 1 positions.
  const std::size_t positions = prompt.size() + count - 1;
  if (positions > model.config().context)
    throw InputError("a prompt of " + std::to_string(prompt.size()) + " tokens and " + std::to_string(count) +
                     " new tokens need " + std::to_string(positions) + " positions, more than the model's context of " +
                     std::to_string(model.config().context));
  using clock = std::chrono::steady_clock;
  auto start = clock::now();
  std::optional<KvCache> cache;
  if (cache_dtype) cache.emplace(model.config(), 1, positions, *cache_dtype, model.device());

  Generation g;
  DecodeHooks hooks;
  hooks.choose = [&](std::size_t t, std::span<const float> logits, std::span<std::int32_t> tokens) {
    tokens[0] = sample_token(logits, params, t);
  };
  // The prefill's time counts from before the cache's allocation; each later step's from its start.
  hooks.run = [&](std::size_t t, const std::function<void()>& step) {
    if (t > 0) start = clock::now();
    step();
    const double ms = std::chrono::duration<double, std::milli>(clock::now() - start).count();
    if (t == 0) {
      g.prefill_ms = ms;
    } else {
      g.step_ms.push_back(ms);
    }
  };
  g.tokens = decode(model, prompt, 1, count, cache ? &*cache : nullptr, hooks);
  return g;
}

}  // namespace aiopt::nn
