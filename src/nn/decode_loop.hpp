#pragma once
// The autoregressive loop (TECHNIQUES.md §1), written once for every caller: `aiopt generate`
// (nn::generate) and the kv_caching technique. Step 0 runs the prompt; each later step t runs
// either the whole prefix of P + t positions again (no cache: recompute) or only position
// P + t − 1, the token fed after step t − 1, against the KV cache. What differs between callers
// (how a token is chosen, how a step is timed, teacher forcing, a fault injected between steps)
// comes in as hooks.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "nn/gpt.hpp"
#include "nn/kv_cache.hpp"

namespace aiopt::nn {

struct DecodeHooks {
  // Chooses step t's token of each sequence from that step's last-position logits
  // ((batch, vocab), on the host) into tokens ((batch)). Required.
  std::function<void(std::size_t t, std::span<const float> logits, std::span<std::int32_t> tokens)> choose;
  // Runs `step`, step t's model call, logits copy and choice; a caller times it here. Empty: runs it.
  std::function<void(std::size_t t, const std::function<void()>& step)> run;
  // Called after step t, before its tokens are fed (a fault injected into the cache).
  std::function<void(std::size_t t)> after;
  // The token fed after step t to sequence b in place of the chosen one (teacher forcing).
  // Empty: the chosen token.
  std::function<std::int32_t(std::size_t t, std::size_t b)> feed;
};

// Runs `steps` steps after `prompt` ((batch, prompt_len), prompt_len >= 1) and returns the chosen
// tokens ((steps, batch)). `cache`: null to recompute the prefix at every step, else a cache of at
// least prompt_len + steps − 1 positions on the model's device, cleared first. The logits reach
// the host on the model's stream, so a CUDA step's time includes its device work.
std::vector<std::int32_t> decode(Gpt& model, std::span<const std::int32_t> prompt, std::size_t batch,
                                 std::size_t steps, KvCache* cache, const DecodeHooks& hooks);

}  // namespace aiopt::nn
