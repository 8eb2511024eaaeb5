#include "techniques/speculative_decoding/decoder.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>
#include <string>

#include "core/error.hpp"
#include "core/fault.hpp"
#include "core/rng.hpp"
#include "core/tensor.hpp"
#include "nn/decode_loop.hpp"
#include "techniques/speculative_decoding/acceptance.hpp"
#include "techniques/speculative_decoding/prompt_lookup.hpp"

namespace aiopt::speculative_decoding {

bool uses_draft_model(Method method) { return method == Method::speculative || method == Method::speculative_greedy; }

namespace {

using clock = std::chrono::steady_clock;
double ms_since(clock::time_point start) {
  return std::chrono::duration<double, std::milli>(clock::now() - start).count();
}

// One call of `model` on `tokens` after what `cache` holds, its logits on the host; `ms` its time.
Tensor call(nn::Gpt& model, std::span<const std::int32_t> tokens, nn::KvCache& cache, nn::Logits which, double& ms) {
  const auto start = clock::now();
  Tensor logits = model.step(tokens, 1, tokens.size(), cache, which);
  if (!logits.device().is_cpu()) logits = logits.to(Device::cpu(), model.stream());
  ms = ms_since(start);
  return logits;
}

std::span<const float> row(const Tensor& logits, std::size_t i, std::size_t vocab) {
  return {logits.data<float>() + i * vocab, vocab};
}

std::vector<double> one_hot(std::int32_t token, std::size_t vocab) {
  std::vector<double> q(vocab, 0.0);
  q.at(static_cast<std::size_t>(token)) = 1.0;
  return q;
}

// The streams of a generation's random draws (decoder.hpp).
struct Streams {
  std::uint64_t draft, test, emit;
  explicit Streams(std::uint64_t seed) : draft(rng::bits(seed, 1)), test(rng::bits(seed, 2)), emit(rng::bits(seed, 3)) {}
};

}  // namespace

Decoder::Decoder(nn::Gpt& target, nn::Gpt* draft, std::size_t capacity)
    : target_(target), draft_(draft), target_cache_(target.config(), 1, capacity, DType::f32, target.device()) {
  if (draft_) {
    if (draft_->device() != target_.device())
      throw InputError("speculative_decoding: the draft model is on " + to_string(draft_->device()) +
                       " and the target on " + to_string(target_.device()));
    if (draft_->config().vocab != target_.config().vocab)
      throw InputError("speculative_decoding: the draft's vocabulary of " + std::to_string(draft_->config().vocab) +
                       " differs from the target's " + std::to_string(target_.config().vocab));
    draft_cache_.emplace(draft_->config(), 1, capacity, DType::f32, draft_->device());
  }
}

Generation Decoder::generate(Method method, std::span<const std::int32_t> prompt, std::size_t count,
                             const Settings& settings) {
  if (prompt.empty()) throw InputError("speculative_decoding: the prompt is empty");
  if (prompt.size() + count > target_cache_.capacity())
    throw InputError("speculative_decoding: a prompt of " + std::to_string(prompt.size()) + " tokens and " +
                     std::to_string(count) + " new ones exceed the caches' " +
                     std::to_string(target_cache_.capacity()) + " positions");
  if (uses_draft_model(method) && !draft_)
    throw InputError("speculative_decoding: speculative methods need a draft model");
  Settings s = settings;
  if (method == Method::speculative_greedy) s.sampling.temperature = 0.0f;
  s.sampling.validate();
  const Streams streams(s.sampling.seed);
  const std::size_t V = target_.config().vocab, P = prompt.size();
  Generation g;
  Stats& stats = g.stats;
  if (count == 0) return g;
  const auto start = clock::now();

  if (method == Method::autoregressive) {
    nn::DecodeHooks hooks;
    hooks.choose = [&](std::size_t t, std::span<const float> logits, std::span<std::int32_t> tokens) {
      tokens[0] = nn::draw_token(nn::token_distribution(logits, s.sampling), rng::uniform(streams.emit, t));
    };
    hooks.run = [&](std::size_t t, const std::function<void()>& step) {
      const auto begin = clock::now();
      step();
      const double ms = ms_since(begin);
      if (t == 0) {
        stats.prefill_ms = ms;
      } else {
        stats.target_step_ms.push_back(ms);
      }
    };
    g.tokens = nn::decode(target_, prompt, 1, count, &target_cache_, hooks);
    stats.target_passes = count;
    stats.total_ms = ms_since(start);
    return g;
  }

  // The caches hold every token of `seq` but the last, which the next target pass feeds first.
  std::vector<std::int32_t> seq(prompt.begin(), prompt.end());
  target_cache_.clear();
  if (draft_cache_) draft_cache_->clear();
  if (P > 1) {
    const auto prefix = std::span(seq).first(P - 1);
    double ms = 0.0;
    (void)call(target_, prefix, target_cache_, nn::Logits::last, ms);
    stats.prefill_ms += ms;
    if (uses_draft_model(method)) {
      (void)call(*draft_, prefix, *draft_cache_, nn::Logits::last, ms);
      stats.prefill_ms += ms;
    }
  }
  const bool rollback = !fault::active("speculative_decoding.no_rollback");
  while (seq.size() - P < count) {
    const std::size_t out = seq.size() - P;  // tokens emitted so far: the counter of the next one
    const std::size_t gamma = std::min(s.gamma, count - out - 1);

    // Propose.
    std::vector<std::int32_t> drafts;
    std::vector<std::vector<double>> q;
    if (method == Method::prompt_lookup) {
      drafts = lookup_draft(seq, s.ngram, gamma);
      for (auto d : drafts) q.push_back(one_hot(d, V));
    } else if (gamma > 0) {
      // The first call feeds what the draft's cache lacks: the last token, and after a pass
      // whose drafts were all accepted, the last draft too.
      std::vector<std::int32_t> pending(seq.begin() + static_cast<std::ptrdiff_t>(draft_cache_->length()), seq.end());
      for (std::size_t i = 0; i < gamma; ++i) {
        double ms = 0.0;
        const Tensor logits = call(*draft_, pending, *draft_cache_, nn::Logits::last, ms);
        ++stats.draft_calls;
        if (pending.size() == 1) stats.draft_call_ms.push_back(ms);
        q.push_back(nn::token_distribution(row(logits, 0, V), s.sampling));
        drafts.push_back(nn::draw_token(q.back(), rng::uniform(streams.draft, out + i)));
        pending = {drafts.back()};
      }
    }
    stats.proposed += drafts.size();

    // Verify: the last token and every draft in one target pass; row i is the target's
    // distribution for the token after input i.
    std::vector<std::int32_t> input{seq.back()};
    input.insert(input.end(), drafts.begin(), drafts.end());
    double ms = 0.0;
    const Tensor logits = call(target_, input, target_cache_, nn::Logits::all, ms);
    ++stats.target_passes;
    if (input.size() == 1) stats.target_step_ms.push_back(ms);
    if (drafts.size() == s.gamma && s.gamma > 0) stats.full_pass_ms.push_back(ms);

    bool rejected = false;
    const std::size_t accepted_before = stats.accepted;
    for (std::size_t i = 0; i < drafts.size() && !rejected; ++i) {
      const std::vector<double> p = nn::token_distribution(row(logits, i, V), s.sampling);
      ++stats.tested;
      if (s.check_rule)
        stats.max_rule_error = std::max(stats.max_rule_error, total_variation(emitted_distribution(p, q[i]), p));
      if (accept(p, q[i], drafts[i], rng::uniform(streams.test, out + i))) {
        seq.push_back(drafts[i]);
        ++stats.accepted;
      } else {
        seq.push_back(nn::draw_token(residual(p, q[i]), rng::uniform(streams.emit, out + i)));
        rejected = true;
      }
    }
    if (!rejected) {
      const std::vector<double> p = nn::token_distribution(row(logits, drafts.size(), V), s.sampling);
      seq.push_back(nn::draw_token(p, rng::uniform(streams.emit, out + drafts.size())));
    }

    stats.passes.push_back({drafts.size(), stats.accepted - accepted_before});

    // Roll back: the caches keep the accepted sequence but its last token.
    const std::size_t keep = seq.size() - 1;
    if (rollback) {
      target_cache_.truncate(keep);
      if (draft_cache_) draft_cache_->truncate(std::min(draft_cache_->length(), keep));
    }
    if (target_cache_.length() != keep || (draft_cache_ && draft_cache_->length() > keep)) {
      std::ostringstream m;
      m << "speculative_decoding: after a target pass the target's KV cache holds " << target_cache_.length()
        << " positions";
      if (draft_cache_) m << " and the draft's " << draft_cache_->length();
      m << " for an accepted sequence of " << seq.size() << " tokens, whose first " << keep
        << " belong there; a rollback left rejected drafts in place";
      throw CheckFailed(m.str());
    }
    if (s.after_pass) s.after_pass(seq, rejected);
  }
  g.tokens.assign(seq.begin() + static_cast<std::ptrdiff_t>(P), seq.end());
  stats.total_ms = ms_since(start);
  return g;
}

double compare_caches(const nn::KvCache& cache, const nn::KvCache& fresh, const char* model, double tolerance) {
  const std::size_t length = cache.length();
  double worst = 0.0;
  for (std::size_t l = 0; l < cache.layer_count(); ++l) {
    for (int which = 0; which < 2; ++which) {
      const Tensor got = (which == 0 ? cache.layer(l).k : cache.layer(l).v).to(Device::cpu());
      const Tensor want = (which == 0 ? fresh.layer(l).k : fresh.layer(l).v).to(Device::cpu());
      const auto& shape = got.shape();  // (1, heads, capacity, head_dim)
      const auto heads = static_cast<std::size_t>(shape[1]), capacity = static_cast<std::size_t>(shape[2]);
      const auto d = static_cast<std::size_t>(shape[3]);
      const auto fresh_capacity = static_cast<std::size_t>(want.shape()[2]);
      for (std::size_t h = 0; h < heads; ++h) {
        for (std::size_t pos = 0; pos < length; ++pos) {
          const float* g = got.data<float>() + (h * capacity + pos) * d;
          const float* w = want.data<float>() + (h * fresh_capacity + pos) * d;
          double largest = 0.0, error = 0.0;
          for (std::size_t i = 0; i < d; ++i) largest = std::max(largest, std::fabs(static_cast<double>(w[i])));
          for (std::size_t i = 0; i < d; ++i) {
            const double e = std::fabs(static_cast<double>(g[i]) - w[i]);
            error = std::isnan(e) ? std::numeric_limits<double>::infinity() : std::max(error, e);
          }
          if (!(error <= tolerance * largest)) {
            std::ostringstream m;
            m << "speculative_decoding: the " << model << "'s cached " << (which == 0 ? "key" : "value")
              << " of layer " << l << ", head " << h << ", position " << pos << " is off by " << error
              << " from a fresh prefill of the accepted tokens, beyond " << tolerance * largest
              << "; the cache holds a rejected token's entry";
            throw CheckFailed(m.str());
          }
          if (largest > 0) worst = std::max(worst, error / largest);
        }
      }
    }
  }
  return worst;
}

double Decoder::check_caches(std::span<const std::int32_t> sequence) {
  double worst = 0.0;
  const auto check = [&](nn::Gpt& model, const nn::KvCache& cache, const char* name) {
    const std::size_t length = cache.length();
    if (length == 0) return;
    if (length > sequence.size())
      throw CheckFailed("speculative_decoding: the " + std::string(name) + "'s KV cache holds " +
                        std::to_string(length) + " positions for a sequence of " + std::to_string(sequence.size()));
    nn::KvCache fresh(model.config(), 1, length, DType::f32, model.device());
    (void)model.step(sequence.first(length), 1, length, fresh, nn::Logits::last);
    worst = std::max(worst, compare_caches(cache, fresh, name, cache_rel_tolerance));
  };
  check(target_, target_cache_, "target");
  if (draft_cache_) check(*draft_, *draft_cache_, "draft");
  return worst;
}

}  // namespace aiopt::speculative_decoding
