#include "techniques/dynamic_batching/calibration.hpp"

#include <algorithm>
#include <set>

#include "core/rng.hpp"
#include "nn/paged_kv_cache.hpp"
#include "techniques/dynamic_batching/executor.hpp"

namespace aiopt::dynamic_batching {

namespace {

constexpr std::size_t kBlock = 16;

std::vector<std::int32_t> random_tokens(std::size_t n, std::size_t vocab, std::uint64_t seed) {
  std::vector<std::int32_t> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = static_cast<std::int32_t>(rng::bits(seed, i) % vocab);
  return t;
}

// Times one step on a fresh executor clock.
double timed(RealExecutor& exec, std::span<const nn::Gpt::RaggedSequence> batch, const StepShape& shape) {
  const double t0 = exec.now();
  (void)exec.run(batch, shape);
  return (exec.now() - t0) * 1e3;
}

}  // namespace

MeasuredSteps measure_steps(nn::Gpt& model, std::size_t max_batch, std::size_t max_step_tokens,
                            std::size_t max_context, std::size_t repeats, std::uint64_t seed) {
  const std::size_t vocab = model.config().vocab;
  max_context = std::min(max_context, model.config().context);
  const std::size_t per_seq = (max_context + kBlock - 1) / kBlock;
  nn::PagedKvCache cache(model.config(), per_seq * max_batch, kBlock, model.device());
  RealExecutor exec(model, cache);
  MeasuredSteps out;
  std::uint64_t stream = 0;

  // Decode: n sequences prefilled to `context − repeats` positions, then `repeats` one-token steps.
  std::set<std::size_t> counts{1, max_batch};
  for (std::size_t n = 2; n < max_batch; n *= 2) counts.insert(n);
  const std::size_t longest = max_context > repeats ? max_context - repeats : 1;
  for (const std::size_t n : counts)
    for (const std::size_t context : std::set<std::size_t>{std::max<std::size_t>(longest / 8, 1),
                                                            std::max<std::size_t>(longest / 2, 1), longest}) {
      std::vector<std::vector<std::int32_t>> prompts;
      for (std::size_t s = 0; s < n; ++s) {
        prompts.push_back(random_tokens(context + repeats, vocab, rng::bits(seed, stream++)));
        cache.tables().reserve(s, context + repeats);
        const nn::Gpt::RaggedSequence one{s, std::span<const std::int32_t>(prompts.back()).first(context)};
        (void)exec.run(std::span(&one, 1), {});
      }
      for (std::size_t r = 0; r < repeats; ++r) {
        std::vector<nn::Gpt::RaggedSequence> batch;
        StepShape shape;
        for (std::size_t s = 0; s < n; ++s) {
          batch.push_back({s, std::span<const std::int32_t>(prompts[s]).subspan(context + r, 1)});
          shape.add(context + r, 1);
        }
        out.ms.push_back(timed(exec, batch, shape));
        out.shapes.push_back(shape);
      }
      for (std::size_t s = 0; s < n; ++s) cache.tables().release(s);
    }

  // Prompt chunks from position 0, one sequence and several.
  std::set<std::size_t> lengths;
  for (std::size_t len = 8; len < max_step_tokens && len <= max_context; len *= 4) lengths.insert(len);
  lengths.insert(std::min(max_step_tokens, max_context));
  for (const std::size_t len : lengths)
    for (const std::size_t n : std::set<std::size_t>{1, std::min<std::size_t>(4, max_batch)}) {
      const std::size_t each = std::max<std::size_t>(len / n, 1);
      for (std::size_t r = 0; r < repeats; ++r) {
        std::vector<std::vector<std::int32_t>> prompts;
        std::vector<nn::Gpt::RaggedSequence> batch;
        StepShape shape;
        for (std::size_t s = 0; s < n; ++s) {
          prompts.push_back(random_tokens(each, vocab, rng::bits(seed, stream++)));
          cache.tables().reserve(s, each);
        }
        for (std::size_t s = 0; s < n; ++s) {
          batch.push_back({s, prompts[s]});
          shape.add(0, each);
        }
        out.ms.push_back(timed(exec, batch, shape));
        out.shapes.push_back(shape);
        for (std::size_t s = 0; s < n; ++s) cache.tables().release(s);
      }
    }
  return out;
}

}  // namespace aiopt::dynamic_batching
